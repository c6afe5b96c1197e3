"""``ccmon backfill``: rebuild Redis from the Kafka history, through the same pipeline the worker runs.

Stop every worker first. The backfill deletes ccmon's keys (alert state and the
alert outbox excepted), reads each event topic from its first retained offset up
to the log end it finds at the start, and commits batch by batch exactly as the
worker does (offsets included). A worker started afterwards reads those offsets
and carries on from there, skipping nothing and counting nothing twice. Dead
letters are not sent again: they are already on the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Optional

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.pipeline import Message, Pipeline
from ccmon.errors import BrokerUnavailable, CcmonError
from ccmon.settings import Settings
from ccmon.store import PREFIX, Store
from streams.events import DOMAINS
from streams.topics import ensure_topics

log = logging.getLogger("ccmon.backfill")
BATCH = 5000
KEEP = (PREFIX + "alerts:",)  # alert state and the undelivered notifications survive a rebuild
Progress = Callable[[str, int, int], None]  # (topic, done, total)


async def clear(store: Store) -> int:
    """Delete every ccmon key of this Redis db except the alerting ones; return how many."""
    n = 0
    async for key in store.redis.scan_iter(match=PREFIX + "*", count=1000):
        if not key.decode().startswith(KEEP):
            await store.redis.unlink(key)
            n += 1
    return n


async def recent_commit_age(store: Store) -> Optional[float]:
    """Seconds since a worker last committed (None when none ever did)."""
    last = (await store.status())["stats"].get("last_commit_ms")  # type: ignore[union-attr]
    return None if last is None else time.time() - last / 1000


async def replay_topic(settings: Settings, store: Store, domain: str, partitions: int,
                       progress: Progress) -> int:
    """Apply a topic's whole retained log through the pipeline; return the messages read."""
    topic = settings.topic(domain)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                **settings.kafka_options(), auto_offset_reset="earliest", client_id="ccmon-backfill", max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        pipeline = Pipeline(domain, topic, partitions, store, store.cfg, _drop_dead_letters,
                            lambda p: consumer.highwater(TopicPartition(topic, p)), settings.topic_prefix,
                            settings.max_future_seconds, settings.commit_bytes, settings.label_caps())
        # The fetch's highwater is the log end (Tansu's ListOffsets can report less); stop at the one first seen.
        end: dict[int, int] = {}
        read = 0
        idle = 0
        while True:
            batches = await consumer.getmany(*tps, timeout_ms=1000, max_records=BATCH)
            messages = [Message(tp.topic, tp.partition, r.offset, r.value) for tp, rs in batches.items() for r in rs]
            for tp in tps:
                hw = consumer.highwater(tp)
                if hw is not None and tp.partition not in end:
                    end[tp.partition] = hw
            messages = [m for m in messages if m.offset < end.get(m.partition, m.offset + 1)]
            if messages:
                await pipeline.process(messages)
                read += len(messages)
                idle = 0
            else:
                idle += 1
            total = sum(end.values())
            progress(topic, read, total)
            positions = [await consumer.position(tp) for tp in tps]
            done = len(end) == partitions and all(pos >= end[tp.partition] for pos, tp in zip(positions, tps))
            if done or (idle >= 3 and len(end) == partitions):
                return read
            if idle >= 10:
                raise BrokerUnavailable(f"no data from {topic} for 10 s; is the broker at "
                                        f"{settings.kafka_bootstrap} up?")
    finally:
        await consumer.stop()


async def _drop_dead_letters(records: list[bytes]) -> None:
    """The original run dead-lettered these already."""


async def backfill(settings: Settings, progress: Progress, force: bool = False) -> dict[str, int]:
    """Clear Redis and replay every event topic; return messages read per topic."""
    cfg = settings.metrics_config()
    topics = await asyncio.to_thread(ensure_topics, settings, settings.kafka_bootstrap)  # type: ignore[arg-type]
    store = Store(settings.redis_url, cfg, settings.redis_options())  # type: ignore[arg-type]
    try:
        await store.ping()
        age = await recent_commit_age(store)
        if age is not None and age < 15 and not force:
            raise CcmonError(f"a worker committed {age:.0f}s ago: stop every worker before a backfill "
                             "(or pass --force if you are sure none runs)")
        removed = await clear(store)
        log.warning("backfill: removed %d keys", removed)
        read = {}
        for domain in DOMAINS:
            topic = settings.topic(domain)
            tid, partitions = topics[topic]
            await store.reset_if_recreated(topic, tid, partitions)  # records the topic id, as a worker does
            read[topic] = await replay_topic(settings, store, domain, partitions, progress)
        return read
    finally:
        await store.close()
