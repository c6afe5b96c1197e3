"""ccmon's own producer: validated events, batched per partition as JSON arrays (contract v1)."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import Iterable, Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.record import util as record_util

from ccmon.errors import BrokerUnavailable
from ccmon.settings import Settings
from streams.events import Event
from streams.partitioning import partition_for

MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 512 * 1024  # well under the broker's default 1 MiB message limit

log = logging.getLogger("ccmon.producer")
SLOW_CRC = ("the crc32c package is not installed, so kafka-python checksums every record batch in pure Python: "
            "producing costs about 8 times the CPU (~20 us per event instead of ~3). Install it in ccmon's "
            "environment: pip install crc32c (ccmon's own install, kafka-python[crc32c], brings it)")
_warned = False


def native_crc() -> bool:
    """Whether kafka-python checksums record batches (CRC-32C, every message it produces) in native code."""
    return getattr(record_util, "crc32c_c", None) is not None


def warn_if_slow_crc() -> bool:
    """Log ``SLOW_CRC`` once per process when the checksums run in pure Python; return whether it did now."""
    global _warned
    if _warned or native_crc():
        return False
    _warned = True
    log.warning(SLOW_CRC)
    return True


class Publisher:
    """Publishes events to their domain topics and rejects to the dead-letter topic."""

    def __init__(self, settings: Settings, bootstrap: str):
        self.settings = settings
        self.bootstrap = bootstrap
        warn_if_slow_crc()
        try:
            self.producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id="ccmon-producer",
                acks="all",
                linger_ms=10,
                batch_size=1024 * 1024,
                max_request_size=2 * 1024 * 1024,
                request_timeout_ms=15_000,
                retries=5,
                **settings.kafka_options(),
            )
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"cannot reach the Kafka broker at {bootstrap} ({exc}); check CCMON_KAFKA_BOOTSTRAP and that it is up"
            ) from None
        self._partitions: dict[str, int] = {}
        self.sent: Counter[str] = Counter()  # events per topic

    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has (asks the broker once)."""
        n = self._partitions.get(topic)
        if n is None:
            parts = self.producer.partitions_for(topic)
            if not parts:
                raise BrokerUnavailable(f"topic {topic} does not exist; start the worker once (it creates topics)")
            n = self._partitions[topic] = len(parts)
        return n

    def publish(self, items: Iterable[tuple[Event, bytes]]) -> int:
        """Send (event, original bytes) pairs, batched per partition in order; return the count."""
        groups: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        n = 0
        for event, raw in items:
            topic = self.settings.topic(event.domain)
            groups[(topic, partition_for(event.entity_id, self.partitions(topic)))].append(raw)
            self.sent[topic] += 1
            n += 1
        futures = []
        for (topic, partition), raws in groups.items():
            for chunk in _chunks(raws):
                futures.append(self.producer.send(topic, b"[" + b",".join(chunk) + b"]", partition=partition))
        self._wait(futures)
        return n

    def dead_letter(self, records: Sequence[bytes]) -> None:
        """Publish encoded dead-letter records and wait for the broker's ack."""
        self._wait([self.producer.send(self.settings.deadletter_topic, r) for r in records])

    def _wait(self, futures: list) -> None:  # type: ignore[type-arg]
        self.producer.flush()
        for f in futures:
            try:
                f.get(timeout=30)
            except KafkaError as exc:
                raise BrokerUnavailable(f"the broker at {self.bootstrap} did not accept a message: {exc}") from None

    def close(self) -> None:
        """Flush and close."""
        self.producer.close(timeout=10)


def _chunks(raws: list[bytes]) -> Iterable[list[bytes]]:
    chunk: list[bytes] = []
    size = 0
    for raw in raws:
        if chunk and (len(chunk) >= MAX_BATCH_EVENTS or size + len(raw) > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(raw)
        size += len(raw) + 1
    if chunk:
        yield chunk
