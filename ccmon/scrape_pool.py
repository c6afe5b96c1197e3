"""``/metrics``, the wallboard and ``/api/snapshot`` for many queues, read and rendered by helper processes.

A scrape of 500 queues is ~230 ms of Python in one process (reading and sorting out ~100,000 counter fields,
building the views, writing ~130,000 sample lines), and it holds the worker's event loop, which also runs the
pipeline, for all of it. With ``CCMON_SCRAPE_PROCESSES`` of 2 or more and at least ``SHARD_MIN_QUEUES`` queues,
the worker hands the queues, in contiguous slices of their sorted names, to that many helper processes. Each reads
its slice from Redis and writes its families' sample lines; the worker stitches them per family, in queue order,
with what belongs to no queue (the all-queues custom metrics, the KPIs of no queue) and its own metrics. The body
is byte for byte what one process writes (``tests/integration/test_scrape_pool.py``).

The same helpers build the wallboard's updates (``ccmon/wallboard.py``) and ``/api/snapshot``'s body once the read
covers ``READ_MIN_QUEUES`` queues. The hub rebuilds its update up to about three times a second while a screen is
open, and each is a whole snapshot read: ~50 ms at 50 queues and ~770 ms at 500 (``bench/reads.py``), all of it on
the worker's event loop before. A helper reads and encodes the update; the worker reads only the alerts (its own
evaluator's) and relays the bytes.

The helpers start at the first read that covers enough queues; that one is served in the worker while they start.
A helper that dies, or fails in any way but Redis being unreachable, is logged, the pool is started again at the
next read, and this one is served in the worker.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Mapping, Optional

import msgspec
from prometheus_client.exposition import choose_encoder

from agents.config import MetricsConfig
from agents.snapshot import custom_rollup
from alerts.config import AlertsConfig
from ccmon.errors import StoreUnavailable
from ccmon.exposition import Sections, View, fast_format, scrape, snapshot_sections, stitch
from ccmon.gcpause import gc_paused
from ccmon.store import Store
from ccmon.wallboard import message, read_payload

log = logging.getLogger("ccmon.scrape")
# Below this many queues a scrape takes under ~50 ms in the worker: the hand-off is not worth it.
SHARD_MIN_QUEUES = 100
# From this many queues a wallboard update or a whole /api/snapshot is built in a helper (a read of 20 queues is
# ~20 ms, and the wallboard reads up to three times a second). Unless the read names its queues, the count is the
# last read's: the first read is served in the worker.
READ_MIN_QUEUES = 20
RETRY_S = 60.0  # after the helpers failed to start, scrapes are served by the worker this long before another try

Shard = tuple[Sections, dict[str, dict[str, int]], dict[str, object]]


def snapshot_json(snapshot: Mapping[str, object]) -> bytes:
    """``/api/snapshot``'s body, encoded by msgspec: the document ``json.dumps`` writes with compact separators, ~8x
    faster on a snapshot (11 -> 1.5 ms at 50 queues; tests/unit/test_json_bodies.py)."""
    return msgspec.json.encode(snapshot)


class ScrapePool:
    """Renders ``/metrics``, the wallboard's updates and ``/api/snapshot``'s answers in ``processes`` helper
    processes when they cover enough queues (see the module)."""

    def __init__(self, url: str, cfg: MetricsConfig, options: Optional[Mapping[str, Any]] = None,
                 processes: int = 2, min_queues: int = SHARD_MIN_QUEUES,
                 read_min_queues: int = READ_MIN_QUEUES):
        self.url = url
        self.cfg = cfg
        self.options = dict(options or {})
        self.processes = processes
        self.min_queues = min_queues
        self.read_min_queues = read_min_queues
        self._queues = 0  # queues in the last read of them all
        self._pool: Optional[ProcessPoolExecutor] = None
        self._starting: Optional[asyncio.Future[object]] = None
        self._retry_at = 0.0  # monotonic: no start before this, after one failed
        # Scrapes, wallboard updates and whole snapshots served, by who rendered them, and helper failures (died, or
        # did not start): /metrics/worker.
        self.served = {"helpers": 0, "worker": 0}
        self.wallboard_served = {"helpers": 0, "worker": 0}
        self.snapshots_served = {"helpers": 0, "worker": 0}
        self.failures = 0

    async def scrape(self, store: Store, status: View, accept: Optional[str]) -> tuple[bytes, str]:
        """What ``GET /metrics`` answers: the exposition body and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        openmetrics = fast_format(encoder)
        if self.processes < 2 or openmetrics is None:
            return await self._alone(store, status, accept)
        queues = sorted(await store.queues())
        self._queues = len(queues)
        if len(queues) < self.min_queues or not await self._ready():
            return await self._alone(store, status, accept)
        assert self._pool is not None
        n = min(self.processes, len(queues))
        slices = [queues[i * len(queues) // n:(i + 1) * len(queues) // n] for i in range(n)]
        now_ms = int(store.clock() * 1000)
        try:
            shards: list[Shard] = await asyncio.gather(*[
                self._run(store, _in_helper, store.window_sums, _shard, part, now_ms, openmetrics, i == 0)
                for i, part in enumerate(slices)])
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a helper died or failed: serve this scrape here, restart them next
            self._failed(exc, "/metrics scrape")
            return await self._alone(store, status, accept)
        sums: dict[str, dict[str, int]] = {}
        for _, part_sums, _ in shards:
            for window, counters in part_sums.items():
                total = sums.setdefault(window, {})
                for k, v in counters.items():
                    total[k] = total.get(k, 0) + v
        rest = {"queues": {}, "all": custom_rollup(sums, self.cfg), "kpis": shards[0][2]}
        parts = [sections for sections, _, _ in shards] + [snapshot_sections(rest, openmetrics)]
        self.served["helpers"] += 1
        return stitch(parts, status, openmetrics, len(queues)), content_type

    async def wallboard(self, store: Store, cfg: AlertsConfig, alerts: list[dict[str, Any]], agents_topic: str,
                        agents_partitions: int, consuming: bool, now_s: float) -> bytes:
        """One wallboard update (a Server-Sent Events message) at ``now_s``: built in a helper from
        ``read_min_queues`` queues on, else here. Raises StoreUnavailable when Redis does not answer."""
        update, self._queues = await self._read(store, self._queues, self.wallboard_served, "wallboard update",
                                                _update, cfg, alerts, agents_topic, agents_partitions, consuming,
                                                now_s)
        return update

    async def snapshot(self, store: Store, now_ms: Optional[int], only: Optional[list[str]]) -> bytes:
        """``/api/snapshot``'s body, the snapshot at ``now_ms`` (now by default) of the queues ``only`` (all by
        default) as JSON: built in a helper when it covers ``read_min_queues`` queues, else here."""
        at = int(store.clock() * 1000) if now_ms is None else now_ms
        body, queues = await self._read(store, self._queues if only is None else len(only), self.snapshots_served,
                                        "/api/snapshot read", _snapshot, at, only)
        if only is None:
            self._queues = queues
        return body

    async def _read(self, store: Store, queues: int, served: dict[str, int], what: str, read: Any,
                    *args: Any) -> Any:
        """``read(store, *args)``: in a helper when the read covers ``queues`` queues and they are up (else they start
        now), here otherwise or when a helper fails; ``served`` counts who did it."""
        if await self._helped(queues):
            try:
                out = await self._run(store, _in_helper, store.window_sums, read, *args)
                served["helpers"] += 1
                return out
            except StoreUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - as in scrape: this one is served here, the helpers restart
                self._failed(exc, what)
        out = await read(store, *args)
        served["worker"] += 1
        return out

    async def _helped(self, queues: int) -> bool:
        """Whether a read of ``queues`` queues goes to a helper (and they are up: else they start now)."""
        return self.processes >= 2 and queues >= self.read_min_queues and await self._ready()

    async def _run(self, store: Store, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in a helper. A read that finds Redis unreachable there counts as the worker's own
        (``ccmon_worker_redis_errors_total``, ``ccmon_worker_redis_up``) and raises StoreUnavailable."""
        assert self._pool is not None
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except StoreUnavailable:
            store.failed()
            raise

    def _failed(self, exc: Exception, what: str) -> None:
        log.warning("a helper process failed (%s: %s); this %s is served by the worker itself, and the helpers "
                    "start again at the next one. If this repeats, set CCMON_SCRAPE_PROCESSES=0 and report it",
                    type(exc).__name__, exc, what)
        self.failures += 1
        self.close()

    async def _alone(self, store: Store, status: View, accept: Optional[str]) -> tuple[bytes, str]:
        answer = await scrape(store, status, accept)
        self.served["worker"] += 1
        return answer

    async def _ready(self) -> bool:
        """Whether the helpers are up; starts them (in the background) when they are not."""
        if self._pool is not None and self._starting is None:
            return True
        if self._starting is None:
            if time.monotonic() < self._retry_at:
                return False
            ctx = multiprocessing.get_context("spawn")  # never fork the worker: it runs threads (Faust, aiokafka)
            self._pool = ProcessPoolExecutor(self.processes, mp_context=ctx, initializer=_start,
                                             initargs=(self.url, self.cfg, self.options))
            loop = asyncio.get_running_loop()
            self._starting = asyncio.gather(*[loop.run_in_executor(self._pool, _ping) for _ in range(self.processes)])
            log.info("starting %d helper processes for /metrics, the wallboard and /api/snapshot "
                     "(CCMON_SCRAPE_PROCESSES)", self.processes)
        if not self._starting.done():
            return False
        failed = self._starting.exception()
        self._starting = None
        if failed is not None:
            log.warning("the helper processes for /metrics, the wallboard and /api/snapshot did not start (%s: %s); "
                        "the worker serves them itself for %.0f s, then they are tried again. Set "
                        "CCMON_SCRAPE_PROCESSES=0 to stop trying",
                        type(failed).__name__, failed, RETRY_S)
            self.failures += 1
            self.close()
            self._retry_at = time.monotonic() + RETRY_S
            return False
        return True

    async def wait_ready(self) -> None:
        """Start the helpers now and wait until they are up (benchmarks and tests); fails if they cannot start."""
        if self.processes < 2:
            return  # none to start: every scrape is served by the worker
        await self._ready()
        if self._starting is not None:
            await asyncio.wait([self._starting])
        if not await self._ready():
            raise RuntimeError("the helper processes for /metrics, the wallboard and /api/snapshot did not start; see "
                               "the log")

    def close(self) -> None:
        """Stop the helpers (without waiting for a scrape they are running)."""
        if self._starting is not None:
            self._starting.cancel()
            self._starting = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


# ---------------------------------------------------------------- in each helper process

_helper: dict[str, Any] = {}


def _start(url: str, cfg: MetricsConfig, options: Mapping[str, Any]) -> None:
    loop = asyncio.new_event_loop()
    _helper.update(loop=loop, store=Store(url, cfg, options))


def _ping() -> bool:
    return True


def _in_helper(window_sums: bool, read: Any, *args: Any) -> Any:
    """``read(store, *args)`` on this helper's loop and store (window sums kept or not, as the worker's store)."""
    store: Store = _helper["store"]
    store.window_sums = window_sums
    return _helper["loop"].run_until_complete(read(store, *args))


async def _shard(store: Store, queues: list[str], now_ms: int, openmetrics: bool, first: bool) -> Shard:
    """One slice of the queues at ``now_ms``: its sections (each family's samples joined and encoded), its
    custom metrics' summed counters and, for the first slice, what belongs to no queue."""
    with gc_paused():  # the whole snapshot lives until its lines are written (ccmon/gcpause.py)
        snap = await store.snapshot(now_ms=now_ms, only=queues, rollup_all=False, with_global=first, sums=True)
        sections = [(head, "".join(lines).encode())  # type: ignore[arg-type]
                    for head, lines in snapshot_sections(snap, openmetrics, whole=False)]
        return sections, snap["custom_sums"], snap["kpis"]  # type: ignore[return-value]


async def _update(store: Store, cfg: AlertsConfig, alerts: list[dict[str, Any]], agents_topic: str,
                  agents_partitions: int, consuming: bool, now_s: float) -> tuple[bytes, int]:
    """A wallboard update at ``now_s``, encoded, and the queues it shows."""
    with gc_paused():  # until the payload is encoded and dropped (ccmon/gcpause.py)
        payload = await read_payload(store, cfg, alerts, agents_topic, agents_partitions, consuming, now_s)
        return message(payload), len(payload["queues"])


async def _snapshot(store: Store, now_ms: int, only: Optional[list[str]]) -> tuple[bytes, int]:
    """The snapshot at ``now_ms`` of the queues ``only`` (all: None) as JSON, and the queues it shows."""
    with gc_paused():  # until the snapshot is encoded and dropped
        snap = await store.snapshot(now_ms=now_ms, only=only)
        return snapshot_json(snap), len(snap["queues"])  # type: ignore[arg-type]
