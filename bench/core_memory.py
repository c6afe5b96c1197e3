"""Memory of the streaming core over a long simulated run: flat, with the state per entity in bytes.

Runs the simulator's events through the pure core (no broker, no Redis), in batches
per partition as the worker does, and prints resident memory and live entity
counts every million events.

    .venv/bin/python bench/core_memory.py --events 3000000
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.config import MetricsConfig  # noqa: E402
from agents.core import CORES, BatchResult, PartitionState, apply_batch, encode_state  # noqa: E402
from streams.events import Event, event_from_dict  # noqa: E402
from streams.partitioning import partition_for  # noqa: E402
from streams.simulator import SimConfig, generate  # noqa: E402


def rss_mb() -> float:
    """Current resident set size in MiB (from /proc)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    """Run the benchmark and print a table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=3_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--report", type=int, default=1_000_000)
    args = ap.parse_args()

    cfg = MetricsConfig()
    sim = SimConfig(seed=9, queues=tuple(f"q{i:02d}" for i in range(10)), arrival_rate_per_hour=600,
                    agents_per_queue=40)
    parts: dict[tuple[str, int], PartitionState] = defaultdict(PartitionState)
    pending: dict[tuple[str, int], list[Event]] = defaultdict(list)
    n = 0
    started = time.monotonic()
    print(f"{'events':>10} {'rss MiB':>8} {'calls':>8} {'agents':>7} {'tickets':>8} {'bytes/call':>10} "
          f"{'bytes/agent':>11} {'bytes/ticket':>12} {'ev/s':>8}")

    def flush(key: tuple[str, int]) -> None:
        apply_batch(CORES[key[0]], parts[key], pending[key], cfg, BatchResult())
        pending[key] = []

    for raw in generate(sim, 1_795_000_000.0, None):
        if n >= args.events:
            break
        ev = event_from_dict(raw)
        n += 1
        if isinstance(ev, Event) and ev.domain in CORES:
            key = (ev.domain, partition_for(ev.entity_id, args.partitions))
            pending[key].append(ev)
            if len(pending[key]) >= args.batch:
                flush(key)
        if n % args.report == 0:
            gc.collect()
            calls = [s for (d, _), p in parts.items() if d == "calls" for s in p.states.values()]
            agents = [s for (d, _), p in parts.items() if d == "agents" for s in p.states.values()]
            per_call = sum(len(encode_state(s)) for s in calls) / max(1, len(calls))
            per_agent = sum(len(encode_state(s)) for s in agents) / max(1, len(agents))
            tickets = [s for (d, _), p in parts.items() if d == "tickets" for s in p.states.values()]
            per_ticket = sum(len(encode_state(s)) for s in tickets) / max(1, len(tickets))
            rate = n / (time.monotonic() - started)
            print(f"{n:>10} {rss_mb():>8.1f} {len(calls):>8} {len(agents):>7} {len(tickets):>8} {per_call:>10.0f} "
                  f"{per_agent:>11.0f} {per_ticket:>12.0f} {rate:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
