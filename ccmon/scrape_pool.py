"""``/metrics`` for many queues, read and rendered by helper processes in parallel.

A scrape of 500 queues is ~230 ms of Python in one process (reading and sorting out ~100,000 counter fields,
building the views, writing ~130,000 sample lines), and it holds the worker's event loop, which also runs the
pipeline, for all of it. With ``CCMON_SCRAPE_PROCESSES`` of 2 or more and at least ``SHARD_MIN_QUEUES`` queues,
the worker hands the queues, in contiguous slices of their sorted names, to that many helper processes. Each reads
its slice from Redis and writes its families' sample lines; the worker stitches them per family, in queue order,
with what belongs to no queue (the all-queues custom metrics, the KPIs of no queue) and its own metrics. The body
is byte for byte what one process writes (``tests/integration/test_scrape_pool.py``).

The helpers start at the first scrape that has enough queues; that scrape is served in the worker while they
start. A helper that dies, or fails in any way but Redis being unreachable, is logged, the pool is started
again at the next scrape, and this scrape is served in the worker.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Mapping, Optional

from prometheus_client.exposition import choose_encoder

from agents.config import MetricsConfig
from agents.snapshot import custom_rollup
from ccmon.errors import StoreUnavailable
from ccmon.exposition import Sections, View, fast_format, scrape, snapshot_sections, stitch
from ccmon.gcpause import gc_paused
from ccmon.store import Store

log = logging.getLogger("ccmon.scrape")
# Below this many queues a scrape takes under ~50 ms in the worker: the hand-off is not worth it.
SHARD_MIN_QUEUES = 100
RETRY_S = 60.0  # after the helpers failed to start, scrapes are served by the worker this long before another try

Shard = tuple[Sections, dict[str, dict[str, int]], dict[str, object]]


class ScrapePool:
    """Renders ``/metrics`` in ``processes`` helper processes when there are enough queues (see the module)."""

    def __init__(self, url: str, cfg: MetricsConfig, options: Optional[Mapping[str, Any]] = None,
                 processes: int = 2, min_queues: int = SHARD_MIN_QUEUES):
        self.url = url
        self.cfg = cfg
        self.options = dict(options or {})
        self.processes = processes
        self.min_queues = min_queues
        self._pool: Optional[ProcessPoolExecutor] = None
        self._starting: Optional[asyncio.Future[object]] = None
        self._retry_at = 0.0  # monotonic: no start before this, after one failed
        # Scrapes served, by who rendered them, and helper failures (died, or did not start): /metrics/worker.
        self.served = {"helpers": 0, "worker": 0}
        self.failures = 0

    async def scrape(self, store: Store, status: View, accept: Optional[str]) -> tuple[bytes, str]:
        """What ``GET /metrics`` answers: the exposition body and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        openmetrics = fast_format(encoder)
        if self.processes < 2 or openmetrics is None:
            return await self._alone(store, status, accept)
        queues = sorted(await store.queues())
        if len(queues) < self.min_queues or not await self._ready():
            return await self._alone(store, status, accept)
        assert self._pool is not None
        n = min(self.processes, len(queues))
        slices = [queues[i * len(queues) // n:(i + 1) * len(queues) // n] for i in range(n)]
        now_ms = int(store.clock() * 1000)
        loop = asyncio.get_running_loop()
        try:
            shards: list[Shard] = await asyncio.gather(*[
                loop.run_in_executor(self._pool, _shard, part, now_ms, openmetrics, i == 0, store.window_sums)
                for i, part in enumerate(slices)])
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a helper died or failed: serve this scrape here, restart them next
            log.warning("a /metrics helper process failed (%s: %s); this scrape is served by the worker itself, and "
                        "the helpers start again at the next one. If this repeats, set CCMON_SCRAPE_PROCESSES=0 and "
                        "report it", type(exc).__name__, exc)
            self.failures += 1
            self.close()
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
            log.info("starting %d helper processes for /metrics (CCMON_SCRAPE_PROCESSES)", self.processes)
        if not self._starting.done():
            return False
        failed = self._starting.exception()
        self._starting = None
        if failed is not None:
            log.warning("the /metrics helper processes did not start (%s: %s); scrapes are served by the worker "
                        "itself for %.0f s, then they are tried again. Set CCMON_SCRAPE_PROCESSES=0 to stop trying",
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
            raise RuntimeError("the /metrics helper processes did not start; see the log")

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


def _shard(queues: list[str], now_ms: int, openmetrics: bool, first: bool, window_sums: bool) -> Shard:
    """One slice of the queues at ``now_ms``: its sections (each family's samples joined and encoded), its
    custom metrics' summed counters and, for the first slice, what belongs to no queue."""
    store: Store = _helper["store"]
    store.window_sums = window_sums

    async def read() -> Shard:
        with gc_paused():  # the whole snapshot lives until its lines are written (ccmon/gcpause.py)
            snap = await store.snapshot(now_ms=now_ms, only=queues, rollup_all=False, with_global=first, sums=True)
            sections = [(head, "".join(lines).encode())  # type: ignore[arg-type]
                        for head, lines in snapshot_sections(snap, openmetrics, whole=False)]
            return sections, snap["custom_sums"], snap["kpis"]  # type: ignore[return-value]

    return _helper["loop"].run_until_complete(read())  # type: ignore[no-any-return]
