"""Topic names and creation (kafka-python admin)."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ccmon.errors import BrokerUnavailable
from ccmon.settings import Settings
from streams.events import DOMAINS


def all_topics(settings: Settings) -> list[str]:
    """The event topics plus the dead-letter and alerts topics."""
    return [settings.topic(d) for d in DOMAINS] + [settings.deadletter_topic, settings.alerts_topic]


def ensure_topics(settings: Settings, bootstrap: str) -> dict[str, tuple[str, int]]:
    """Create missing topics with ``settings.partitions`` partitions; return topic -> (topic id, partitions)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="ccmon-admin", request_timeout_ms=10_000,
                                 bootstrap_timeout_ms=5_000,
                                 **settings.kafka_options())
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"cannot reach the Kafka broker at {bootstrap} ({exc}); check CCMON_KAFKA_BOOTSTRAP and that it is up"
        ) from None
    try:
        wanted = all_topics(settings)
        existing = set(admin.list_topics())
        missing = [NewTopic(t, settings.partitions, 1) for t in wanted if t not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another worker created it first
        return {
            d["name"]: (str(d.get("topic_id") or ""), len(d["partitions"])) for d in admin.describe_topics(wanted)
        }
    finally:
        admin.close()
