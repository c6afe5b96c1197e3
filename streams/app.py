"""The Faust application: broker settings tuned for quick joins, raw bytes in and out."""

from __future__ import annotations

import faust
from faust.transport.drivers import aiokafka as _driver

from ccmon.settings import Settings

# Faust builds its consumer with fetch_max_wait_ms=1500, fixed. A broker that holds a fetch for
# the whole wait when little data is there (the embedded one does) then adds up to 1.5 s between
# an event and its commit. 20 ms bounds that wait; an idle worker fetches 50 times a second.
FETCH_MAX_WAIT_MS = 20
_create_worker_consumer = _driver.AIOKafkaConsumerThread._create_worker_consumer


def _short_fetch_wait(self, transport):  # type: ignore[no-untyped-def]
    consumer = _create_worker_consumer(self, transport)
    if not hasattr(consumer, "_fetch_max_wait_ms"):
        raise RuntimeError("aiokafka changed: AIOKafkaConsumer has no _fetch_max_wait_ms; update streams/app.py")
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
    return consumer


_driver.AIOKafkaConsumerThread._create_worker_consumer = _short_fetch_wait


def broker_credentials(settings: Settings) -> faust.auth.Credentials | None:
    """Faust's form of CCMON_KAFKA_SECURITY_PROTOCOL and its SASL/TLS settings (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(settings.kafka_ssl_context())
    return faust.SASLCredentials(username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
                                 mechanism=settings.kafka_sasl_mechanism, ssl_context=settings.kafka_ssl_context())


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    """A Faust app for ccmon; values stay raw bytes so one decoder handles whole batches."""
    session = settings.kafka_session_timeout
    return faust.App(
        settings.group_id,
        broker=[f"kafka://{h.strip()}" for h in bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        # Short timeouts: the first group join otherwise waits ~30 s on the embedded broker.
        broker_session_timeout=session,
        broker_heartbeat_interval=max(0.5, session / 6),
        broker_rebalance_timeout=session,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        # Messages a stream may hold unprocessed (Faust's default is 4096). ccmon's messages carry up to 1,000
        # events (512 KiB) each, so this bounds what a worker holds of a backlog it is catching up on: 64 is at
        # most 32 MiB per topic, where the old 4,000 allowed ~2 GiB. Smaller was no slower (docs/performance.md).
        stream_buffer_maxsize=settings.stream_buffer,
        web_enabled=True,
        web_bind=settings.http_host,
        web_host=settings.http_host,
        web_port=settings.http_port,
        web_stats_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_router_enabled=False,
        web_metrics_enabled=False,  # Faust's /performance/; ccmon's web layer also refuses unknown routes
        producer_acks=-1,
        producer_linger_ms=5,
    )
