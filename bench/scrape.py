"""Scrape latency of ``/metrics`` at 50 and 500 queues, against a real Redis.

Fills Redis through the real commit path (the pure core's deltas, ``Store.commit``)
with an hour of simulated traffic per queue, then times what the ``/metrics``
handler does: read the snapshot and the worker status from Redis and render the
exposition, through the worker's ``ScrapePool`` (``--processes`` helper processes from 100 queues on; the
default is ``CCMON_SCRAPE_PROCESSES``'s). Prints the median and p90 over repeated scrapes.

Each scrape asks for what Prometheus asks for by default: OpenMetrics first (``PROMETHEUS_ACCEPT``, the
``Accept`` header of Prometheus 2.42). The last two columns are warm scrapes in the classic text format, which
``curl`` and older scrapers get, and warm scrapes rendered in one process (``--processes 0``), alternated with
the others so that all three see the same moments of a drifting machine.

Two kinds of scrape: *warm* (the readers' window sums in Redis are at the current
range, as they are when anything read the snapshot in the last minute) and *cold*
(the sums deleted first, so every queue's are rebuilt from its buckets, as after a
Redis without them or a read idle for more than a minute). ``--plain`` measures reads
that ignore the kept sums and sum the buckets in Redis instead.

    .venv/bin/python bench/scrape.py --queues 50,500 --repeat 15
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.config import MetricsConfig  # noqa: E402
from agents.core import CORES, BatchResult, PartitionState, apply_batch, encode_state  # noqa: E402
from ccmon.exposition import scrape as scrape_metrics  # noqa: E402
from ccmon.scrape_pool import ScrapePool  # noqa: E402
from ccmon.services import start_redis, stop  # noqa: E402
from ccmon.settings import Settings  # noqa: E402
from ccmon.store import (AGENT_WINDOW_SUMS, AGENT_WINDOW_WAITS, PREFIX, WINDOW_SUMS, WINDOW_WAITS, Commit,  # noqa: E402
                         Store)
from streams.events import Event, event_from_dict  # noqa: E402
from streams.partitioning import partition_for  # noqa: E402
from streams.simulator import SimConfig, generate  # noqa: E402

PARTITIONS = 4
HELPERS = Settings.model_fields["scrape_processes"].default  # a worker's CCMON_SCRAPE_PROCESSES by default
# What Prometheus 2.x sends (checked against Debian's prometheus 2.42 with a logging HTTP server).
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


async def fill(store: Store, cfg: MetricsConfig, queues: int, minutes: float, calls_per_hour: float = 120,
               agents_per_queue: int = 6, tickets_per_hour: float = 20) -> int:
    """Commit ``minutes`` of traffic for ``queues`` queues ending now; return the event count."""
    sim = SimConfig(seed=3, queues=tuple(f"queue-{i:03d}" for i in range(queues)),
                    arrival_rate_per_hour=calls_per_hour, agents_per_queue=agents_per_queue,
                    ticket_rate_per_hour=tickets_per_hour)
    parts: dict[tuple[str, int], PartitionState] = defaultdict(PartitionState)
    offsets: dict[tuple[str, int], int] = defaultdict(lambda: -1)
    pending: dict[tuple[str, int], list[Event]] = defaultdict(list)
    n = 0

    async def flush(key: tuple[str, int]) -> None:
        res = apply_batch(CORES[key[0]], parts[key], pending[key], cfg, BatchResult())
        tp = (f"bench.{key[0]}", key[1])
        # The entity states too, as the worker commits them: the wallboard reads the agents' (bench/reads.py).
        states = {tp: {k: None if v is None else encode_state(v) for k, v in res.changed.items()}}
        commit = Commit(deltas=res.deltas, queues=res.queues, offsets={tp: (offsets[key], offsets[key] + 1)},
                        states=states)
        await store.commit(commit)
        offsets[key] += 1
        pending[key] = []

    for raw in generate(sim, time.time() - minutes * 60, minutes * 60):
        ev = event_from_dict(raw)
        assert isinstance(ev, Event)
        key = (ev.domain, partition_for(ev.entity_id, PARTITIONS))
        pending[key].append(ev)
        n += 1
        if len(pending[key]) >= 2000:
            await flush(key)
    for key in [k for k, v in pending.items() if v]:
        await flush(key)
    return n


async def scrape(store: Store, accept: str | None = PROMETHEUS_ACCEPT,
                 pool: ScrapePool | None = None) -> tuple[float, int, int]:
    """One scrape as ``accept`` asks for it (None: the text format), through ``pool`` (None: in this process alone):
    seconds, body bytes, sample lines."""
    started = time.perf_counter()
    status = await store.status()
    body, _ = await (pool.scrape(store, status, accept) if pool else scrape_metrics(store, status, accept))
    elapsed = time.perf_counter() - started
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return elapsed, len(body), samples


async def drop_window_sums(store: Store) -> None:
    """Delete every queue's window sums: the next read rebuilds them from the buckets."""
    for kind in (WINDOW_SUMS, WINDOW_WAITS, AGENT_WINDOW_SUMS, AGENT_WINDOW_WAITS):
        keys = [k async for k in store.redis.scan_iter(match=f"{PREFIX}{kind}:*", count=1000)]
        if keys:
            await store.redis.delete(*keys)


