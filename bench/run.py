"""Run every benchmark, print one table of figures, and write it to ``bench/results/``.

    .venv/bin/python bench/run.py            # the full run (about 25 minutes on the 2-core machine)
    .venv/bin/python bench/run.py --quick    # a small smoke version (about a minute)

Throughput figures are medians over ``--repeat`` runs; each run also compares the worker's final
snapshot with the oracle and fails on any difference. Nothing here asserts on speed: the figures
are printed, with the targets beside them, and kept in ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import e2e  # noqa: E402
import scrape  # noqa: E402

from ccmon.scrape_pool import SHARD_MIN_QUEUES  # noqa: E402
from ccmon.services import start_embedded  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """Cores, CPU model and Python, for the record."""
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import os

    # Which interpreter, too: its build matters (an optimized build ran the worker 13-20% faster here,
    # docs/performance.md).
    return (f"{os.cpu_count()} cores, {model or platform.machine()}, Python {platform.python_version()} "
            f"({os.path.realpath(sys.executable)})")


def main() -> None:
    """Run the benchmarks and write the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small smoke run (CI uses this)")
    ap.add_argument("--events", type=int, help="events per throughput run (default 1,000,000; quick 50,000)")
    ap.add_argument("--repeat", type=int, help="throughput runs to take the median of (default 3; quick 1)")
    ap.add_argument("--memory-events", type=int, help="events of the memory run (default 10,000,000; quick 200,000)")
    ap.add_argument("--scrape-queues", type=int, help="queues of the scrape run (default 500; quick 20)")
    ap.add_argument("--latency-seconds", type=float, help="length of the latency run (default 60; quick 5)")
    ap.add_argument("--only", default="throughput,parts,scaling,latency,memory,scrape",
                    help="comma-separated subset of: throughput, parts, scaling, latency, memory, scrape")
    ap.add_argument("--out", type=Path, help="results file (default bench/results/run[-quick].md)")
    args = ap.parse_args()
    q = args.quick
    n = args.events or (50_000 if q else 1_000_000)
    repeat = args.repeat or (1 if q else 3)
    mem_n = args.memory_events or (200_000 if q else 10_000_000)
    scrape_q = args.scrape_queues or (20 if q else 500)
    lat_s = args.latency_seconds or (5 if q else 60)
    only = set(args.only.split(","))
    rows: list[tuple[str, str, str]] = []  # (figure, value, target)
    started = time.monotonic()

    def show(figure: str, value: str, target: str = "") -> None:
        rows.append((figure, value, target))
        e2e.status("")
        print(f"{figure:<58} {value:>24}  {target}", flush=True)

    one = None
    if only & {"throughput", "scaling", "parts"}:
        runs = [e2e.throughput(n, 1) for _ in range(repeat)]
        one = statistics.median(r["events_per_s"] for r in runs)
        raw = statistics.median(r["raw_events_per_s"] for r in runs)
        ratio = statistics.median(r["ratio_to_raw"] for r in runs)
        show(f"throughput, 1 worker ({n:,} events, median of {repeat})", f"{one:,.0f} ev/s", "≥ 100,000 ev/s")
        show("raw aiokafka consumer + json.loads, same topics", f"{raw:,.0f} ev/s", "")
        show("ratio worker / raw consumer", f"{ratio:.3f}", "≥ 0.25")
        show("oracle check (final snapshot == oracle)", f"equal, {runs[0]['oracle_queues']} queues", "equal")
        show("worker CPU per event (all threads)",
             f"{statistics.median(r['worker_cpu_us_per_event'] for r in runs):,.1f} µs", "")
        show("worker RSS after the run", f"{statistics.median(r['worker_rss_mib'] for r in runs):,.0f} MiB", "")
        gc = min(runs, key=lambda r: abs(r["events_per_s"] - one))["gc"]  # the median run's
        show("cyclic GC in the worker, median run: collections young / middle / full, share of its CPU",
             " / ".join(str(n) for n in gc["collections"])
             + f", {statistics.median(r['gc_share_of_cpu'] for r in runs) * 100:.1f}%", "")
    if "parts" in only:
        # A worker that leaves a part of its work out (e2e.py --without), median of as many runs: where its CPU goes.
        whole = statistics.median(r["worker_cpu_us_per_event"] for r in runs)
        cpu: dict[str, float] = {}
        for part, what in (("core", "without its domain cores"),
                           ("writes", "without encoding or writing what the cores produce")):
            pruns = [e2e.throughput(n, 1, without=part) for _ in range(repeat)]
            cpu[part] = statistics.median(r["worker_cpu_us_per_event"] for r in pruns)
            show(f"worker {what} (--without {part}; counts not kept), median of {repeat}",
                 f"{statistics.median(r['events_per_s'] for r in pruns):,.0f} ev/s, {cpu[part]:,.1f} µs", "")
        around, cores = cpu["core"], cpu["writes"]
        show("worker CPU per event: around the cores / the cores / their writes",
             f"{around:,.1f} / {cores - around:,.1f} / {whole - cores:,.1f} µs", "")
    if "scaling" in only:
        runs2 = [e2e.throughput(n, 2) for _ in range(repeat)]
        two = statistics.median(r["events_per_s"] for r in runs2)
        show(f"throughput, 2 workers ({n:,} events, median of {repeat})", f"{two:,.0f} ev/s", "")
        show("scaling, 2 workers / 1 worker", f"{two / (one or 1):.2f}×", "≥ 1.4×")
    if "latency" in only:
        lat = e2e.latency(seconds=lat_s)
        show(f"latency ts → /api/snapshot at {lat['rate_sent']:,.0f} ev/s, p50 ({lat['probes']} probes)",
             f"{lat['p50_ms']:,.0f} ms", "< 100 ms")
        show("latency p99", f"{lat['p99_ms']:,.0f} ms", "< 500 ms")
        show("cyclic GC in the worker while sending: collections, seconds, over 50 ms",
             f"{sum(lat['gc']['collections'])}, {sum(lat['gc']['seconds']):.2f} s, {sum(lat['gc']['over_50ms'])}", "")
        show("CPU during the latency run, % of one core: worker / broker / Redis / this harness",
             " / ".join(str(lat["cpu_percent"][k]) for k in ("worker", "broker", "redis", "harness")), "")
        # The floor under those figures: the same traffic with no worker, timed as the broker hands it out.
        floor = e2e.latency(seconds=lat_s, broker_only=True)
        show("latency floor: the broker alone (bare consumer at the log ends), p50 / p99",
             f"{floor['p50_ms']:,.0f} / {floor['p99_ms']:,.0f} ms", "")
        show("latency p50 per 10 s of the run, ms: worker (broker alone)",
             " ".join(f"{a}({b})" for a, b in zip(lat["p50_ms_per_10s"], floor["p50_ms_per_10s"])), "")
        show("broker CPU, % of one core: with the worker / alone",
             f"{lat['cpu_percent']['broker']} / {floor['cpu_percent']['broker']}", "")
    if "memory" in only:
        mem = e2e.memory(mem_n, max(1, mem_n // 10))
        samples = mem["samples"]
        show("memory run: events/s published", f"{mem['rate']:,.0f}" if mem["rate"] else "unpaced", "")
        show(f"worker RSS at {samples[0][0]:,} events", f"{samples[0][1]:,.0f} MiB", "")
        show(f"worker RSS at {samples[-1][0]:,} events", f"{samples[-1][1]:,.0f} MiB",
             "flat within 10%")
        show("RSS growth first → last", f"{mem['growth'] * 100:+.1f}%", "within ±10%")
        rss = [s[1] for s in samples]
        show("worker RSS over the run, min – max", f"{min(rss):,.0f} – {max(rss):,.0f} MiB", "")
        show("events published but not yet committed at the samples, max (the producer shares the machine)",
             f"{max(s[3] for s in samples):,}", "")
        held = samples[-1][2]
        show("held entities at the end (calls / tickets / agents)",
             f"{held['calls']:,} / {held['tickets']:,} / {held['agents']:,}", "steady")
        for domain, (count, size) in mem["states"].items():
            show(f"state per held {domain[:-1]} (encoded, in Redis; {count:,} held)", f"{size:,.0f} bytes", "")
    if "scrape" in only:
        with tempfile.TemporaryDirectory(prefix="ccmon-bench-") as tmp:
            emb = start_embedded(Path(tmp), need_broker=False)
            try:
                e2e.status(f"scrape: filling {scrape_q} queues with an hour of traffic…")
                out = asyncio.run(scrape.run(emb.redis_url or "", [scrape_q], 3 if q else 9, 60))
            finally:
                emb.stop()
        cells = [c.strip() for c in out[0].strip("|").split("|")]
        show(f"/metrics for {scrape_q} queues as Prometheus asks (OpenMetrics; {scrape.HELPERS} helper processes "
             f"from {SHARD_MIN_QUEUES} queues on), warm median ({cells[2]} samples)",
             f"{cells[4]} ms", "< 250 ms at 500")
        show(f"/metrics for {scrape_q} queues, cold median (window sums rebuilt)", f"{cells[6]} ms", "")
        show(f"/metrics for {scrape_q} queues in the text format (curl), warm median", f"{cells[9]} ms", "")
        show(f"/metrics for {scrape_q} queues rendered in one process (CCMON_SCRAPE_PROCESSES=0), warm median",
             f"{cells[10]} ms", "")
    took = time.monotonic() - started
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# ccmon benchmark {'(quick) ' if q else ''}{stamp}", "", f"Machine: {machine()}. "
             f"Embedded broker (Tansu) and Redis on the same machine. Took {took:,.0f} s.", "",
             "| figure | value | target |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    out_path = args.out or RESULTS / ("run-quick.md" if q else "run.md")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(lines) + "\n")
    (out_path.with_suffix(".json")).write_text(json.dumps({"when": stamp, "machine": machine(), "rows": rows}, indent=1))
    print(f"\nwrote {out_path} ({took:,.0f} s)")


if __name__ == "__main__":
    main()
