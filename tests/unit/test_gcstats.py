"""The worker's record of cyclic-GC pauses (ccmon/gcstats.py) and how /metrics/worker shows it."""

from __future__ import annotations

import gc

from prometheus_client.parser import text_string_to_metric_families

from ccmon import gcstats
from ccmon.exposition import render_worker, text_format
from ccmon.gcstats import BOUNDS, GcPauses


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def collect(rec: GcPauses, clock: Clock, generation: int, seconds: float) -> None:
    clock.now = 0.0  # so the pause is exactly ``seconds``
    rec("start", {"generation": generation, "collected": 0, "uncollectable": 0})
    clock.now = seconds
    rec("stop", {"generation": generation, "collected": 0, "uncollectable": 0})


def parsed(body: bytes) -> dict[tuple[str, frozenset], float]:
    """Each sample of a text exposition, by name and labels."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


def samples(rec: GcPauses) -> dict[tuple[str, frozenset], float]:
    return parsed(text_format([rec.family()]))


def test_pauses_land_in_their_bucket_per_generation() -> None:
    clock = Clock()
    rec = GcPauses(clock)
    for g, seconds in [(0, 0.0004), (0, 0.001), (0, 0.03), (1, 0.12), (2, 2.0)]:
        collect(rec, clock, g, seconds)
    s = samples(rec)

    def bucket(g: int, le: str) -> float:
        return s[("ccmon_worker_gc_pause_seconds_bucket", frozenset({"generation": str(g), "le": le}.items()))]

    # le is inclusive: a pause of exactly 1 ms counts under le="0.001"
    assert bucket(0, "0.001") == 2 and bucket(0, "0.025") == 2 and bucket(0, "0.05") == 3 and bucket(0, "+Inf") == 3
    assert bucket(1, "0.1") == 0 and bucket(1, "0.25") == 1
    assert bucket(2, "1.0") == 0 and bucket(2, "+Inf") == 1  # longer than every bound
    count = {g: s[("ccmon_worker_gc_pause_seconds_count", frozenset({"generation": str(g)}.items()))] for g in range(3)}
    assert count == {0: 3, 1: 1, 2: 1} and rec.counts() == [3, 1, 1]
    assert abs(s[("ccmon_worker_gc_pause_seconds_sum", frozenset({"generation": "0"}.items()))] - 0.0314) < 1e-9
    assert len(BOUNDS) + 1 == sum(1 for k in s if k[0].endswith("_bucket") and ("generation", "0") in k[1])


def test_a_stop_without_its_start_is_ignored() -> None:
    clock = Clock()
    rec = GcPauses(clock)
    rec("stop", {"generation": 0, "collected": 0, "uncollectable": 0})  # installed mid-collection
    assert rec.counts() == [0, 0, 0]


def test_installed_recorder_times_real_collections_and_shows_on_the_worker_exposition() -> None:
    rec = gcstats.install()
    try:
        assert gcstats.install() is rec and gc.callbacks.count(rec) == 1  # once per process
        before = rec.counts()[2]
        gc.collect()
        assert rec.counts()[2] == before + 1 and rec.sums[2] > 0
        got = parsed(render_worker(True, 4, None)[0])
        assert got[("ccmon_worker_gc_pause_seconds_count", frozenset({"generation": "2"}.items()))] >= 1
    finally:
        gc.callbacks.remove(rec)
        gcstats._installed = None
