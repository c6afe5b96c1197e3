"""The readers' window sums in a real Redis: kept by the commit and slid by reads, they must always give what
summing the buckets gives (read.lua and commit.lua's window-sum section against read.lua's mode 0)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from typing import Iterator

import pytest

from agents.config import MetricsConfig, bucket_start, day_of
from agents.core import (AGENT_BUCKET, AGENT_DAY, BY_AGENT, CORES, PartitionState, Z_WAIT, apply_batch,
                         survey_fields)
from ccmon.services import start_redis, stop
from ccmon.store import PREFIX, Commit, Store
from streams.events import Event, event_from_dict
from streams.partitioning import partition_for
from streams.simulator import SimConfig, generate

pytestmark = pytest.mark.integration

CFG = MetricsConfig()
WIDTH = CFG.bucket_seconds


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of this module's own."""
    proc, url = start_redis(tmp_path_factory.mktemp("window-sums"))
    yield url
    stop(proc)


def batches(seed: int, minutes: float, end: float) -> list[tuple[tuple[str, int], list[Event]]]:
    """Simulated traffic for a few queues up to ``end``, cut into batches of random sizes per partition."""
    sim = SimConfig(seed=seed, queues=("q1", "q2", 'odd "q"'), arrival_rate_per_hour=240, agents_per_queue=4,
                    ticket_rate_per_hour=30)
    rng = random.Random(seed)
    pending: dict[tuple[str, int], list[Event]] = defaultdict(list)
    out = []
    for raw in generate(sim, end - minutes * 60, minutes * 60):
        ev = event_from_dict(raw)
        assert isinstance(ev, Event)
        key = (ev.domain, partition_for(ev.entity_id, 2))
        pending[key].append(ev)
        if len(pending[key]) >= rng.randint(1, 40):
            out.append((key, pending.pop(key)))
    out += [(k, v) for k, v in pending.items() if v]
    return out


class Worker:
    """Applies batches through the pure core and commits them with ``store``."""

    def __init__(self, store: Store):
        self.store = store
        self.parts: dict[tuple[str, int], PartitionState] = defaultdict(PartitionState)
        self.offsets: dict[tuple[str, int], int] = defaultdict(lambda: -1)

    async def commit(self, key: tuple[str, int], events: list[Event]) -> None:
        """One batch, as the worker commits it."""
        res = apply_batch(CORES[key[0]], self.parts[key], events, CFG)
        tp = (f"t.{key[0]}", key[1])
        await self.store.commit(Commit(deltas=res.deltas, queues=res.queues,
                                       offsets={tp: (self.offsets[key], self.offsets[key] + 1)}))
        self.offsets[key] += 1


async def commit_traffic(store: Store, seed: int, minutes: float) -> int:
    """Commit ``minutes`` of simulated traffic up to now through ``store``; returns now (ms)."""
    worker = Worker(store)
    end = time.time()
    for key, events in batches(seed, minutes, end):
        await worker.commit(key, events)
    return int(end * 1000)


async def fresh(url: str) -> tuple[Store, Store]:
    """A store whose commits keep the window sums, and one that reads as if they did not (mode 0)."""
    wired, plain = Store(url, CFG), Store(url, CFG)
    plain.window_sums = False  # sums the buckets in read.lua, whatever is stored
    await wired.redis.flushdb()
    return wired, plain


async def same(wired: Store, plain: Store, at_ms: int) -> dict[str, object]:
    """``wired``'s read now (sliding its sums to ``at_ms``) equals summing the buckets at that instant."""
    wired.clock = lambda: at_ms / 1000
    got = await wired.snapshot()
    assert got == await plain.snapshot(now_ms=at_ms)
    # The alert evaluator's read (no roll-up, no per-agent views), from the kept sums and from the buckets.
    lean = lean_view(got)
    assert await wired.snapshot(rollup_all=False, agents=False) == lean
    assert await plain.snapshot(now_ms=at_ms, rollup_all=False, agents=False) == lean
    return got


