"""CI's small version of the benchmark: the full bench path runs, and its oracle check holds.

Speed is not asserted here (bench/ prints figures); what is asserted is that the benchmark
itself works and that the worker's final snapshot equals the oracle after a fast run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
