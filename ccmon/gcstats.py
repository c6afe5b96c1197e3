"""How long Python's cyclic garbage collector stops this process, per generation.

A collection holds the GIL from start to end, so nothing else in the worker runs meanwhile: every
pause adds to the latency of the batch in flight. The worker's own exposition (``/metrics/worker``)
shows them as the histogram ``ccmon_worker_gc_pause_seconds{generation}``; bench/e2e.py reports the
same figures at the end of a run (docs/performance.md, "What the cyclic GC costs the worker").

Recording costs two ``perf_counter`` calls per collection; a busy worker collects a few times a
second (``tune_gc`` in ccmon/worker.py).
"""

from __future__ import annotations

import gc
import time
from bisect import bisect_left
from typing import Callable, Iterator, Optional

from prometheus_client.core import HistogramMetricFamily, Metric

# Upper bounds of the buckets, in seconds: a young collection takes ~0.1-50 ms, an old one up to a few hundred.
BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
GENERATIONS = 3


class GcPauses:
    """Counts and sums of collection times per generation; a ``gc.callbacks`` entry."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.buckets = [[0] * (len(BOUNDS) + 1) for _ in range(GENERATIONS)]  # the last one: above every bound
        self.sums = [0.0] * GENERATIONS
        self._started: Optional[float] = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = self.clock()
            return
        if self._started is None:  # installed while a collection was running
            return
        took = self.clock() - self._started
        self._started = None
        g = info["generation"]
        self.buckets[g][bisect_left(BOUNDS, took)] += 1
        self.sums[g] += took

    def counts(self) -> list[int]:
        """Collections so far per generation."""
        return [sum(b) for b in self.buckets]

    def family(self) -> Metric:
        """``ccmon_worker_gc_pause_seconds{generation}``."""
        h = HistogramMetricFamily(
            "ccmon_worker_gc_pause_seconds",
            "How long each cyclic garbage collection of this process took (it runs nothing else meanwhile), "
            "per generation (0 young ... 2 full).",
            labels=["generation"],
        )
        for g in range(GENERATIONS):
            cumulative, buckets = 0, []
            for bound, n in zip((*map(str, BOUNDS), "+Inf"), self.buckets[g]):
                cumulative += n
                buckets.append((bound, float(cumulative)))
            h.add_metric([str(g)], buckets, self.sums[g])
        return h


_installed: Optional[GcPauses] = None


def install() -> GcPauses:
    """Start recording this process's collections (once per process; later calls return the same recorder)."""
    global _installed
    if _installed is None:
        _installed = GcPauses()
        gc.callbacks.append(_installed)
    return _installed


def families() -> Iterator[Metric]:
    """The pause histogram when recording, else nothing."""
    if _installed is not None:
        yield _installed.family()