def lean_view(snap: dict) -> dict:  # type: ignore[type-arg]
    """``snap`` as a read with ``rollup_all=False, agents=False`` returns it."""
    queues = {q: {w: ({k: v for k, v in view.items() if k != "surveys_by_agent"} if isinstance(view, dict) else view)
                  for w, view in qv.items()} for q, qv in snap["queues"].items()}
    out = {**snap, "queues": queues, "all": {w: {"custom": snap["all"][w]["custom"]} for w in CFG.window_names}}
    assert any("surveys_by_agent" in qv["today"] for qv in snap["queues"].values()), "no agent views to leave out"
    return out


def count_rebuilds(store: Store) -> dict[str, int]:
    """How many queues' sums read.lua slid (or found in place) and rebuilt, over the store's reads now."""
    counts = {"kept": 0, "rebuilt": 0}
    pipeline = store._pipeline

    async def spy(commands, replies=None, consume=None, encoding="utf-8"):  # type: ignore[no-untyped-def]
        out = await pipeline(commands, replies, consume, encoding)
        for reply in out[:sum(1 for c in commands if c.startswith(b"*4\r\n$7\r\nEVALSHA"))]:
            for flag in reply if isinstance(reply, list) else []:
                if flag in (0, 1):
                    counts["rebuilt" if flag else "kept"] += 1
        return out

    store._pipeline = spy  # type: ignore[method-assign]
    return counts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kept_sums_equal_the_buckets_under_interleaved_commits_and_reads(redis_url: str, seed: int) -> None:
    async def run() -> None:
        wired, plain = await fresh(redis_url)
        other = Store(redis_url, CFG)  # a second worker, whose clock runs apart
        counts = count_rebuilds(wired)
        end = time.time()
        end_ms = int(end * 1000)
        rng = random.Random(seed)
        worker = Worker(wired)
        # Reads now: Redis's clock is the real one, so a read more than a minute behind it would find the oldest
        # buckets of its range expired and rebuild (tested too, by the steps back), rather than slide.
        at = end_ms
        for key, events in batches(seed, 75, end):
            await worker.commit(key, events)  # an hour of traffic, while the window slides at reads now
            if rng.random() < 0.2:
                step = rng.choice([0, 1_000, 15_000, 30_000, 59_000, 60_000, 61_000, -30_000, -61_000, 600_000,
                                   -3600_000])
                at = min(end_ms + 600_000, max(end_ms - 3600_000, at + step))
                if at < end_ms and rng.random() < 0.7:
                    at = end_ms + rng.randint(0, 60_000)
                if rng.random() < 0.8:
                    await same(wired, plain, at)
                else:
                    await same(other, plain, at + rng.choice([-45_000, 45_000]))
        for step in (0, 20_000, 40_000, 60_000, 3_600_000):
            await same(wired, plain, end_ms + step)
        assert counts["kept"] > counts["rebuilt"] > 0, counts
        for s in (wired, plain, other):
            await s.close()
    asyncio.run(run())


class Deltas:
    """Just the interface the commit consumes: counter increments and sorted-set writes per window key."""

    def __init__(self, counters: dict, zadd: dict, zrem: dict):  # type: ignore[type-arg]
        self.counters, self.zadd, self.zrem = counters, zadd, zrem


