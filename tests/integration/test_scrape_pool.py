"""``/metrics`` and wallboard updates rendered by helper processes (ccmon/scrape_pool.py) against a real Redis: the
same bytes as the worker writes alone, in both formats, with custom metrics and what belongs to no queue; and a
helper that dies costs one scrape or update served by the worker, never an error."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import defaultdict
from typing import Any, Iterator

import pytest

from agents.config import CustomCounter, CustomRatio, MetricsConfig
from agents.core import CORES, BatchResult, PartitionState, apply_batch
from alerts.config import AlertsConfig, builtin_rules
from ccmon.exposition import scrape
from ccmon.scrape_pool import ScrapePool
from ccmon.services import start_redis, stop
from ccmon.store import Commit, Store
from ccmon.wallboard import Hub
from streams.events import Event, event_from_dict
from streams.partitioning import partition_for
from streams.simulator import SimConfig, generate
from tests.unit.test_exposition import ACCEPTS as UNIT_ACCEPTS

pytestmark = pytest.mark.integration

CFG = MetricsConfig(custom_counters=(CustomCounter("abandons", "call.abandoned"),),
                    custom_ratios=(CustomRatio("abandon_share", "abandons", "offered"),))
QUEUES = tuple(f"q{i:02d}" for i in range(9)) + ('odd "q"\\x',)
# Prometheus 2.x's Accept header (OpenMetrics first), and the classic text format.
ACCEPTS = (UNIT_ACCEPTS[0], None)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A Redis of this module's own, filled with 20 minutes of traffic for ``QUEUES`` and two KPIs."""
    proc, url = start_redis(tmp_path_factory.mktemp("scrape-pool"))
    s = Store(url, CFG)
    try:
        asyncio.run(_fill(s))
        yield s
    finally:
        stop(proc)


async def _fill(s: Store) -> None:
    end = time.time()
    sim = SimConfig(seed=5, queues=QUEUES, arrival_rate_per_hour=300, agents_per_queue=3, ticket_rate_per_hour=60)
    raws = list(generate(sim, end - 1200, 1200))
    raws += [{"event_id": "k1", "type": "kpi.sample", "ts": end - 30, "name": "churn", "value": 0.25},
             {"event_id": "k2", "type": "kpi.sample", "ts": end - 20, "name": "nps_board", "value": 41, "queue": "q03"}]
    parts: dict[tuple[str, int], PartitionState] = defaultdict(PartitionState)
    pending: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for raw in raws:
        ev = event_from_dict(raw)
        assert isinstance(ev, Event), ev
        pending[(ev.domain, partition_for(ev.entity_id, 2))].append(ev)
    for key, events in sorted(pending.items()):
        res = apply_batch(CORES[key[0]], parts[key], events, CFG, BatchResult())
        await s.commit(Commit(deltas=res.deltas, queues=res.queues, offsets={(f"t.{key[0]}", key[1]): (-1, 0)}))
    await s.close()


async def _both(s: Store, pool: ScrapePool, accept: Any) -> tuple[bytes, bytes]:
    status = await s.status()
    alone, _ = await scrape(s, status, accept)
    helped, _ = await pool.scrape(s, status, accept)
    return alone, helped


async def _kill_helpers(pool: ScrapePool) -> None:
    """Start the helpers, then kill every one of them."""
    await pool.wait_ready()
    assert pool._pool is not None
    for pid in list(pool._pool._processes):  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)


def test_helpers_write_what_the_worker_writes_alone(store: Store) -> None:
    async def run() -> None:
        fixed = time.time()
        s = Store(store.url, CFG)
        s.clock = lambda: fixed  # both renders at one instant
        for processes in (2, 3):
            pool = ScrapePool(store.url, CFG, processes=processes, min_queues=1)
            try:
                await pool.wait_ready()
                for accept in ACCEPTS:
                    alone, helped = await _both(s, pool, accept)
                    assert b'ccmon_custom_count{name="abandons",queue=""' in alone  # the roll-up's samples are there
                    assert b'ccmon_kpi{name="churn",queue=""} 0.25' in alone
                    assert b'queue="odd \\"q\\"\\\\x"' in alone
                    assert helped == alone, (processes, accept)
                assert pool.served == {"helpers": 2, "worker": 0}
            finally:
                pool.close()
        await s.close()

    asyncio.run(run())


def test_few_queues_or_no_helpers_stay_in_the_worker(store: Store) -> None:
    async def run() -> None:
        s = Store(store.url, CFG)
        for pool in (ScrapePool(store.url, CFG, processes=2), ScrapePool(store.url, CFG, processes=0, min_queues=1)):
            body, _ = await pool.scrape(s, await s.status(), None)
            assert body.count(b"ccmon_calls_offered_total{") == len(QUEUES)
            assert pool.served == {"helpers": 0, "worker": 1} and pool._pool is None  # never started
        await s.close()

    asyncio.run(run())


