"""The snapshot views as they were before the scrape speed-up (agents/snapshot.py at the commit before it), kept
verbatim as the reference the faster views must equal: tests/unit/test_snapshot_views.py."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Mapping, Optional

from agents import erlang
from agents import tickets as T
from agents.config import HIST, MetricsConfig, QueueConfig, window_buckets
from agents.core import (  # noqa: F401
    ABANDONED,
    ABANDONED_IN_SL,
    ACW_MS,
    AGENT_GAUGE,
    AGENT_MS,
    BY_AGENT,
    CES_SUM,
    CSAT_SATISFIED,
    CUSTOM,
    GLOBAL,
    KPI,
    KPI_HELD,
    KPI_SCALE,
    NPS_DETRACTORS,
    NPS_PROMOTERS,
    SURVEY,
    TICKETS_CREATED,
    ANSWER_WAIT_MS,
    ANSWERED,
    ANSWERED_IN_SL,
    BLOCKED,
    BLOCKED_REASON,
    HANDLED,
    HOLD_MS,
    OCCUPANCY_STATES,
    OFFERED,
    SHORT_ABANDONED,
    STAFFED,
    TALK_MS,
    TIMED_OUT,
    TOTAL,
    WAIT_HIST,
    WRAPUPS,
    Z_OPEN,
    Z_WAIT,
    Z_WAITING,
    WindowKey,
)

Counts = Mapping[str, int]
ARRIVAL = "_arrival"  # the forecast's arrival window (last 15 minutes)
AHT = "_aht"  # the forecast's AHT window (last hour)
AGENT_STATES = ("available", "on_call", "wrap_up", "away")


from agents.snapshot import QueueRaw  # noqa: E402  (the same input type)


@dataclass
class _UnusedQueueRaw:
    """Everything the snapshot needs of one queue, as integer sums."""

    windows: dict[str, dict[str, int]] = field(default_factory=dict)  # window name -> counters
    max_wait_ms: dict[str, Optional[int]] = field(default_factory=dict)  # window name -> longest wait
    gauges: dict[str, int] = field(default_factory=dict)  # agents_<state>, agents_staffed
    waiting: int = 0
    oldest_waiting_ms: Optional[int] = None
    open_since: dict[str, list[int]] = field(default_factory=dict)  # state -> since (ms) of each agent in it
    totals: dict[str, int] = field(default_factory=dict)  # lifetime counters and histogram fields


def ratio(numerator: float, denominator: float) -> Optional[float]:
    """``numerator / denominator``, or ``None`` when the denominator is 0 (never 0 or 1)."""
    return numerator / denominator if denominator else None


def service_level(c: Counts, formula: str) -> Optional[float]:
    """Service level by the queue's formula."""
    answered, abandoned, timed_out = c.get(ANSWERED, 0), c.get(ABANDONED, 0), c.get(TIMED_OUT, 0)
    in_sl, short = c.get(ANSWERED_IN_SL, 0), c.get(SHORT_ABANDONED, 0)
    if formula == "answered_only":
        return ratio(in_sl, answered)
    if formula == "abandons_met_if_short":
        return ratio(in_sl + c.get(ABANDONED_IN_SL, 0), answered + abandoned + timed_out)
    return ratio(in_sl, answered + abandoned + timed_out - short)


def survey_view(c: Counts, prefix: str = "") -> dict[str, object]:
    """CSAT, NPS and CES from summed survey counters (``prefix`` selects one agent's)."""
    n = {kind: c.get(prefix + SURVEY + kind, 0) for kind in ("csat", "nps", "ces")}
    promoters, detractors = c.get(prefix + NPS_PROMOTERS, 0), c.get(prefix + NPS_DETRACTORS, 0)
    nps = ratio((promoters - detractors) * 100, n["nps"])
    return {
        "survey_responses": n,
        "csat": ratio(c.get(prefix + CSAT_SATISFIED, 0), n["csat"]),
        "nps": nps,
        "ces_avg": ratio(c.get(prefix + CES_SUM, 0), n["ces"]),
    }


def custom_view(c: Counts, cfg: MetricsConfig) -> dict[str, object]:
    """User-defined counters and ratios; a ratio may use built-in counters by their snapshot name."""
    out: dict[str, object] = {cc.name: c.get(CUSTOM + cc.name, 0) for cc in cfg.custom_counters}

    def value(name: str) -> int:
        return c.get(CUSTOM + name, c.get(name, 0))

    for r in cfg.custom_ratios:
        out[r.name] = ratio(value(r.numerator), value(r.denominator))
    return out


