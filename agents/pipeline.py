"""One domain's batch path: decode, call the pure core, dead-letter, and commit exactly once.

It knows nothing of Faust, so tests can drive it with real Redis and plain messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass
from operator import attrgetter
from typing import Awaitable, Callable, Iterable, Mapping, Optional, Sequence

from agents.config import MetricsConfig
from agents import selfstats
from agents.core import CORES, BatchResult, PartitionState, apply_batch, decode_state, encode_state, label_caps
from ccmon.errors import BrokerUnavailable, StoreUnavailable
from ccmon.store import Commit, Fenced, Store
from streams.deadletter import DeadLetter, encode as encode_dead_letter, make_dead_letter
from streams.events import ENTITY_FIELD, EVENT_TYPES_OF, Event, Rejected, decode_message, split_message
from streams.partitioning import partition_for

log = logging.getLogger("ccmon.pipeline")
# Retries through a store or broker outage double from 0.2 s up to this, so a service that is back is used again
# within about this long; the error is logged when the outage starts and then every OUTAGE_LOG_EVERY seconds.
RETRY_CAP = 2.0
OUTAGE_LOG_EVERY = 30.0


@dataclass(frozen=True, slots=True)
class Message:
    """The parts of a Kafka record the pipeline needs."""

    topic: str
    partition: int
    offset: int
    value: Optional[bytes]


@dataclass
class _Partition:
    offset: int  # the last offset applied to ``work``: Redis holds it once that chunk's commit lands
    work: PartitionState


@dataclass
class _Prepared:
    """One chunk, applied in memory and waiting for its commit."""

    commit: Commit
    dead: list[DeadLetter]
    stats: Counter[str]
    carried: Counter[str]  # self-stats of earlier commits riding in this one
    applied_ms: list[int]


SendDeadLetters = Callable[[list[bytes]], Awaitable[None]]
ReadRange = Callable[[int, int, int], Awaitable[list["Message"]]]  # (partition, first offset, end offset)
Refusal = tuple[int, str, str]  # (index of the event in the batch, reason, detail)


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
        commit_bytes: int = 4 * 1024 * 1024,
        limits: Optional[Mapping[str, int]] = None,
        read_range: Optional[ReadRange] = None,
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
        self.commit_bytes = commit_bytes
        # Sender-controlled labels (queue, agent, channel, KPI name) admitted up to a cap each (Settings.label_caps).
        self.caps = label_caps(domain, limits, cfg.queues)
        self.core = CORES[domain]
        self.loaded: dict[int, _Partition] = {}
        # The last offset this worker saw Redis confirm, per partition it holds: Redis found behind it lost commits
        # (a restart from an older AOF or backup), and ``read_range`` reads those messages again from Kafka.
        self.confirmed: dict[int, int] = {}
        self.read_range = read_range
        self.outage_since: Optional[float] = None
        self._outage_logged = 0.0
        # Commit durations are known only after a commit, so each rides in the next one.
        self.pending_stats: Counter[str] = Counter()

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop everything known of partitions that are no longer ours (or whose stored offsets were reset)."""
        for p in partitions:
            self.loaded.pop(p, None)
            self.confirmed.pop(p, None)

    def _drop(self, partitions: Iterable[int]) -> None:
        """Drop the cached state of partitions after a batch failed half-way: it is loaded again from Redis."""
        for p in partitions:
            self.loaded.pop(p, None)

    async def process(self, messages: Sequence[Message]) -> None:
        """Apply a batch exactly once, retrying through store or broker outages."""
        backoff = 0.2
        touched = {m.partition for m in messages}
        while True:
            try:
                await self._process_chunks(messages)
            except Fenced as exc:
                log.warning("partitions %s were written by another worker; reloading their state", exc.tps)
                self._drop(touched)
                continue
            except (StoreUnavailable, BrokerUnavailable) as exc:
                self._drop(touched)  # the core mutated its working state: start again from Redis
                now = asyncio.get_running_loop().time()
                if self.outage_since is None:
                    self.outage_since = self._outage_logged = now
                    log.error("%s; retrying every %.1f-%.0fs, nothing is acknowledged until it succeeds",
                              exc, backoff, RETRY_CAP)
                elif now - self._outage_logged >= OUTAGE_LOG_EVERY:
                    self._outage_logged = now
                    log.error("still failing after %.0fs: %s", now - self.outage_since, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_CAP)
                continue
            except BaseException:
                self._drop(touched)
                raise
            if self.outage_since is not None:
                log.warning("store is back; resumed after %.1fs", asyncio.get_running_loop().time() - self.outage_since)
                self.outage_since = None
            return

    async def _process_chunks(self, messages: Sequence[Message]) -> None:
        """Apply the batch in chunks of at most ``commit_bytes``, one atomic commit each.

        Chunk k+1 is computed while Redis applies chunk k (Redis runs on another core), and its commit is
        sent only once chunk k's has succeeded, so the offsets it is fenced on are already stored. If a
        commit fails, the caller drops the partitions' working state: chunks already committed are then
        skipped by their offsets, the rest are applied again.
        """
        messages = await self._refill(messages)
        inflight: Optional[asyncio.Future[None]] = None
        try:
            for chunk in _chunks(messages, self.commit_bytes):
                prepared = await self._prepare(chunk)
                if inflight is not None:
                    await inflight
                    inflight = None
                if prepared is not None:
                    inflight = asyncio.ensure_future(self._send(prepared))
            if inflight is not None:
                await inflight
                inflight = None
        finally:
            if inflight is not None:  # a later chunk failed to prepare: let the commit in flight land first
                await asyncio.gather(inflight, return_exceptions=True)

    async def _refill(self, messages: Sequence[Message]) -> Sequence[Message]:
        """``messages`` after the ones Redis lost since it confirmed them to this worker, read again from Kafka."""
        if self.read_range is None or not self.confirmed:
            return messages
        lost: list[Message] = []
        for p in sorted({m.partition for m in messages}):
            mark = self.confirmed.get(p)
            if mark is None:
                continue
            held = (await self._load(p)).offset
            if held < mark:
                again = await self.read_range(p, held + 1, mark + 1)
                log.warning("Redis holds %s[%d] up to offset %d but had confirmed %d to this worker (it restarted "
                            "from an older AOF or backup, or failed over): re-reading %d messages from offset %d",
                            self.topic, p, held, mark, len(again), held + 1)
                self.pending_stats["rewound_partitions"] += 1
                self.pending_stats["rewound_messages"] += len(again)
                lost += again
        return [*lost, *messages] if lost else messages

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
                self.confirmed.pop(partition, None)
                offset, raw, stream_ms = -1, {}, None
            work = PartitionState(states={k: decode_state(self.domain, v) for k, v in raw.items()}, stream_ms=stream_ms)
            work.index(self.core, self.cfg)
            part = self.loaded[partition] = _Partition(offset, work)
        return part

    async def _cap(self, events: list[Event],
                   stats: Counter) -> tuple[list[Event], Optional[list[int]], list[Refusal]]:
        """``events`` as they count under the label caps: values not admitted become ``other`` (counted), or the
        event is refused: (the events kept, their indices in ``events`` if any was refused, the refusals)."""
        kept: Optional[list[int]] = None
        refused: list[Refusal] = []
        for cap in self.caps:
            strangers = cap.strangers(events)
            if not strangers:
                continue
            if not cap.full:
                cap.learn(*await self.store.admit(cap.kind, strangers, cap.limit))
            if cap.reason:  # refusing caps come first, while ``events`` is still the whole list
                refused = [(i, cap.reason, cap.detail(ev)) for i, ev in enumerate(events) if cap.capped(ev)]
                kept = [i for i, ev in enumerate(events) if not cap.capped(ev)]
                events = [events[i] for i in kept]
            else:
                events, n = cap.rewrite(events)
                stats[cap.kind + "_capped"] += n
        return events, kept, refused

    def _reject(self, dead: list[DeadLetter], stats: Counter, msg: Message, raw: bytes, reason: str, detail: str,
                index: Optional[int]) -> None:
        stats["rejected:" + reason] += 1
        dead.append(make_dead_letter(raw, reason, detail, "worker", source_topic=msg.topic, partition=msg.partition,
                                     offset=msg.offset, index=index))

    def _refuse(self, dead: list[DeadLetter], stats: Counter, m: Message, items: list, i: int, p: int, batch: bool,
                now_ms: int) -> None:
        """Dead-letter item ``i`` of message ``m``: not an event, another domain's, another partition's, or future."""
        item, idx = items[i], i if batch else None
        if isinstance(item, Rejected):
            self._reject(dead, stats, m, item.raw, item.reason, item.detail, idx)
            return
        raw = split_message(m.value)[i] if m.value is not None else b""
        if item.domain != self.domain:
            self._reject(dead, stats, m, raw, "wrong_topic",
                         f"{item.type} events belong on {self.topic_prefix}{item.domain}, not {m.topic}", idx)
        elif (home := partition_for(item.entity_id, self.partitions)) != p:
            self._reject(dead, stats, m, raw, "wrong_partition",
                         f"{item.entity_field} {item.entity_id!r} belongs on partition {home}, not {p}; key "
                         f"messages by {item.entity_field} and batch only events of one partition", idx)
        else:
            self._reject(dead, stats, m, raw, "future_ts",
                         f"event time {item.ts:.3f} is {(item.ts_ms - now_ms) / 1000:.1f}s ahead of this "
                         f"worker's clock; at most {self.max_future_ms / 1000:g}s is allowed "
                         "(CCMON_MAX_FUTURE_SECONDS): fix the sender's clock", idx)

    async def _prepare(self, messages: Sequence[Message]) -> Optional[_Prepared]:
        """Decode and apply one chunk to the partitions' working state; what its commit must write."""
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
        domain_types = EVENT_TYPES_OF[self.domain]
        entity_of = attrgetter(ENTITY_FIELD[self.domain])
        future_limit_s = future_limit / 1000
        for p, msgs in by_part.items():
            part = parts[p]
            known = part.work.states  # an entity held here was checked when it arrived: no murmur2 again
            events: list[Event] = []
            # Per message that gave events: (first index in events, message, from a batch, item index of each of
            # its events or None when they are all of its items, in order).
            origins: list[tuple[int, Message, bool, Optional[list[int]]]] = []
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
                stats["consumed"] += len(items)
                batch = len(items) > 1 or m.value.lstrip()[:1] == b"["
                first = len(events)
                taken: Optional[list[int]] = None
                for i, item in enumerate(items):
                    if type(item) in domain_types:
                        eid = entity_of(item)
                        if (eid in known or partition_for(eid, self.partitions) == p) and item.ts <= future_limit_s:
                            events.append(item)
                            if taken is not None:
                                taken.append(i)
                            continue
                    if taken is None:
                        taken = list(range(i))
                    self._refuse(dead, stats, m, items, i, p, batch, now_ms)
                if len(events) > first:
                    origins.append((first, m, batch, taken))
            if newest == part.offset:
                continue
            tp = (self.topic, p)
            commit.offsets[tp] = (part.offset, newest)
            events, kept, refused = await self._cap(events, stats)
            res: BatchResult = apply_batch(self.core, part.work, events, self.cfg, BatchResult(deltas=commit.deltas))
            applied_ms += res.applied_ts
            if res.rejected or refused:
                starts = [o[0] for o in origins]
                for i, reason, detail in refused + [(i if kept is None else kept[i], r, d) for i, r, d in res.rejected]:
                    first, m, batch, taken = origins[bisect_right(starts, i) - 1]
                    idx = i - first if taken is None else taken[i - first]
                    raw = split_message(m.value)[idx] if m.value is not None else b""
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
            return None
        for p, part in parts.items():
            if (self.topic, p) in commit.offsets:
                part.offset = commit.offsets[(self.topic, p)][1]  # applied in memory; stored once the commit lands
        selfstats.observe(stats, selfstats.BATCH, stats["consumed"])
        carried, self.pending_stats = self.pending_stats, Counter()
        return _Prepared(commit, dead, stats + carried, carried, applied_ms)

    async def _send(self, prepared: _Prepared) -> None:
        """Publish the chunk's dead letters, then commit it to Redis."""
        commit, stats = prepared.commit, prepared.stats
        try:
            if prepared.dead:
                # Dead letters are published before the commit: a crash in between re-sends them
                # (at least once, each carries topic/partition/offset/index to dedup), never loses them.
                await self.send_dead_letters([encode_dead_letter(d) for d in prepared.dead])
            # Latency runs to the moment the commit is sent, for every event the core accepted (rejects are not).
            selfstats.observe_latencies(stats, int(time.time() * 1000), prepared.applied_ms)
            per_domain = ("applied", "duplicates", "expired", "evicted")
            commit.stats = {f"{k}:{self.domain}" if k in per_domain else k: v for k, v in stats.items()}
            commit.stats["batches"] = 1
            started = time.perf_counter()
            await self.store.commit(commit)
        except BaseException:
            self.pending_stats.update(prepared.carried)  # they ride in a later commit instead
            raise
        selfstats.observe(self.pending_stats, selfstats.COMMIT, round((time.perf_counter() - started) * 1e6))
        for (_topic, p), (_expected, new) in commit.offsets.items():
            self.confirmed[p] = new


def _chunks(messages: Sequence[Message], max_bytes: int) -> Iterable[Sequence[Message]]:
    """Consecutive runs of messages holding at most ``max_bytes`` of values (at least one message each)."""
    start, size = 0, 0
    for i, m in enumerate(messages):
        n = len(m.value) if m.value is not None else 0
        if i > start and size + n > max_bytes:
            yield messages[start:i]
            start, size = i, 0
        size += n
    if start < len(messages):
        yield messages[start:]