def test_a_lowered_longest_wait_is_recomputed(redis_url: str) -> None:
    """A batch that removes a segment's longest wait (a correction) leaves the segment's longest unknown, and the
    next read finds the new one from the buckets' longest waits."""
    async def run() -> None:
        wired, plain = await fresh(redis_url)
        now = int(time.time() * 1000)
        b = bucket_start(now - 20 * 60_000, WIDTH)  # in the 30-minute window's second segment
        b2 = b - 2 * WIDTH
        tp = ("t.calls", 0)

        async def commit(offset: int, counters: dict, zadd: dict, zrem: dict) -> None:  # type: ignore[type-arg]
            await wired.commit(Commit(deltas=Deltas(counters, zadd, zrem), queues={"q"},  # type: ignore[arg-type]
                                      offsets={tp: (offset - 1, offset)}))

        await commit(0, {("b", "q", b): {"answered": 2}, ("b", "q", b2): {"answered": 1}},
                     {(Z_WAIT, "q", b): {"c1": 90_000, "c2": 30_000}, (Z_WAIT, "q", b2): {"c3": 45_000}}, {})
        snap = await same(wired, plain, now)
        assert snap["queues"]["q"]["30m"]["max_wait_seconds"] == 90.0  # type: ignore[index]
        await commit(1, {("b", "q", b): {"answered": -1}}, {}, {(Z_WAIT, "q", b): {"c1"}})
        snap = await same(wired, plain, now)
        assert snap["queues"]["q"]["30m"]["max_wait_seconds"] == 45.0  # type: ignore[index]
        await commit(2, {}, {(Z_WAIT, "q", b2): {"c3": 10_000}}, {})  # re-scored lower, no counter changed
        snap = await same(wired, plain, now)
        assert snap["queues"]["q"]["30m"]["max_wait_seconds"] == 30.0  # type: ignore[index]
        await same(wired, plain, now + 25 * 60_000)  # b and b2 slide into the hour's last segment
        await same(wired, plain, now + 45 * 60_000)  # and out of every window
        await wired.close()
        await plain.close()
    asyncio.run(run())


def test_reads_rebuild_what_is_missing_and_survive_a_script_flush(redis_url: str) -> None:
    async def run() -> None:
        wired, plain = await fresh(redis_url)
        now = await commit_traffic(wired, 7, 20)
        await same(wired, plain, now)
        ws = [k async for k in wired.redis.scan_iter(match=f"{PREFIX}w*", count=1000)]
        assert ws, "a read now keeps the sums in Redis"
        ttls = [await wired.redis.ttl(k) for k in ws]
        assert all(3500 <= t <= 3600 + 900 for t in ttls), ttls  # rebuilt now and then; a quiet queue's go
        await wired.redis.delete(*ws[::2])  # lost (or expired) halves: rebuilt from the buckets
        await same(wired, plain, now)
        await wired.redis.script_flush()
        await same(wired, plain, now + 5_000)
        await wired.close()
        await plain.close()
    asyncio.run(run())


def test_a_read_at_another_instant_writes_nothing(redis_url: str) -> None:
    async def run() -> None:
        wired, plain = await fresh(redis_url)
        now = await commit_traffic(wired, 11, 30)
        await same(wired, plain, now)
        before = {k: await wired.redis.hgetall(k) async for k in wired.redis.scan_iter(match=f"{PREFIX}w*")}
        wired.clock = lambda: now / 1000
        for at in (now - 20 * 60_000, now + 10 * 60_000):
            assert await wired.snapshot(now_ms=at) == await plain.snapshot(now_ms=at)
        after = {k: await wired.redis.hgetall(k) async for k in wired.redis.scan_iter(match=f"{PREFIX}w*")}
        assert after == before
        await wired.close()
        await plain.close()
    asyncio.run(run())


def test_a_ticket_fact_still_to_come_counts_from_its_instant(redis_url: str) -> None:
    """An unanswered urgent ticket's first-response miss (1 h by default) is read from Redis only once it is due."""
    async def run() -> None:
        wired, plain = await fresh(redis_url)
        now = int(time.time()) * 1000
        created = now - 5 * 60_000
        ev = event_from_dict({"event_id": "t", "type": "ticket.created", "ts": created / 1000, "ticket_id": "t1",
                              "queue": "q1", "channel": "email", "priority": "urgent"})
        await Worker(wired).commit(("tickets", 0), [ev])
        run_out = created + 3600_000
        for store, at, missed in ((wired, now, False), (plain, run_out - 1, False), (plain, run_out, True)):
            snap = await store.snapshot(now_ms=at)
            q = snap["queues"]["q1"]  # type: ignore[index]
            assert [q[w]["frt_sla"] for w in ("15m", "1h", "today")] == [0.0 if missed else None] * 3, at
        await wired.close()
        await plain.close()
    asyncio.run(run())


