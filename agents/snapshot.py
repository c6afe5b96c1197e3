"""Pure assembly of the snapshot: raw window counters in, named metrics and ratios out.

Both the Redis reader and the oracle end here, so a ratio is computed by one
function from integer counters and the two paths can be compared exactly.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from typing import Iterable, Mapping

from agents.config import MetricsConfig, day_of, window_buckets
from agents.core import (
    ABANDONED,
    ANSWER_WAIT_MS,
    ANSWERED,
    ANSWERED_IN_SL,
    BLOCKED,
    BLOCKED_REASON,
    CALLS_WAITING,
    OFFERED,
    SHORT_ABANDONED,
    TIMED_OUT,
    WindowKey,
)

Counts = Mapping[str, int]


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or ``None`` when the denominator is 0 (never 0 or 1)."""
    return numerator / denominator if denominator else None


def window_view(c: Counts) -> dict[str, object]:
    """The call metrics of one window, from its summed counters."""
    answered = c.get(ANSWERED, 0)
    abandoned = c.get(ABANDONED, 0)
    short = c.get(SHORT_ABANDONED, 0)
    return {
        "offered": c.get(OFFERED, 0),
        "answered": answered,
        "answered_in_sl": c.get(ANSWERED_IN_SL, 0),
        "abandoned": abandoned,
        "short_abandoned": short,
        "timed_out": c.get(TIMED_OUT, 0),
        "blocked": c.get(BLOCKED, 0),
        "blocked_by_reason": {
            k[len(BLOCKED_REASON) :]: v for k, v in sorted(c.items()) if k.startswith(BLOCKED_REASON) and v
        },
        "asa_seconds": ratio(c.get(ANSWER_WAIT_MS, 0) / 1000, answered),
        "service_level": ratio(c.get(ANSWERED_IN_SL, 0), answered + abandoned - short),
    }


def now_view(g: Counts) -> dict[str, object]:
    """The point-in-time gauges of one queue."""
    return {"calls_waiting": g.get(CALLS_WAITING, 0)}


def build_snapshot(
    windows: Mapping[str, Mapping[str, Counts]],
    gauges: Mapping[str, Counts],
    window_names: tuple[str, ...],
    now_ms: int,
) -> dict[str, object]:
    """The snapshot document: ``{"generated_at", "queues": {q: {"now", <window>...}}}``."""
    queues: dict[str, object] = {}
    for queue in sorted(set(windows) | set(gauges)):
        per = windows.get(queue, {})
        view: dict[str, object] = {"now": now_view(gauges.get(queue, {}))}
        for name in window_names:
            view[name] = window_view(per.get(name, {}))
        queues[queue] = view
    generated = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")
    return {"generated_at": generated, "queues": queues}


def needed_keys(queues: Iterable[str], cfg: MetricsConfig, now_ms: int) -> list[WindowKey]:
    """The counter hashes a snapshot at ``now_ms`` reads: buckets, today's day and the gauges."""
    width = cfg.bucket_seconds
    buckets = window_buckets(width, cfg.longest_window_seconds, now_ms) if cfg.windows else range(0)
    keys: list[WindowKey] = []
    for queue in queues:
        keys += [("b", queue, b) for b in buckets]
        keys.append(("d", queue, day_of(now_ms, cfg.queue(queue))))
        keys.append(("n", queue, ""))
    return keys


def assemble(
    queues: Iterable[str], data: Mapping[WindowKey, Counts], cfg: MetricsConfig, now_ms: int
) -> dict[str, object]:
    """Sum the stored hashes into windows and build the snapshot (the reader's pure half)."""
    width = cfg.bucket_seconds
    windows: dict[str, dict[str, dict[str, int]]] = {}
    gauges: dict[str, Counts] = {}
    for queue in queues:
        per: dict[str, dict[str, int]] = {}
        for wname, wsec in cfg.windows:
            total: dict[str, int] = defaultdict(int)
            for b in window_buckets(width, wsec, now_ms):
                for k, v in data.get(("b", queue, b), {}).items():
                    total[k] += v
            per[wname] = total
        per["today"] = dict(data.get(("d", queue, day_of(now_ms, cfg.queue(queue))), {}))
        windows[queue] = per
        gauges[queue] = data.get(("n", queue, ""), {})
    return build_snapshot(windows, gauges, cfg.window_names, now_ms)
