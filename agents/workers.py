"""The Faust agents: one per domain topic, each a thin loop over ``Pipeline.process``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.types import TP

from agents.config import MetricsConfig
from agents.pipeline import OUTAGE_LOG_EVERY, RETRY_CAP, Message, Pipeline
from ccmon.errors import BrokerUnavailable, StoreUnavailable
from ccmon.settings import Settings
from ccmon.store import Store
from streams.events import DOMAINS
from streams.topics import ensure_topics

log = logging.getLogger("ccmon.agents")


def register_agents(
    app: faust.App, settings: Settings, store: Store, cfg: MetricsConfig, partitions: dict[str, int]
) -> dict[str, Pipeline]:
    """Declare one agent per domain topic; return the pipelines by topic name."""
    dlq = app.topic(settings.deadletter_topic, value_serializer="raw", key_serializer="raw")

    async def send_dead_letters(records: list[bytes]) -> None:
        try:
            pending = [await dlq.send(value=r) for r in records]
            for fut in pending:
                await fut  # wait for the broker's ack: a dead letter must never vanish
        except Exception as exc:  # noqa: BLE001 - any producer failure means "broker unavailable, retry"
            raise BrokerUnavailable(
                f"could not publish {len(records)} dead letters to {settings.deadletter_topic}: {exc}"
            ) from exc

    pipelines: dict[str, Pipeline] = {}
    for domain in DOMAINS:
        name = settings.topic(domain)
        topic = app.topic(name, value_serializer="raw", key_serializer="raw", partitions=partitions[name])

        def highwater(p: int, _name: str = name) -> int | None:
            try:
                return app.consumer.highwater(TP(_name, p))
            except Exception:  # noqa: BLE001 - unknown until the first fetch; lag is then just not reported
                return None

        async def read_range(p: int, start: int, end: int, _name: str = name) -> list[Message]:
            return await read_messages(settings, _name, p, start, end)

        pipeline = Pipeline(
            domain, name, partitions[name], store, cfg, send_dead_letters, highwater, settings.topic_prefix,
            settings.max_future_seconds, settings.commit_bytes, settings.label_caps(), read_range,
        )
        pipelines[name] = pipeline

        async def agent(stream: Any, _pipeline: Pipeline = pipeline) -> None:
            async for events in stream.noack_take(settings.batch_size, within=settings.batch_seconds):
                await _pipeline.process(
                    [Message(e.message.topic, e.message.partition, e.message.offset, e.value) for e in events]
                )
                # Ack only after the Redis commit, so Kafka's committed offset never runs ahead of Redis.
                for e in events:
                    await stream.ack(e)

        app.agent(topic, name=f"ccmon.{domain}")(agent)

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        for tp in revoked:
            if tp.topic in pipelines:
                pipelines[tp.topic].forget([tp.partition])

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        resume_where_redis_is(app, store, set(pipelines))
        # A rebalance follows a broker restart; a memory-only broker then holds new, empty topics (new ids), and
        # their first offsets must not be skipped as "already applied". Checked while the partitions are paused.
        try:
            topics = await asyncio.wait_for(
                asyncio.to_thread(ensure_topics, settings, settings.kafka_bootstrap),  # type: ignore[arg-type]
                timeout=max(1.0, settings.kafka_session_timeout / 2),
            )
            for topic in await reset_recreated(store, {t: v for t, v in topics.items() if t in pipelines}):
                pipelines[topic].forget(range(pipelines[topic].partitions))
        except Exception as exc:  # noqa: BLE001 - a failed check must not crash the worker: offsets ahead of
            # the log are still caught when a partition's state is loaded (Pipeline._load)
            log.warning("could not check whether the topics were recreated (%s); will check at the next rebalance",
                        exc)

    return pipelines


async def reset_recreated(store: Store, topics: dict[str, tuple[str, int]]) -> list[str]:
    """Forget stored offsets and entity states of the topics whose id changed; return those topics."""
    reset = []
    for topic, (tid, n) in topics.items():
        if await store.reset_if_recreated(topic, tid, n):
            log.error(
                "topic %s was recreated (new id %s; e.g. the memory-only broker restarted): "
                "its stored offsets and entity states were reset; counters already in Redis are kept",
                topic, tid,
            )
            reset.append(topic)
    return reset


def resume_where_redis_is(app: faust.App, store: Store, topics: set[str]) -> None:
    """Make each of Faust's seeks to Kafka's committed offsets go on to :func:`rewind` (installed once)."""
    consumer = app.consumer
    if getattr(consumer, "_ccmon_rewinds", False):
        return
    seek_to_committed = consumer.perform_seek  # Faust calls it after every assignment, before resuming the flow

    async def perform_seek() -> None:
        await seek_to_committed()
        tps = {tp for tp in consumer.assignment() if tp.topic in topics}
        if not tps:
            return
        try:
            await rewind(consumer, store, tps)
        except Exception as exc:  # noqa: BLE001 - Redis or the broker is away: wait for it, never start past Redis
            consumer.pause_partitions(tps)
            log.error("could not compare the offsets Redis holds with Kafka's committed offsets (%s); the partitions "
                      "stay paused until that succeeds, so none resumes past what Redis holds", exc)
            asyncio.ensure_future(_rewind_later(app, store, tps, app.consumer_generation_id))

    consumer.perform_seek = perform_seek  # type: ignore[method-assign]
    consumer._ccmon_rewinds = True  # type: ignore[attr-defined]


async def _rewind_later(app: faust.App, store: Store, tps: set[TP], generation: int) -> None:
    """Retry :func:`rewind` with backoff, then resume ``tps``; a newer rebalance makes this moot."""
    delay, waited, logged = 0.5, 0.0, 0.0
    while app.consumer_generation_id == generation and not app.should_stop:
        await asyncio.sleep(delay)
        waited += delay
        try:
            await rewind(app.consumer, store, tps)
        except Exception as exc:  # noqa: BLE001 - still away: keep waiting, as the batch path does (RETRY_CAP)
            if waited - logged >= OUTAGE_LOG_EVERY:
                logged = waited
                log.error("still cannot compare the offsets Redis holds with Kafka's after %.0fs: %s", waited, exc)
            delay = min(delay * 2, RETRY_CAP)
            continue
        if app.consumer_generation_id == generation:
            app.consumer.resume_partitions(tps)
            log.warning("partitions %s resumed", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)))
        return


async def rewind(consumer: Any, store: Store, tps: set[TP]) -> dict[TP, int]:
    """Seek each partition whose Kafka committed offset is past what Redis holds back to Redis's next offset.

    Redis is the one truth of where a partition resumes: its offsets are written in the same atomic step as the
    counters. Kafka's committed offset only follows them (a batch is acknowledged after its commit), so it is
    behind or equal, unless Redis lost commits (an AOF without fsync, a crash, a restored backup); then the
    messages in between must be read again. Positions are read before Redis: Redis's offsets only grow, so a
    commit landing meanwhile makes a rewind unnecessary, never a needed one missed. Returns the new positions.
    """
    positions = {tp: await consumer.position(tp) for tp in tps}
    stored = await store.partition_offsets([(tp.topic, tp.partition) for tp in tps])
    behind = {tp: stored[(tp.topic, tp.partition)] + 1 for tp, pos in positions.items()
              if pos is not None and stored[(tp.topic, tp.partition)] + 1 < pos}
    if not behind:
        return {}
    earliest = await consumer.earliest_offsets(*behind)
    targets: dict[TP, int] = {}
    for tp, nxt in sorted(behind.items()):
        start = earliest.get(tp) or 0
        target = max(nxt, start)
        if target >= positions[tp]:
            continue
        targets[tp] = target
        held = f"up to offset {nxt - 1}" if nxt > 0 else "nothing"
        gone = (f"; offsets {nxt} to {start - 1} are no longer in the log, their events are lost"
                if start > nxt else "")
        log.warning("Redis holds %s[%d] %s but Kafka's committed offset is %d: re-reading %d messages from offset %d "
                    "(Redis lost commits: a crash without fsync, a failover or a restored backup)%s",
                    tp.topic, tp.partition, held, positions[tp], positions[tp] - target, target, gone)
    if targets:
        await consumer.seek_wait(targets)
        try:
            await store.count(rewound_partitions=len(targets),
                              rewound_messages=sum(positions[tp] - t for tp, t in targets.items()))
        except StoreUnavailable as exc:  # the seek is done; only the counter misses it
            log.warning("could not count the rewind in ccmon:stats: %s", exc)
    return targets


async def read_messages(settings: Settings, topic: str, partition: int, start: int, end: int) -> list[Message]:
    """The messages of one partition from offset ``start`` up to ``end`` (excluded), read outside the group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", client_id="ccmon-reread", **settings.kafka_options())
    try:
        await consumer.start()
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        out: list[Message] = []
        idle = 0
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            hw = consumer.highwater(tp)
            if not batch and hw is not None and await consumer.position(tp) >= hw:
                break  # the log ends before ``end``
            idle = 0 if batch else idle + 1
            if idle >= 10:
                raise BrokerUnavailable(f"no data from {topic}[{partition}] for 10 s while reading it again")
            out += [Message(topic, partition, r.offset, r.value) for r in batch.get(tp, []) if r.offset < end]
        return out
    except KafkaError as exc:
        raise BrokerUnavailable(f"could not read {topic}[{partition}] from offset {start} again: {exc}") from exc
    finally:
        await consumer.stop()