def ticket_counts(c: Counts) -> dict[str, object]:
    """Ticket counters of one window."""
    by = {"channel": {}, "priority": {}}  # type: dict[str, dict[str, int]]
    for k, v in sorted(c.items()):
        if k.startswith(TICKETS_CREATED + ":") and v:
            _, dim, value = k.split(":", 2)
            by[dim][value] = v
    return {"tickets_created": c.get(TICKETS_CREATED, 0), "tickets_created_by_channel": by["channel"],
            "tickets_created_by_priority": by["priority"]}


def ticket_view(c: Counts) -> dict[str, object]:
    """Helpdesk metrics of one window."""
    created, solved = c.get(TICKETS_CREATED, 0), c.get(T.TICKETS_SOLVED, 0)
    reopened, escalated = c.get(T.TICKETS_REOPENED, 0), c.get(T.TICKETS_ESCALATED, 0)
    return {
        "tickets_solved": solved,
        "tickets_reopened": reopened,
        "tickets_escalated": escalated,
        "first_response_seconds_avg": ratio(c.get(T.FRT_MS, 0) / 1000, c.get(T.FRT_COUNT, 0)),
        "frt_sla": ratio(c.get(T.FRT_MET, 0), c.get(T.FRT_MET, 0) + c.get(T.FRT_MISSED, 0)),
        "resolution_seconds_avg": ratio(c.get(T.RES_MS, 0) / 1000, c.get(T.RES_COUNT, 0)),
        "resolution_sla": ratio(c.get(T.RES_MET, 0), c.get(T.RES_MET, 0) + c.get(T.RES_MISSED, 0)),
        "reopen_rate": ratio(reopened, solved),
        "escalation_rate": ratio(escalated, created),
        "fcr_rate": ratio(c.get(T.FCR_YES, 0), c.get(T.FCR_YES, 0) + c.get(T.FCR_NO, 0)),
    }


def window_view(c: Counts, max_wait_ms: Optional[int], formula: str, cfg: MetricsConfig) -> dict[str, object]:
    """Every metric of one window, from its summed counters."""
    view = call_view(c, max_wait_ms, formula)
    view.update(ticket_counts(c))
    view.update(ticket_view(c))
    view.update(survey_view(c))
    agents = sorted({k[len(BY_AGENT):].split(":", 1)[0] for k in c if k.startswith(BY_AGENT)})
    view["surveys_by_agent"] = {a: survey_view(c, f"{BY_AGENT}{a}:") for a in agents
                                if any(c.get(f"{BY_AGENT}{a}:{SURVEY}{k}", 0) for k in ("csat", "nps", "ces"))}
    view["custom"] = custom_view(c, cfg)
    return view


def call_view(c: Counts, max_wait_ms: Optional[int], formula: str) -> dict[str, object]:
    """The call metrics of one window, from its summed counters."""
    answered, abandoned, timed_out = c.get(ANSWERED, 0), c.get(ABANDONED, 0), c.get(TIMED_OUT, 0)
    offered, blocked, short = c.get(OFFERED, 0), c.get(BLOCKED, 0), c.get(SHORT_ABANDONED, 0)
    handled = c.get(HANDLED, 0)
    return {
        "offered": offered,
        "answered": answered,
        "answered_in_sl": c.get(ANSWERED_IN_SL, 0),
        "abandoned": abandoned,
        "short_abandoned": short,
        "timed_out": timed_out,
        "blocked": blocked,
        "blocked_by_reason": {
            k[len(BLOCKED_REASON):]: v for k, v in sorted(c.items()) if k.startswith(BLOCKED_REASON) and v
        },
        "handled": handled,
        "service_level": service_level(c, formula),
        "blocking_rate": ratio(blocked, offered + blocked),
        "abandon_rate": ratio(abandoned - short, answered + abandoned + timed_out - short),
        "asa_seconds": ratio(c.get(ANSWER_WAIT_MS, 0) / 1000, answered),
        "max_wait_seconds": None if max_wait_ms is None else max_wait_ms / 1000,
        "aht_seconds": ratio((c.get(TALK_MS, 0) + c.get(ACW_MS, 0)) / 1000, handled),
        "avg_talk_seconds": ratio(c.get(TALK_MS, 0) / 1000, handled),
        "avg_hold_seconds": ratio(c.get(HOLD_MS, 0) / 1000, handled),
        "avg_acw_seconds": ratio(c.get(ACW_MS, 0) / 1000, c.get(WRAPUPS, 0)),
    }


