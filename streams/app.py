"""The Faust application: broker settings tuned for quick joins, raw bytes in and out."""

from __future__ import annotations

import faust

from ccmon.settings import Settings


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    """A Faust app for ccmon; values stay raw bytes so one decoder handles whole batches."""
    session = settings.kafka_session_timeout
    return faust.App(
        settings.group_id,
        broker=[f"kafka://{h.strip()}" for h in bootstrap.split(",")],
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
        web_enabled=True,
        web_bind=settings.http_host,
        web_host=settings.http_host,
        web_port=settings.http_port,
        web_stats_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_router_enabled=False,
        producer_acks=-1,
        producer_linger_ms=5,
    )
