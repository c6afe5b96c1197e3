"""Snapshot reads at the contact-center mix of the end-to-end benchmark, against a real Redis.

Fills Redis through the real commit path with an hour of simulated traffic for 50 queues
(3,000 calls/h and 600 tickets/h per queue, 60 agents each: the mix of ``e2e.py``), then
times the reads a worker makes of it:

- the *full* snapshot, as ``/api/snapshot`` and the wallboard read it (every queue, the
  all-queues roll-up and each window's per-agent survey views);
- the *alert evaluator's* read, once a second while commits flow: no roll-up and no
  per-agent views, which no rule reads;
- a *wallboard update*, built up to three times a second while a screen is open: the full
  snapshot, the status, every agent's state, the tiles' payload and its JSON. This is what
  one process spends on it: the worker's, or from 20 queues on a helper's (``ccmon/scrape_pool.py``).

Prints the median and p90 of repeated reads, and the peak of memory allocated during one
read of each (``tracemalloc``; the read runs slower while it traces).

    .venv/bin/python bench/reads.py --queues 50 --repeat 15
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Awaitable, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scrape  # noqa: E402
from agents.config import MetricsConfig  # noqa: E402
from alerts.config import AlertsConfig, builtin_rules  # noqa: E402
from ccmon.services import start_redis, stop  # noqa: E402
from ccmon.store import Store  # noqa: E402
from ccmon.wallboard import message, read_payload  # noqa: E402

READS = {"full (/api/snapshot)": {}, "alert evaluator": {"rollup_all": False, "agents": False}}
WALLBOARD = "wallboard update"


def reader(store: Store, name: str) -> Callable[[], Awaitable[object]]:
    """One read of the kind ``name``, as the worker (or its helper) makes it."""
    if name == WALLBOARD:
        rules = AlertsConfig(rules=builtin_rules())

        async def update() -> object:
            payload = await read_payload(store, rules, [], "bench.agents", scrape.PARTITIONS, True, time.time())
            return message(payload)
        return update
    return lambda: store.snapshot(**READS[name])


async def run(url: str, queues: int, minutes: float, repeat: int) -> list[str]:
    """Fill, then time each read; return the table rows."""
    cfg = MetricsConfig()
    store = Store(url, cfg)
    await store.redis.flushdb()
    print(f"filling {queues} queues with {minutes:g} minutes of traffic…", file=sys.stderr, flush=True)
    events = await scrape.fill(store, cfg, queues, minutes, calls_per_hour=3000, agents_per_queue=60,
                              tickets_per_hour=600)
    rows = []
    for name in [*READS, WALLBOARD]:
        read = reader(store, name)
        await read()  # warm: the script cache, the connection, the window sums
        times = []
        for _ in range(repeat):
            gc.disable()  # as the worker's readers do (ccmon/gcpause.py)
            started = time.perf_counter()
            snap = await read()
            times.append(time.perf_counter() - started)
            del snap
            gc.enable()
        tracemalloc.start()
        gc.disable()
        snap = await read()
        held, peak = tracemalloc.get_traced_memory()
        del snap
        gc.enable()
        tracemalloc.stop()
        median, p90 = scrape.figures(times)
        rows.append(f"| {name} | {queues} | {events:,} | {median:,.0f} | {p90:,.0f} | {peak / 2**20:,.1f} | "
                    f"{held / 2**20:,.1f} |")
        print(rows[-1], flush=True)
    await store.close()
    return rows


def main() -> None:
    """Run the benchmark and print a table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queues", type=int, default=50)
    ap.add_argument("--minutes", type=float, default=60, help="minutes of traffic per queue")
    ap.add_argument("--repeat", type=int, default=15, help="reads of each kind (median and p90 of these)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            print("| read | queues | events | median ms | p90 ms | peak MiB allocated | MiB held by the result |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            asyncio.run(run(url, args.queues, args.minutes, args.repeat))
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