WAIT_OUTCOMES = ("answered", "abandoned", "timed_out")


def histogram(t: Counts, name: str, bounds: tuple[int, ...], scale: int = 1000) -> dict[str, object]:
    """A cumulative histogram over ``bounds`` (stored units; ``scale`` of them make one reported unit, ms -> s by
    default) from stored per-bucket counts.

    An observation is stored under the smallest bound that held it when it was
    counted, so after a bound is added older observations show in the next larger
    bucket: counts stay monotonic, never double.
    """
    prefix = f"{HIST}{name}:"
    stored: list[tuple[float, int]] = []
    for k, v in t.items():
        if k.startswith(prefix) and k != prefix + "sum" and v:
            b = k[len(prefix):]
            stored.append((float("inf") if b == "inf" else int(b), v))
    buckets = {repr(b / scale): sum(v for at, v in stored if at <= b) for b in bounds}
    count = sum(v for _, v in stored)
    buckets["+Inf"] = count
    return {"buckets": buckets, "sum": t.get(prefix + "sum", 0) / scale, "count": count}


def totals_view(t: Counts, q: QueueConfig) -> dict[str, object]:
    """Lifetime counters and histograms of one queue, for Prometheus's own rates and percentiles."""
    return {
        **{k: t.get(k, 0) for k in (OFFERED, ANSWERED, ANSWERED_IN_SL, ABANDONED, SHORT_ABANDONED, TIMED_OUT, BLOCKED,
                                     HANDLED, WRAPUPS, TICKETS_CREATED, T.TICKETS_SOLVED, T.TICKETS_REOPENED,
                                     T.TICKETS_ESCALATED)},
        "blocked_by_reason": {k[len(BLOCKED_REASON):]: v for k, v in sorted(t.items())
                              if k.startswith(BLOCKED_REASON) and v},
        "talk_seconds": t.get(TALK_MS, 0) / 1000,
        "hold_seconds": t.get(HOLD_MS, 0) / 1000,
        "acw_seconds": t.get(ACW_MS, 0) / 1000,
        "survey_responses": {kind: t.get(SURVEY + kind, 0) for kind in ("csat", "nps", "ces")},
        "wait_seconds": {o: histogram(t, WAIT_HIST + o, q.wait_bounds_ms) for o in WAIT_OUTCOMES},
        "first_response_seconds": histogram(t, T.FRT_HIST, q.frt_bounds_ms),
    }


def window_start_ms(cfg: MetricsConfig, window_s: int, now_ms: int) -> int:
    """Start of the first bucket a rolling window sums (open agent intervals count from here)."""
    return window_buckets(cfg.bucket_seconds, window_s, now_ms)[0] * 1000


def occupancy(raw: QueueRaw, window: str, window_s: int, cfg: MetricsConfig, now_ms: int) -> Optional[float]:
    """Busy (on call + wrap-up) over staffed-and-working time in a rolling window."""
    c = raw.windows.get(window, {})
    start = window_start_ms(cfg, window_s, now_ms)
    time_in = {}
    for st in OCCUPANCY_STATES:
        open_ms = sum(max(0, now_ms - max(since, start)) for since in raw.open_since.get(st, ()))
        time_in[st] = c.get(AGENT_MS + st, 0) + open_ms
    busy = time_in["on_call"] + time_in["wrap_up"]
    return ratio(busy, busy + time_in["available"])


