"""Worker self-metrics kept as histogram fields in the Redis stats hash.

They ride in each batch's atomic commit, so they are counted exactly once and
every worker's ``/metrics`` serves the same global figures.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Iterable

from agents.config import HIST, hist_fields

BATCH = "batch_events"  # events per committed batch
E2E = "e2e_ms"  # event ts -> the Redis commit that applied it, in ms
COMMIT = "commit_us"  # duration of the Redis commit script, in microseconds

BOUNDS: dict[str, tuple[int, ...]] = {
    BATCH: (1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 50000),
    E2E: (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000),
    COMMIT: (500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000),
}
SCALE = {BATCH: 1, E2E: 1000, COMMIT: 1_000_000}  # stored units per reported unit (events, seconds, seconds)


def observe(stats: Counter[str], name: str, value: int) -> None:
    """Count one observation of a self-metric histogram into ``stats``."""
    bucket, total = hist_fields(name, BOUNDS[name], value)
    stats[bucket] += 1
    stats[total] += value


def observe_latencies(stats: Counter[str], now_ms: int, event_ms: Iterable[int]) -> None:
    """Count each event's end-to-end latency at ``now_ms`` (events stamped ahead of the clock count as 0)."""
    bounds = BOUNDS[E2E]
    counts = [0] * (len(bounds) + 1)
    total = 0
    for ts in event_ms:
        lat = now_ms - ts if ts < now_ms else 0
        total += lat
        counts[bisect_left(bounds, lat)] += 1
    for i, n in enumerate(counts):
        if n:
            stats[f"{HIST}{E2E}:{bounds[i] if i < len(bounds) else 'inf'}"] += n
    if any(counts):
        stats[f"{HIST}{E2E}:sum"] += total