def test_a_helper_that_dies_costs_one_scrape_in_the_worker(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        fixed = time.time()
        s = Store(store.url, CFG)
        s.clock = lambda: fixed
        pool = ScrapePool(store.url, CFG, processes=2, min_queues=1)
        try:
            first, _ = await pool.scrape(s, await s.status(), None)  # served in the worker while the helpers start
            assert pool.served == {"helpers": 0, "worker": 1}
            await _kill_helpers(pool)
            served, _ = await pool.scrape(s, await s.status(), None)
            assert served == first and pool.served == {"helpers": 0, "worker": 2} and pool.failures == 1
            assert "a helper process failed" in caplog.text and "this /metrics scrape is served by the worker" in caplog.text
            await pool.wait_ready()  # started again
            again, _ = await pool.scrape(s, await s.status(), None)
            assert again == first and pool.served == {"helpers": 1, "worker": 2}
        finally:
            pool.close()
        await s.close()

    asyncio.run(run())


def test_a_helper_that_cannot_reach_redis_is_a_store_error_not_a_fallback(store: Store) -> None:
    """A helper's read that finds Redis unreachable fails as the worker's would: ``/metrics`` answers 503 with the
    cause, and the helpers stay up (Redis coming back is all they need)."""
    from ccmon.errors import StoreUnavailable
    from ccmon.services import free_port

    async def run() -> None:
        s = Store(store.url, CFG)
        pool = ScrapePool(f"redis://127.0.0.1:{free_port()}/0", CFG, processes=2, min_queues=1)  # nothing listens
        try:
            await pool.wait_ready()
            errors = s.errors
            with pytest.raises(StoreUnavailable, match="Redis at redis://127.0.0.1:.* is unreachable"):
                await pool.scrape(s, await s.status(), None)
            assert pool._pool is not None and pool.served["helpers"] == 0 and pool.failures == 0
            # A helper's failed read counts as the worker's (ccmon_worker_redis_errors_total, redis_up 0); the other
            # helper's may still be on its way when the first fails the scrape.
            assert s.errors > errors and s.down_since is not None
        finally:
            pool.close()
            await s.close()

    asyncio.run(run())


def test_helpers_that_cannot_start_leave_the_worker_serving(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """Helpers whose start fails (here: a Redis URL their client refuses) are logged once and not tried again
    for ``RETRY_S``; meanwhile every scrape is served by the worker, whole."""
    from ccmon import scrape_pool

    async def run() -> None:
        s = Store(store.url, CFG)
        pool = ScrapePool("bogus://nowhere", CFG, processes=2, min_queues=1)
        try:
            with pytest.raises(RuntimeError, match="did not start"):
                await pool.wait_ready()
            assert caplog.text.count("helper processes for /metrics, the wallboard and /api/snapshot did not start") == 1
            assert pool._pool is None and pool._retry_at > time.monotonic() + scrape_pool.RETRY_S - 5
            for _ in range(3):
                body, _ = await pool.scrape(s, await s.status(), None)
                assert body.count(b"ccmon_calls_offered_total{") == len(QUEUES)
            assert pool._pool is None and pool.served == {"helpers": 0, "worker": 3}  # not tried again yet
            assert pool.failures == 1
        finally:
            pool.close()
            await s.close()

    asyncio.run(run())


RULES = AlertsConfig(rules=builtin_rules())
FIRING = [{"rule": "CcmonServiceLevelBelowTarget", "queue": "q03", "status": "firing", "severity": "page",
           "summary": "q03 below target", "firing_since": 1.5e9}]


def _update_args(now_s: float) -> tuple[Any, ...]:
    """A wallboard update's arguments: the built-in rules, one firing alert, the filled agents' topic (2 partitions)."""
    return (RULES, FIRING, "t.agents", 2, True, now_s)


def test_helpers_build_the_wallboard_update_the_worker_builds(store: Store) -> None:
    """From ``wallboard_min_queues`` queues on, the update comes from a helper, byte for byte the worker's own."""
    async def run() -> None:
        s = Store(store.url, CFG)
        now_s = time.time()
        pool = ScrapePool(store.url, CFG, processes=2, read_min_queues=len(QUEUES))
        try:
            here = await pool.wallboard(s, *_update_args(now_s))  # the first: the queue count is not known yet
            assert pool.wallboard_served == {"helpers": 0, "worker": 1} and pool._pool is None
            assert here.startswith(b"event: snapshot\ndata: {") and b'"q03 below target"' in here
            assert b'"calls_waiting"' in here and b'"odd \\"q\\"\\\\x"' in here  # a tile per queue
            await pool.wait_ready()
            helped = await pool.wallboard(s, *_update_args(now_s))
            assert helped == here and pool.wallboard_served == {"helpers": 1, "worker": 1}
            # The hub hands its screens what the pool built, with its own evaluator's alerts (none here).
            hub = Hub(s, RULES, "t.agents", 2, pool=pool)
            assert (await hub.message()).startswith(b"event: snapshot\ndata: {")
            assert pool.wallboard_served == {"helpers": 2, "worker": 1}
        finally:
            pool.close()
            await s.close()

    asyncio.run(run())


def test_few_queues_or_no_helpers_build_the_wallboard_in_the_worker(store: Store) -> None:
    async def run() -> None:
        s = Store(store.url, CFG)
        for pool in (ScrapePool(store.url, CFG, processes=2, read_min_queues=len(QUEUES) + 1),
                     ScrapePool(store.url, CFG, processes=0, read_min_queues=1)):
            for _ in range(2):
                await pool.wallboard(s, *_update_args(time.time()))
            assert pool.wallboard_served == {"helpers": 0, "worker": 2} and pool._pool is None  # never started
        await s.close()

    asyncio.run(run())


def test_a_helper_that_dies_costs_one_wallboard_update_in_the_worker(store: Store,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        s = Store(store.url, CFG)
        now_s = time.time()
        pool = ScrapePool(store.url, CFG, processes=2, read_min_queues=1)
        try:
            first = await pool.wallboard(s, *_update_args(now_s))
            await _kill_helpers(pool)
            served = await pool.wallboard(s, *_update_args(now_s))
            assert served == first and pool.wallboard_served == {"helpers": 0, "worker": 2} and pool.failures == 1
            assert "this wallboard update is served by the worker" in caplog.text
            await pool.wait_ready()
            assert await pool.wallboard(s, *_update_args(now_s)) == first
            assert pool.wallboard_served == {"helpers": 1, "worker": 2}
        finally:
            pool.close()
            await s.close()

    asyncio.run(run())


def test_a_wallboard_helper_that_cannot_reach_redis_is_a_store_error(store: Store) -> None:
    """As for scrapes: the hub logs it and its screens go stale; the helpers stay up."""
    from ccmon.errors import StoreUnavailable
    from ccmon.services import free_port

    async def run() -> None:
        s = Store(store.url, CFG)
        pool = ScrapePool(f"redis://127.0.0.1:{free_port()}/0", CFG, processes=2, read_min_queues=1)
        try:
            await pool.wallboard(s, *_update_args(time.time()))  # built here: this worker's Redis answers
            await pool.wait_ready()
            with pytest.raises(StoreUnavailable, match="is unreachable"):
                await pool.wallboard(s, *_update_args(time.time()))
            assert pool._pool is not None and pool.wallboard_served["helpers"] == 0 and pool.failures == 0
            assert s.errors == 1 and s.down_since is not None
            await s.ping()  # the worker's own next call that succeeds: up again
            assert s.down_since is None
        finally:
            pool.close()
            await s.close()

    asyncio.run(run())


def test_helpers_answer_api_snapshot_as_the_worker_does(store: Store) -> None:
    """``/api/snapshot`` of all queues (from the second read on, once the count is known) or of as many named ones
    comes from a helper, byte for byte the worker's JSON; a read of fewer queues stays in the worker."""
    import json

    from ccmon.scrape_pool import snapshot_json

    async def run() -> None:
        s = Store(store.url, CFG)
        at = int(time.time() * 1000)
        pool = ScrapePool(store.url, CFG, processes=2, read_min_queues=len(QUEUES))
        try:
            whole = await pool.snapshot(s, at, None)
            assert whole == snapshot_json(await s.snapshot(now_ms=at)) and pool.snapshots_served["worker"] == 1
            assert set(json.loads(whole)["queues"]) == set(QUEUES)
            await pool.wait_ready()
            assert await pool.snapshot(s, at, None) == whole
            assert await pool.snapshot(s, at, list(QUEUES)) == whole  # every queue, named
            few = await pool.snapshot(s, at, ["q01", "q02"])
            assert few == snapshot_json(await s.snapshot(now_ms=at, only=["q01", "q02"]))
            assert pool.snapshots_served == {"helpers": 2, "worker": 2}
            fixed = time.time()
            s.clock = lambda: fixed  # now (no ?at=): the helper reads at the worker's clock
            assert await pool.snapshot(s, None, None) == snapshot_json(await s.snapshot())
            assert pool.snapshots_served == {"helpers": 3, "worker": 2}
        finally:
            pool.close()
            await s.close()

    asyncio.run(run())