def now_view(raw: QueueRaw, q: QueueConfig, cfg: MetricsConfig, now_ms: int) -> dict[str, object]:
    """The point-in-time gauges and forecasts of one queue."""
    g = raw.gauges
    view: dict[str, object] = {
        "calls_waiting": raw.waiting,
        "oldest_waiting_since": None if raw.oldest_waiting_ms is None else raw.oldest_waiting_ms / 1000,
        "longest_wait_seconds": None if raw.oldest_waiting_ms is None else max(0, now_ms - raw.oldest_waiting_ms) / 1000,
    }
    for st in AGENT_STATES:
        view[AGENT_GAUGE + st] = g.get(AGENT_GAUGE + st, 0)
    view[STAFFED] = g.get(STAFFED, 0)
    for name, seconds in cfg.windows:
        view[f"occupancy_{name}"] = occupancy(raw, name, seconds, cfg, now_ms)
    aht_c = raw.windows.get(AHT, {})
    aht = ratio((aht_c.get(TALK_MS, 0) + aht_c.get(ACW_MS, 0)) / 1000, aht_c.get(HANDLED, 0))
    fc = erlang.forecast(raw.windows.get(ARRIVAL, {}).get(OFFERED, 0), aht, view[STAFFED],  # type: ignore[arg-type]
                         q.sl_threshold_seconds, q.sl_target)
    view.update(
        arrival_rate_per_hour=fc.arrival_rate_per_hour,
        predicted_service_level=fc.predicted_service_level,
        predicted_asa_seconds=fc.predicted_asa_seconds,
        agents_required=fc.agents_required,
        sl_target=q.sl_target,
        sl_threshold_seconds=q.sl_threshold_seconds,
        asa_target_seconds=q.asa_target_seconds,
        kpis=kpi_view(g),
    )
    view.update(open_ticket_view(g))
    return view


def open_ticket_view(g: Counts) -> dict[str, object]:
    """Open tickets now: by status and priority, backlog, breached and due-soon SLA clocks."""
    by: dict[str, dict[str, int]] = {"status": {}, "priority": {}}
    for k, v in sorted(g.items()):
        if k.startswith(T.TICKETS_OPEN + ":") and v:
            _, dim, value = k.split(":", 2)
            by[dim][value] = v
    breached = g.get(T.Z_BREACH, 0)
    return {
        "tickets_open": g.get(T.TICKETS_OPEN, 0),
        "tickets_open_by_status": by["status"],
        "tickets_open_by_priority": by["priority"],
        "backlog": g.get(T.Z_BACKLOG, 0),
        "sla_breached_open": breached,
        "sla_due_soon": g.get(T.Z_SOON, 0) - breached,
    }


def kpi_view(g: Counts) -> dict[str, float]:
    """The latest KPI samples (stored in millionths)."""
    names = {k[len(KPI):] for k in g if k.startswith(KPI)}
    names.update(k[len(KPI_HELD):] for k, v in g.items() if v and k.startswith(KPI_HELD))
    return {name: g.get(KPI + name, 0) / KPI_SCALE for name in sorted(names)}


def _sum(dicts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for d in dicts:
        for k, v in d.items():
            total[k] += v
    return dict(total)


def rollup(raws: Mapping[str, QueueRaw], cfg: MetricsConfig, now_ms: int) -> dict[str, object]:
    """All queues: counts summed, ratios recomputed from the sums (standard SL), never averaged."""
    view: dict[str, object] = {}
    oldest = [r.oldest_waiting_ms for r in raws.values() if r.oldest_waiting_ms is not None]
    view["now"] = {
        "calls_waiting": sum(r.waiting for r in raws.values()),
        "oldest_waiting_since": min(oldest) / 1000 if oldest else None,
        "longest_wait_seconds": max(0, now_ms - min(oldest)) / 1000 if oldest else None,
    }
    for name in cfg.window_names:
        maxes = [r.max_wait_ms.get(name) for r in raws.values()]
        known = [m for m in maxes if m is not None]
        view[name] = window_view(_sum(r.windows.get(name, {}) for r in raws.values()),
                                 max(known) if known else None, "standard", cfg)
    return view


def build_snapshot(raws: Mapping[str, QueueRaw], cfg: MetricsConfig, now_ms: int) -> dict[str, object]:
    """The snapshot document: ``{"generated_at", "queues": {q: {"now", <window>..., "totals"}}, "all": {...}}``."""
    queues: dict[str, object] = {}
    for queue in sorted(raws):
        if queue == GLOBAL:
            continue
        raw, q = raws[queue], cfg.queue(queue)
        view: dict[str, object] = {"now": now_view(raw, q, cfg, now_ms)}
        for name in cfg.window_names:
            view[name] = window_view(raw.windows.get(name, {}), raw.max_wait_ms.get(name), q.sl_formula, cfg)
        view["totals"] = totals_view(raw.totals, q)
        queues[queue] = view
    generated = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
    glob = raws.get(GLOBAL) or QueueRaw()
    return {
        "generated_at": generated.replace("+00:00", "Z"),
        "queues": queues,
        "all": rollup(raws, cfg, now_ms),
        "kpis": kpi_view(glob.gauges),
    }