def figures(times: list[float]) -> tuple[float, float]:
    """Median and p90, in ms."""
    times = sorted(times)
    return statistics.median(times) * 1000, times[min(len(times) - 1, int(len(times) * 0.9))] * 1000


async def run(url: str, sizes: list[int], repeat: int, minutes: float, plain: bool = False,
              cold: int = 3, processes: int = HELPERS) -> list[str]:
    """Fill and scrape at each size; return the table rows."""
    cfg = MetricsConfig()
    rows = []
    for queues in sizes:
        store = Store(url, cfg)
        store.window_sums = not plain
        await store.redis.flushdb()
        t0 = time.monotonic()
        events = await fill(store, cfg, queues, minutes)
        filled = time.monotonic() - t0
        pool = ScrapePool(url, cfg, processes=processes)
        await pool.wait_ready()  # a worker starts them at its first scrape of enough queues
        try:
            await scrape(store, pool=pool)  # warm the script cache and connection pools
            colds = []
            for _ in range(cold if store.window_sums else 0):
                await drop_window_sums(store)
                colds.append((await scrape(store, pool=pool))[0])
            times, texts, alone = [], [], []
            for _ in range(repeat):
                elapsed, size, samples = await scrape(store, pool=pool)
                times.append(elapsed)
                texts.append((await scrape(store, None, pool))[0])
                alone.append((await scrape(store))[0])
        finally:
            pool.close()
        median, p90 = figures(times)
        cold_cells = "| {:,.0f} | {:,.0f} ".format(*figures(colds)) if colds else "| – | – "
        rows.append(f"| {queues} | {events:,} | {samples:,} | {size / 1024:,.0f} | {median:,.0f} | {p90:,.0f} "
                    f"{cold_cells}| {filled:,.0f} | {figures(texts)[0]:,.0f} | {figures(alone)[0]:,.0f} |")
        print(rows[-1], flush=True)
        await store.close()
    return rows


def main() -> None:
    """Run the benchmark and print a table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queues", default="50,500", help="comma-separated queue counts")
    ap.add_argument("--repeat", type=int, default=15, help="scrapes per size (median and p90 of these)")
    ap.add_argument("--minutes", type=float, default=60, help="minutes of traffic per queue")
    ap.add_argument("--cold", type=int, default=5, help="cold scrapes per size (window sums rebuilt from the buckets)")
    ap.add_argument("--plain", action="store_true", help="reads sum the buckets, ignoring the kept window sums")
    ap.add_argument("--processes", type=int, default=HELPERS,
                    help="helper processes (CCMON_SCRAPE_PROCESSES; 0: render in one process)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            print("| queues | events | samples | body KiB | warm median ms | warm p90 ms | cold median ms | cold p90 ms "
                  "| fill s | text format, warm median ms | one process, warm median ms |")
            print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            asyncio.run(run(url, [int(q) for q in args.queues.split(",")], args.repeat, args.minutes, args.plain,
                            args.cold, args.processes))
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