def test_agent_fields_written_before_they_were_kept_apart_still_count(redis_url: str) -> None:
    """Agents' own fields live in hashes of their own (AGENT_BUCKET, AGENT_DAY). Where an older version wrote them
    into the queue's bucket and day hashes (and a read then into the queue's kept sums), the two add up: a CSAT
    response before the upgrade and one after show as two for the agent, in every window, from the kept sums and
    from the buckets alike."""
    async def run() -> None:
        wired, plain = await fresh(redis_url)
        now = int(time.time()) * 1000
        day = day_of(now, CFG.queue("q"))
        t0 = now - 5 * 60_000 if day_of(now - 5 * 60_000, CFG.queue("q")) == day else now  # both today
        old = survey_fields("csat", 5)
        mine = {f"{BY_AGENT}a1:{name}": v for name, v in old.items()}
        tp = ("t.surveys", 0)
        layouts = {  # the first response as the old layout wrote it, and as this one does
            "old": {("b", "q", bucket_start(t0, WIDTH)): {**old, **mine}, ("d", "q", day): {**old, **mine}},
            "new": {("b", "q", bucket_start(t0, WIDTH)): dict(old), ("d", "q", day): dict(old),
                    (AGENT_BUCKET, "q", bucket_start(t0, WIDTH)): dict(mine), (AGENT_DAY, "q", day): dict(mine)},
        }
        second = event_from_dict({"event_id": "s2", "type": "survey.response", "ts": now / 1000, "survey_id": "s2",
                                  "kind": "csat", "score": 4, "queue": "q", "agent_id": "a1"})
        snaps = {}
        for name, counters in layouts.items():
            await wired.redis.flushdb()
            await wired.commit(Commit(deltas=Deltas(counters, {}, {}), queues={"q"},  # type: ignore[arg-type]
                                      offsets={tp: (-1, 0)}))
            await same(wired, plain, now)  # the kept sums now hold the first response
            worker = Worker(wired)
            worker.offsets[("surveys", 0)] = 0
            await worker.commit(("surveys", 0), [second])
            snaps[name] = await same(wired, plain, now)
        assert snaps["old"] == snaps["new"]
        for window in ("15m", "1h", "today"):
            agent = snaps["old"]["queues"]["q"][window]["surveys_by_agent"]["a1"]  # type: ignore[index]
            assert agent["survey_responses"]["csat"] == 2 and agent["csat"] == 1.0, (window, agent)
        await wired.close()
        await plain.close()
    asyncio.run(run())


def test_a_read_without_agent_views_fetches_no_agent_field(redis_url: str) -> None:
    """The alert evaluator's read (``agents=False``) neither asks for the agents' own sums nor gets a single agent
    field back; a full read gets them."""
    async def run() -> None:
        wired, _ = await fresh(redis_url)
        await commit_traffic(wired, 5, 30)
        seen: list[tuple[bytes, list[object]]] = []
        pipeline = wired._pipeline

        async def spy(commands, replies=None, consume=None, encoding="utf-8"):  # type: ignore[no-untyped-def]
            out = await pipeline(commands, replies, consume, encoding)
            seen.append((b"".join(commands), out))
            return out

        wired._pipeline = spy  # type: ignore[method-assign]

        def agent_fields(replies: list[object]) -> int:
            return sum(agent_fields(r) if isinstance(r, list) else isinstance(r, str) and r.startswith(BY_AGENT)
                       for r in replies)

        for agents in (True, False):
            seen.clear()
            snap = await wired.snapshot(agents=agents)
            asked = b"".join(c for c, _ in seen)
            got = sum(agent_fields(r) for _, r in seen)
            if agents:
                assert any(q["today"]["surveys_by_agent"] for q in snap["queues"].values())  # type: ignore[union-attr]
                assert got > 0 and b"ccmon:wsa:" in asked and b"ccmon:da:" in asked
            else:
                assert got == 0 and b"ccmon:wsa:" not in asked and b"ccmon:da:" not in asked, got
        await wired.close()
    asyncio.run(run())
