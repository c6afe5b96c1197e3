"""One domain's batch path: decode, call the pure core, dead-letter, and commit exactly once.

It knows nothing of Faust, so tests can drive it with real Redis and plain messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Optional, Sequence

from agents.config import MetricsConfig
from agents import selfstats
from agents.core import CORES, BatchResult, PartitionState, apply_batch, decode_state, encode_state
from ccmon.errors import BrokerUnavailable, StoreUnavailable
from ccmon.store import Commit, Fenced, Store
from streams.deadletter import DeadLetter, encode as encode_dead_letter, make_dead_letter
from streams.events import Event, Rejected, decode_message, split_message
from streams.partitioning import partition_for

log = logging.getLogger("ccmon.pipeline")


@dataclass(frozen=True, slots=True)
class Message:
    """The parts of a Kafka record the pipeline needs."""

    topic: str
    partition: int
    offset: int
    value: Optional[bytes]


@dataclass
class _Partition:
    offset: int  # the last offset Redis holds for this partition
    work: PartitionState


SendDeadLetters = Callable[[list[bytes]], Awaitable[None]]


class Pipeline:
    """Decode -> core -> dead letters -> one atomic Redis commit, for one topic."""

    def __init__(
        self,
        domain: str,
        topic: str,
        partitions: int,
        store: Store,
        cfg: MetricsConfig,
        send_dead_letters: SendDeadLetters,
        highwater: Callable[[int], Optional[int]] = lambda p: None,
        topic_prefix: str = "cc.",
        max_future_seconds: float = 300.0,
    ):
        self.domain = domain
        self.topic = topic
        self.partitions = partitions
        self.store = store
        self.cfg = cfg
        self.send_dead_letters = send_dead_letters
        self.highwater = highwater
        self.topic_prefix = topic_prefix
        # An event stamped further ahead of the worker's clock than this is a skewed clock, not the future.
        self.max_future_ms = round(max_future_seconds * 1000)
        self.core = CORES[domain]
        self.loaded: dict[int, _Partition] = {}
        self.outage_since: Optional[float] = None
        # Commit durations are known only after a commit, so each rides in the next one.
        self.pending_stats: Counter[str] = Counter()

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop cached state of partitions (no longer ours, or a batch that failed half-way)."""
        for p in partitions:
            self.loaded.pop(p, None)

    async def process(self, messages: Sequence[Message]) -> None:
        """Apply a batch exactly once, retrying through store or broker outages."""
        backoff = 0.2
        touched = {m.partition for m in messages}
        while True:
            try:
                await self._process_once(messages)
            except Fenced as exc:
                log.warning("partitions %s were written by another worker; reloading their state", exc.tps)
                self.forget(touched)
                continue
            except (StoreUnavailable, BrokerUnavailable) as exc:
                self.forget(touched)  # the core mutated its working state: start again from Redis
                if self.outage_since is None:
                    self.outage_since = asyncio.get_running_loop().time()
                log.error("%s; retrying in %.1fs (nothing is acknowledged until it succeeds)", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            except BaseException:
                self.forget(touched)
                raise
            if self.outage_since is not None:
                log.warning("store is back; resumed after %.1fs", asyncio.get_running_loop().time() - self.outage_since)
                self.outage_since = None
            return

    async def _load(self, partition: int) -> _Partition:
        part = self.loaded.get(partition)
        if part is None:
            tp = (self.topic, partition)
            offset, raw, stream_ms = await self.store.load_partition(tp)
            hw = self.highwater(partition)
            if hw is not None and offset >= hw:
                log.error(
                    "%s partition %d: Redis has applied up to offset %d but the log ends at %d (the broker lost its "
                    "log or the topic was recreated); resetting this partition's offset, stream time and entity "
                    "states so no new event is skipped. Counters already in Redis are kept.",
                    self.topic, partition, offset, hw,
                )
                await self.store.reset_partition(tp, offset)
                offset, raw, stream_ms = -1, {}, None
            work = PartitionState(states={k: decode_state(self.domain, v) for k, v in raw.items()}, stream_ms=stream_ms)
            work.index(self.core, self.cfg)
            part = self.loaded[partition] = _Partition(offset, work)
        return part

    def _reject(self, dead: list[DeadLetter], stats: Counter, msg: Message, raw: bytes, reason: str, detail: str,
                index: Optional[int]) -> None:
        stats["rejected:" + reason] += 1
        dead.append(make_dead_letter(raw, reason, detail, "worker", source_topic=msg.topic, partition=msg.partition,
                                     offset=msg.offset, index=index))

    async def _process_once(self, messages: Sequence[Message]) -> None:
        by_part: dict[int, list[Message]] = defaultdict(list)
        for m in messages:
            by_part[m.partition].append(m)
        parts = {p: await self._load(p) for p in by_part}

        stats: Counter[str] = Counter()
        now_ms = int(time.time() * 1000)
        future_limit = now_ms + self.max_future_ms
        dead: list[DeadLetter] = []
        commit = Commit()
        applied_ms: list[int] = []
        for p, msgs in by_part.items():
            part = parts[p]
            known = part.work.states  # an entity held here was checked when it arrived: no murmur2 again
            events: list[Event] = []
            origins: list[tuple[Message, int, bool]] = []  # (message, index, from a batch) of each event
            newest = part.offset
            for m in msgs:
                if m.offset <= part.offset:
                    stats["replayed_skipped"] += 1  # already in Redis: Kafka's committed offset was behind
                    continue
                newest = max(newest, m.offset)
                stats["messages"] += 1
                if m.value is None:
                    self._reject(dead, stats, m, b"", "empty_message", "the message has no value", None)
                    continue
                items = decode_message(m.value)
                batch = len(items) > 1 or m.value.lstrip()[:1] == b"["
                for i, item in enumerate(items):
                    idx = i if batch else None
                    stats["consumed"] += 1
                    if isinstance(item, Rejected):
                        self._reject(dead, stats, m, item.raw, item.reason, item.detail, idx)
                    elif item.domain != self.domain:
                        self._reject(dead, stats, m, split_message(m.value)[i], "wrong_topic",
                                     f"{item.type} events belong on {self.topic_prefix}{item.domain}, not {m.topic}", idx)
                    elif item.entity_id not in known and (home := partition_for(item.entity_id, self.partitions)) != p:
                        self._reject(dead, stats, m, split_message(m.value)[i], "wrong_partition",
                                     f"{item.entity_field} {item.entity_id!r} belongs on partition {home}, not {p}; key "
                                     f"messages by {item.entity_field} and batch only events of one partition", idx)
                    elif item.ts_ms > future_limit:
                        self._reject(dead, stats, m, split_message(m.value)[i], "future_ts",
                                     f"event time {item.ts:.3f} is {(item.ts_ms - now_ms) / 1000:.1f}s ahead of this "
                                     f"worker's clock; at most {self.max_future_ms / 1000:g}s is allowed "
                                     "(CCMON_MAX_FUTURE_SECONDS): fix the sender's clock", idx)
                    else:
                        events.append(item)
                        origins.append((m, i, batch))
            if newest == part.offset:
                continue
            tp = (self.topic, p)
            commit.offsets[tp] = (part.offset, newest)
            res: BatchResult = apply_batch(self.core, part.work, events, self.cfg, BatchResult(deltas=commit.deltas))
            rejected = {i for i, _, _ in res.rejected}
            applied_ms += [ev.ts_ms for i, ev in enumerate(events) if i not in rejected]
            for i, reason, detail in res.rejected:
                m, idx, batch = origins[i]
                raw = split_message(m.value)[idx] if m.value is not None else b""  # type: ignore[arg-type]
                self._reject(dead, stats, m, raw, reason, detail, idx if batch else None)
            stats["applied"] += res.applied
            stats["duplicates"] += res.duplicates
            stats["expired"] += res.expired
            stats["evicted"] += res.evicted
            commit.queues |= res.queues
            if res.changed:
                commit.states[tp] = {k: None if v is None else encode_state(v) for k, v in res.changed.items()}
            if part.work.stream_ms is not None:
                commit.stream_ms[tp] = part.work.stream_ms
            hw = self.highwater(p)
            if hw is not None:
                commit.highwater[tp] = hw
        if not commit.offsets:
            return
        per_domain = ("applied", "duplicates", "expired", "evicted")
        selfstats.observe(stats, selfstats.BATCH, stats["consumed"])
        if dead:
            # Dead letters are published before the commit: a crash in between re-sends them
            # (at least once, each carries topic/partition/offset/index to dedup), never loses them.
            await self.send_dead_letters([encode_dead_letter(d) for d in dead])
        # Latency runs to the moment the commit is sent, for every event the core accepted (rejects are not).
        selfstats.observe_latencies(stats, int(time.time() * 1000), applied_ms)
        commit.stats = {f"{k}:{self.domain}" if k in per_domain else k: v for k, v in (stats + self.pending_stats).items()}
        commit.stats["batches"] = 1
        started = time.perf_counter()
        await self.store.commit(commit)
        self.pending_stats = Counter()
        selfstats.observe(self.pending_stats, selfstats.COMMIT, round((time.perf_counter() - started) * 1e6))
        for p in by_part:
            if (self.topic, p) in commit.offsets:
                parts[p].offset = commit.offsets[(self.topic, p)][1]
