"""CI's small version of the benchmark: the full bench path runs, and its oracle check holds.

Speed is not asserted here (bench/ prints figures); what is asserted is that the benchmark
itself works and that the worker's final snapshot equals the oracle after a fast run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_benchmark_runs_and_matches_the_oracle(tmp_path: Path) -> None:
    out = tmp_path / "run.md"
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "throughput,latency",
         "--events", "30000", "--latency-seconds", "3", "--out", str(out)],
        capture_output=True, timeout=280, cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr.decode()[-3000:] + res.stdout.decode()[-2000:]
    table = out.read_text()
    assert "| oracle check (final snapshot == oracle) | equal, 50 queues | equal |" in table
    for figure in ("throughput, 1 worker", "raw aiokafka consumer", "ratio worker / raw consumer", "latency p99",
                   "latency floor: the broker alone", "cyclic GC in the worker"):
        assert figure in table, table


@pytest.mark.parametrize("part", ["core", "writes"])
def test_a_run_without_a_part_of_the_work_leaves_it_out(part: str) -> None:
    """``e2e.py throughput --without`` times a worker that leaves out its cores or their writes: the run says so, and
    the benchmark itself refuses a run where the worker did the whole work (no counter may reach Redis)."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "e2e.py"), "throughput", "--events", "20000", "--without", part],
        capture_output=True, timeout=240, cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr.decode()[-3000:] + res.stdout.decode()[-2000:]
    out = json.loads(res.stdout)
    assert out["without"] == part and out["events"] == 20000 and "oracle_queues" not in out
    assert out["events_per_s"] > 0 and out["worker_cpu_us_per_event"] > 0
