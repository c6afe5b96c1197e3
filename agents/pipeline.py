"""One domain's batch path: decode, call the pure core, dead-letter, and commit exactly once.

It knows nothing of Faust, so tests can drive it with real Redis and plain messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Mapping, Optional, Sequence

from agents.config import MetricsConfig
from agents.core import BatchResult, CallState, Deltas, apply_batch, decode_state, encode_state
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


def _pass_through(states: Mapping[str, object], events: Iterable[Event], cfg: MetricsConfig, deltas: Deltas) -> BatchResult:
    """The core of a domain whose metrics come in a later issue: count, keep no state."""
    result = BatchResult(deltas=deltas)
    result.applied = sum(1 for _ in events)
    return result


CORES: dict[str, Callable[..., BatchResult]] = {"calls": apply_batch}
DECODERS: dict[str, Callable[[bytes], object]] = {"calls": decode_state}
ENCODERS: dict[str, Callable[[object], bytes]] = {"calls": encode_state}  # type: ignore[dict-item]


@dataclass
class _Partition:
    offset: int
    states: dict[str, CallState]


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
    ):
        self.domain = domain
        self.topic = topic
        self.partitions = partitions
        self.store = store
        self.cfg = cfg
        self.send_dead_letters = send_dead_letters
        self.highwater = highwater
        self.topic_prefix = topic_prefix
        self.core = CORES.get(domain, _pass_through)
        self.decode_state = DECODERS.get(domain)
        self.encode_state = ENCODERS.get(domain)
        self.loaded: dict[int, _Partition] = {}
        self.outage_since: Optional[float] = None

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop cached state of partitions this worker no longer owns."""
        for p in partitions:
            self.loaded.pop(p, None)

    async def process(self, messages: Sequence[Message]) -> None:
        """Apply a batch exactly once, retrying through store or broker outages."""
        backoff = 0.2
        while True:
            try:
                await self._process_once(messages)
            except Fenced as exc:
                log.warning("partitions %s were written by another worker; reloading their state", exc.tps)
                self.forget(p for _, p in exc.tps)
                continue
            except (StoreUnavailable, BrokerUnavailable) as exc:
                if self.outage_since is None:
                    self.outage_since = asyncio.get_running_loop().time()
                log.error("%s; retrying in %.1fs (nothing is acknowledged until it succeeds)", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if self.outage_since is not None:
                log.warning("store is back; resumed after %.1fs", asyncio.get_running_loop().time() - self.outage_since)
                self.outage_since = None
            return

    async def _load(self, partition: int) -> _Partition:
        part = self.loaded.get(partition)
        if part is None:
            offset, raw = await self.store.load_partition((self.topic, partition))
            hw = self.highwater(partition)
            if hw is not None and offset >= hw:
                log.error(
                    "%s partition %d: Redis has applied up to offset %d but the log ends at %d (the broker lost its "
                    "log or the topic was recreated); resetting this partition's offset and entity states so no new "
                    "event is skipped. Counters already in Redis are kept.",
                    self.topic, partition, offset, hw,
                )
                await self.store.reset_partition((self.topic, partition), offset)
                offset, raw = -1, {}
            decode = self.decode_state
            states = {k: decode(v) for k, v in raw.items()} if decode else {}  # type: ignore[misc]
            part = self.loaded[partition] = _Partition(offset, states)  # type: ignore[arg-type]
        return part

    def _reject(self, dead: list[DeadLetter], stats: Counter, msg: Message, raw: bytes, reason: str, detail: str, index: Optional[int]) -> None:
        stats["rejected:" + reason] += 1
        dead.append(
            make_dead_letter(
                raw, reason, detail, "worker",
                source_topic=msg.topic, partition=msg.partition, offset=msg.offset, index=index,
            )
        )

    async def _process_once(self, messages: Sequence[Message]) -> None:
        by_part: dict[int, list[Message]] = defaultdict(list)
        for m in messages:
            by_part[m.partition].append(m)
        parts = {p: await self._load(p) for p in by_part}

        stats: Counter[str] = Counter()
        dead: list[DeadLetter] = []
        deltas: Deltas = defaultdict(lambda: defaultdict(int))
        commit = Commit(deltas=deltas)
        results: dict[int, BatchResult] = {}
        for p, msgs in by_part.items():
            part = parts[p]
            events: list[Event] = []
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
                batch_index = len(items) > 1 or m.value.lstrip()[:1] == b"["
                originals: Optional[list[bytes]] = None
                for i, item in enumerate(items):
                    idx = i if batch_index else None
                    stats["consumed"] += 1
                    if isinstance(item, Rejected):
                        self._reject(dead, stats, m, item.raw, item.reason, item.detail, idx)
                    elif item.domain != self.domain:
                        originals = originals or split_message(m.value)
                        self._reject(
                            dead, stats, m, originals[i], "wrong_topic",
                            f"{item.type} events belong on {self.topic_prefix}{item.domain}, not {m.topic}", idx,
                        )
                    elif partition_for(item.entity_id, self.partitions) != p:
                        originals = originals or split_message(m.value)
                        self._reject(
                            dead, stats, m, originals[i], "wrong_partition",
                            f"{item.entity_field} {item.entity_id!r} belongs on partition "
                            f"{partition_for(item.entity_id, self.partitions)}, not {p}; key messages by "
                            f"{item.entity_field} and batch only events of one partition", idx,
                        )
                    else:
                        events.append(item)
            if newest == part.offset:
                continue
            commit.offsets[(self.topic, p)] = (part.offset, newest)
            res = self.core(part.states, events, self.cfg, deltas)
            results[p] = res
            stats["applied"] += res.applied
            stats["duplicates"] += res.duplicates
            commit.queues |= res.queues
            if res.states and self.encode_state:
                commit.states[(self.topic, p)] = {k: self.encode_state(v) for k, v in res.states.items()}
            hw = self.highwater(p)
            if hw is not None:
                commit.highwater[(self.topic, p)] = hw
        if not commit.offsets:
            return
        commit.stats = {f"{k}:{self.domain}" if k in ("applied", "duplicates") else k: v for k, v in stats.items()}
        commit.stats["batches"] = 1
        if dead:
            # Dead letters are published before the commit: a crash in between re-sends them
            # (at least once, each carries topic/partition/offset/index to dedup), never loses them.
            await self.send_dead_letters([encode_dead_letter(d) for d in dead])
        await self.store.commit(commit)
        for p, res in results.items():
            part = parts[p]
            part.offset = commit.offsets[(self.topic, p)][1]
            part.states.update(res.states)  # type: ignore[arg-type]

