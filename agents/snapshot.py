"""Pure assembly of the snapshot: raw per-queue aggregates in, named metrics and ratios out.

Both the Redis reader and the oracle end in ``build_snapshot``, so every ratio is
computed by one function from integer sums and the two paths compare exactly.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Mapping, Optional

from agents import erlang
from agents import tickets as T
from agents.config import HIST, MetricsConfig, QueueConfig, bucket_start, day_of, window_buckets
from agents.core import (
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
    WAIT_HIST,
    WRAPUPS,
    Z_OPEN,
)

Counts = Mapping[str, int]
ARRIVAL = "_arrival"  # the forecast's arrival window (last 15 minutes)
AHT = "_aht"  # the forecast's AHT window (last hour)
AGENT_STATES = ("available", "on_call", "wrap_up", "away")


@dataclass
class QueueRaw:
    """Everything the snapshot needs of one queue, as integer sums."""

    windows: dict[str, dict[str, int]] = field(default_factory=dict)  # window name -> counters
    max_wait_ms: dict[str, Optional[int]] = field(default_factory=dict)  # window name -> longest wait
    gauges: dict[str, int] = field(default_factory=dict)  # agents_<state>, agents_staffed
    waiting: int = 0
    oldest_waiting_ms: Optional[int] = None
    open_since: dict[str, list[int]] = field(default_factory=dict)  # state -> since (ms) of each agent in it
    totals: dict[str, int] = field(default_factory=dict)  # lifetime counters and histogram fields
    # The windows' counters already sorted out (the reader makes them so): ``windows`` then holds each window's
    # plain fields only, and its agents' fields are here.
    scans: Optional[dict[str, "_Scan"]] = None


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


SURVEY_KINDS = ("csat", "nps", "ces")


def survey_view(c: Counts, prefix: str = "") -> dict[str, object]:
    """CSAT, NPS and CES from summed survey counters (``prefix`` selects one agent's)."""
    get = c.get
    n = {kind: get(prefix + SURVEY + kind, 0) for kind in SURVEY_KINDS}
    promoters, detractors = get(prefix + NPS_PROMOTERS, 0), get(prefix + NPS_DETRACTORS, 0)
    csat, nps, ces = get(prefix + CSAT_SATISFIED, 0), n["nps"], n["ces"]
    return {
        "survey_responses": n,
        "csat": csat / n["csat"] if n["csat"] else None,
        "nps": (promoters - detractors) * 100 / nps if nps else None,
        "ces_avg": get(prefix + CES_SUM, 0) / ces if ces else None,
    }


_S_CSAT, _S_NPS, _S_CES = (SURVEY + kind for kind in SURVEY_KINDS)


def _survey(get: Callable[[str, int], int]) -> dict[str, object]:
    """``survey_view`` over one agent's (or the window's) own fields, looked up by ``get``."""
    csat_n, nps_n, ces_n = get(_S_CSAT, 0), get(_S_NPS, 0), get(_S_CES, 0)
    return {
        "survey_responses": {"csat": csat_n, "nps": nps_n, "ces": ces_n},
        "csat": get(CSAT_SATISFIED, 0) / csat_n if csat_n else None,
        "nps": (get(NPS_PROMOTERS, 0) - get(NPS_DETRACTORS, 0)) * 100 / nps_n if nps_n else None,
        "ces_avg": get(CES_SUM, 0) / ces_n if ces_n else None,
    }


# What a counter field's name says, cached (a scrape meets the same few hundred names thousands of times):
# () a plain field; ("b", reason); ("t", dimension, value) or ("t!",) when malformed; ("a", agent, field or None).
_PLAIN: tuple[str, ...] = ()
_field_kinds: dict[str, tuple[Optional[str], ...]] = {}


def _field_kind(k: str) -> tuple[Optional[str], ...]:
    i = k.find(":")
    head = k[:i] if i >= 0 else ""
    if head == "by_agent":
        agent, sep, rest = k[i + 1:].partition(":")
        kind: tuple[Optional[str], ...] = ("a", agent, rest if sep else None)
    elif head == "blocked":
        kind = ("b", k[i + 1:])
    elif head == "tickets_created":
        parts = k.split(":", 2)
        kind = ("t", parts[1], parts[2]) if len(parts) == 3 else ("t!",)
    else:
        kind = _PLAIN
    if len(_field_kinds) >= 200_000:
        _field_kinds.clear()
    _field_kinds[k] = kind
    return kind


def custom_view(c: Counts, cfg: MetricsConfig) -> dict[str, object]:
    """User-defined counters and ratios; a ratio may use built-in counters by their snapshot name."""
    out: dict[str, object] = {cc.name: c.get(CUSTOM + cc.name, 0) for cc in cfg.custom_counters}

    def value(name: str) -> int:
        return c.get(CUSTOM + name, c.get(name, 0))

    for r in cfg.custom_ratios:
        out[r.name] = ratio(value(r.numerator), value(r.denominator))
    return out


@dataclass
class _Scan:
    """A window's counters sorted out once: the plain fields, blocked reasons, ticket dimensions and each
    agent's own survey fields (``by_agent:<agent>:<field>``), with the agents' views once built."""

    plain: dict[str, int]
    blocked: list[tuple[str, int]]
    created: list[tuple[str, str, str, int]]
    agents: dict[str, dict[str, int]]
    agent_views: Optional[dict[str, object]] = None  # set by _window_view


def _scan(c: Counts) -> _Scan:
    return scan_pairs(c.items())


def scan_flat(flat: list[str], agents: bool = True) -> _Scan:
    """``_scan`` of a hash as Redis returns it (field, value, field, value...: values are decimal strings)."""
    it = iter(flat)
    return scan_pairs(zip(it, map(int, it)), agents)


def scan_pairs(pairs: Iterable[tuple[str, int]], agents: bool = True) -> _Scan:
    """A window's counters, given as (field, value) pairs, sorted out; ``agents=False`` passes over each agent's
    own fields (for a reader that shows no per-agent view)."""
    plain: dict[str, int] = {}
    blocked: list[tuple[str, int]] = []
    created: list[tuple[str, str, str, int]] = []
    by_agent: dict[str, dict[str, int]] = {}
    kinds = _field_kinds
    for k, v in pairs:
        kind = kinds.get(k)
        if kind is None:
            if not agents and k.startswith(BY_AGENT):
                continue  # dropped by this reader: not worth a cache entry (one per agent and field, ~300 bytes)
            kind = _field_kind(k)
        if not kind:
            plain[k] = v
            continue
        tag = kind[0]
        if tag == "a":
            if agents:
                fields = by_agent.get(kind[1])  # type: ignore[arg-type]
                if fields is None:
                    fields = by_agent[kind[1]] = {}  # type: ignore[index]
                if kind[2] is not None:
                    fields[kind[2]] = v
            continue
        plain[k] = v
        if not v:
            continue
        if tag == "b":
            blocked.append((k, v))
        elif tag == "t":
            created.append((k, kind[1], kind[2], v))  # type: ignore[arg-type]
        else:
            _, dim, value = k.split(":", 2)  # malformed: fails as it always did
    return _Scan(plain, blocked, created, by_agent)


def window_view(c: Counts, max_wait_ms: Optional[int], formula: str, cfg: MetricsConfig) -> dict[str, object]:
    """Every metric of one window, from its summed counters."""
    return _window_view(c, _scan(c), max_wait_ms, formula, cfg)


def _window_view(c: Counts, scan: _Scan, max_wait_ms: Optional[int], formula: str,
                 cfg: MetricsConfig, agents: bool = True) -> dict[str, object]:
    """``window_view`` from the counters' scan. One pass sorted out the prefixed fields; the rest are direct
    lookups. A scrape builds thousands of these, so nothing here scans the counters again or builds a key
    string per lookup."""
    get = c.get
    blocked, created = scan.blocked, scan.created
    answered, abandoned, timed_out = get(ANSWERED, 0), get(ABANDONED, 0), get(TIMED_OUT, 0)
    offered, blocked_n, short = get(OFFERED, 0), get(BLOCKED, 0), get(SHORT_ABANDONED, 0)
    handled, talk, acw = get(HANDLED, 0), get(TALK_MS, 0), get(ACW_MS, 0)
    created_n, solved = get(TICKETS_CREATED, 0), get(T.TICKETS_SOLVED, 0)
    reopened, escalated = get(T.TICKETS_REOPENED, 0), get(T.TICKETS_ESCALATED, 0)
    frt_met, frt_missed = get(T.FRT_MET, 0), get(T.FRT_MISSED, 0)
    res_met, res_missed = get(T.RES_MET, 0), get(T.RES_MISSED, 0)
    fcr_yes, fcr_no = get(T.FCR_YES, 0), get(T.FCR_NO, 0)
    frt_count, res_count, wrapups = get(T.FRT_COUNT, 0), get(T.RES_COUNT, 0), get(WRAPUPS, 0)
    counted = answered + abandoned + timed_out - short
    by: dict[str, dict[str, int]] = {"channel": {}, "priority": {}}
    for _, dim, value, v in sorted(created):
        by[dim][value] = v
    view: dict[str, object] = {
        "offered": offered,
        "answered": answered,
        "answered_in_sl": get(ANSWERED_IN_SL, 0),
        "abandoned": abandoned,
        "short_abandoned": short,
        "timed_out": timed_out,
        "blocked": blocked_n,
        "blocked_by_reason": {k[len(BLOCKED_REASON):]: v for k, v in sorted(blocked)},
        "handled": handled,
        "service_level": service_level(c, formula),
        "blocking_rate": blocked_n / (offered + blocked_n) if offered + blocked_n else None,
        "abandon_rate": (abandoned - short) / counted if counted else None,
        "asa_seconds": get(ANSWER_WAIT_MS, 0) / 1000 / answered if answered else None,
        "max_wait_seconds": None if max_wait_ms is None else max_wait_ms / 1000,
        "aht_seconds": (talk + acw) / 1000 / handled if handled else None,
        "avg_talk_seconds": talk / 1000 / handled if handled else None,
        "avg_hold_seconds": get(HOLD_MS, 0) / 1000 / handled if handled else None,
        "avg_acw_seconds": acw / 1000 / wrapups if wrapups else None,
        "tickets_created": created_n,
        "tickets_created_by_channel": by["channel"],
        "tickets_created_by_priority": by["priority"],
        "tickets_solved": solved,
        "tickets_reopened": reopened,
        "tickets_escalated": escalated,
        "first_response_seconds_avg": get(T.FRT_MS, 0) / 1000 / frt_count if frt_count else None,
        "frt_sla": frt_met / (frt_met + frt_missed) if frt_met + frt_missed else None,
        "resolution_seconds_avg": get(T.RES_MS, 0) / 1000 / res_count if res_count else None,
        "resolution_sla": res_met / (res_met + res_missed) if res_met + res_missed else None,
        "reopen_rate": reopened / solved if solved else None,
        "escalation_rate": escalated / created_n if created_n else None,
        "fcr_rate": fcr_yes / (fcr_yes + fcr_no) if fcr_yes + fcr_no else None,
    }
    view.update(_survey(get))
    if agents:
        by_agent = scan.agent_views
        if by_agent is None:
            by_agent = scan.agent_views = {}
            for a in sorted(scan.agents):
                fields = scan.agents[a]
                fget = fields.get
                if fget(_S_CSAT, 0) or fget(_S_NPS, 0) or fget(_S_CES, 0):
                    by_agent[a] = _survey(fget)
        view["surveys_by_agent"] = by_agent
    view["custom"] = custom_view(c, cfg) if cfg.custom_counters or cfg.custom_ratios else {}
    return view


WAIT_OUTCOMES = ("answered", "abandoned", "timed_out")
_INF = float("inf")
_bounds_info: dict[tuple[tuple[int, ...], int], tuple[bool, list[str]]] = {}


def _bounds(bounds: tuple[int, ...], scale: int) -> tuple[bool, list[str]]:
    """Whether ``bounds`` ascend, and their ``le`` labels (cached: a queue's bounds are fixed)."""
    info = _bounds_info.get((bounds, scale))
    if info is None:
        if len(_bounds_info) >= 10_000:
            _bounds_info.clear()
        info = _bounds_info[(bounds, scale)] = (all(a <= b for a, b in zip(bounds, bounds[1:])),
                                                [repr(b / scale) for b in bounds])
    return info


def _cumulative(stored: dict[float, int], bounds: tuple[int, ...], total_ms: int, scale: int) -> dict[str, object]:
    """A cumulative histogram from the counts stored under each bound (``inf`` for +Inf)."""
    ascending, labels = _bounds(bounds, scale)
    count = 0
    if not stored:
        buckets = dict.fromkeys(labels, 0)
    elif ascending and stored.keys() <= _bound_set(bounds):  # every count under a current bound: one pass
        buckets = {}
        get = stored.get
        for b, label in zip(bounds, labels):
            count += get(b, 0)
            buckets[label] = count
        count += get(_INF, 0)
    else:  # a bound was retired since (its counts fold into the next larger one), or unsorted bounds
        buckets = {label: sum(v for at, v in stored.items() if at <= b) for b, label in zip(bounds, labels)}
        count = sum(stored.values())
    buckets["+Inf"] = count
    return {"buckets": buckets, "sum": total_ms / scale, "count": count}


_bound_sets: dict[tuple[int, ...], frozenset[float]] = {}


def _bound_set(bounds: tuple[int, ...]) -> frozenset[float]:
    found = _bound_sets.get(bounds)
    if found is None:
        if len(_bound_sets) >= 10_000:
            _bound_sets.clear()
        found = _bound_sets[bounds] = frozenset([*bounds, _INF])
    return found


def histogram(t: Counts, name: str, bounds: tuple[int, ...], scale: int = 1000) -> dict[str, object]:
    """A cumulative histogram over ``bounds`` (stored units; ``scale`` of them make one reported unit, ms -> s by
    default) from stored per-bucket counts.

    An observation is stored under the smallest bound that held it when it was
    counted, so after a bound is added older observations show in the next larger
    bucket: counts stay monotonic, never double.
    """
    prefix = f"{HIST}{name}:"
    stored: dict[float, int] = {}
    for k, v in t.items():
        if k.startswith(prefix) and k != prefix + "sum" and v:
            b = k[len(prefix):]
            at = _INF if b == "inf" else int(b)
            stored[at] = stored.get(at, 0) + v
    return _cumulative(stored, bounds, t.get(prefix + "sum", 0), scale)


_TOTAL_COUNTS = (OFFERED, ANSWERED, ANSWERED_IN_SL, ABANDONED, SHORT_ABANDONED, TIMED_OUT, BLOCKED, HANDLED, WRAPUPS,
                 TICKETS_CREATED, T.TICKETS_SOLVED, T.TICKETS_REOPENED, T.TICKETS_ESCALATED)
_TOTAL_HISTS = frozenset([WAIT_HIST + o for o in WAIT_OUTCOMES] + [T.FRT_HIST])


_hist_fields: dict[str, Optional[tuple[str, float]]] = {}  # a totals field -> (histogram, bound), cached


def _hist_field(k: str) -> Optional[tuple[str, float]]:
    info: Optional[tuple[str, float]] = None
    if k.startswith(HIST):
        name, _, b = k[len(HIST):].rpartition(":")
        if b != "sum" and name in _TOTAL_HISTS:
            info = (name, _INF if b == "inf" else int(b))
    if len(_hist_fields) >= 100_000:
        _hist_fields.clear()
    _hist_fields[k] = info
    return info


def totals_view(t: Counts, q: QueueConfig) -> dict[str, object]:
    """Lifetime counters and histograms of one queue, for Prometheus's own rates and percentiles."""
    get = t.get
    blocked: list[str] = []
    stored: dict[str, dict[float, int]] = {}
    fields = _hist_fields
    for k, v in t.items():
        if not v:
            continue
        info = fields.get(k, False)
        if info is False:
            info = _hist_field(k)
        if info is not None:
            name, at = info  # type: ignore[misc]
            counts = stored.get(name)
            if counts is None:
                stored[name] = {at: v}
            else:
                counts[at] = counts.get(at, 0) + v
        elif k.startswith(BLOCKED_REASON):
            blocked.append(k)
    view: dict[str, object] = {k: get(k, 0) for k in _TOTAL_COUNTS}
    view["blocked_by_reason"] = {k[len(BLOCKED_REASON):]: t[k] for k in sorted(blocked)}
    view["talk_seconds"] = get(TALK_MS, 0) / 1000
    view["hold_seconds"] = get(HOLD_MS, 0) / 1000
    view["acw_seconds"] = get(ACW_MS, 0) / 1000
    view["survey_responses"] = {kind: get(SURVEY + kind, 0) for kind in SURVEY_KINDS}
    view["wait_seconds"] = {o: _cumulative(stored.get(WAIT_HIST + o, {}), q.wait_bounds_ms,
                                           get(f"{HIST}{WAIT_HIST}{o}:sum", 0), 1000) for o in WAIT_OUTCOMES}
    view["first_response_seconds"] = _cumulative(stored.get(T.FRT_HIST, {}), q.frt_bounds_ms,
                                                 get(f"{HIST}{T.FRT_HIST}:sum", 0), 1000)
    return view


def window_start_ms(cfg: MetricsConfig, window_s: int, now_ms: int) -> int:
    """Start of the first bucket a rolling window sums (open agent intervals count from here)."""
    return window_buckets(cfg.bucket_seconds, window_s, now_ms)[0] * 1000


_starts: dict[tuple[int, int, int], int] = {}


def _window_start(cfg: MetricsConfig, window_s: int, now_ms: int) -> int:
    key = (cfg.bucket_seconds, window_s, now_ms)
    start = _starts.get(key)
    if start is None:
        if len(_starts) >= 64:
            _starts.clear()
        start = _starts[key] = window_start_ms(cfg, window_s, now_ms)
    return start


def occupancy(raw: QueueRaw, window: str, window_s: int, cfg: MetricsConfig, now_ms: int) -> Optional[float]:
    """Busy (on call + wrap-up) over staffed-and-working time in a rolling window."""
    c = raw.windows.get(window, {})
    start = _window_start(cfg, window_s, now_ms)
    time_in = {}
    for st in OCCUPANCY_STATES:
        open_ms = 0
        for since in raw.open_since.get(st, ()):
            open_ms += max(0, now_ms - max(since, start))
        time_in[st] = c.get(AGENT_MS + st, 0) + open_ms
    busy = time_in["on_call"] + time_in["wrap_up"]
    return ratio(busy, busy + time_in["available"])


_AGENT_KEYS = tuple(AGENT_GAUGE + st for st in AGENT_STATES)
_occupancy_names: dict[tuple[tuple[str, int], ...], list[tuple[str, int, str]]] = {}


def now_view(raw: QueueRaw, q: QueueConfig, cfg: MetricsConfig, now_ms: int) -> dict[str, object]:
    """The point-in-time gauges and forecasts of one queue."""
    g = raw.gauges
    get = g.get
    oldest = raw.oldest_waiting_ms
    view: dict[str, object] = {
        "calls_waiting": raw.waiting,
        "oldest_waiting_since": None if oldest is None else oldest / 1000,
        "longest_wait_seconds": None if oldest is None else max(0, now_ms - oldest) / 1000,
    }
    for key in _AGENT_KEYS:
        view[key] = get(key, 0)
    staffed = view[STAFFED] = get(STAFFED, 0)
    names = _occupancy_names.get(cfg.windows)
    if names is None:
        names = _occupancy_names[cfg.windows] = [(name, seconds, f"occupancy_{name}") for name, seconds in cfg.windows]
    for name, seconds, key in names:
        view[key] = occupancy(raw, name, seconds, cfg, now_ms)
    aht_c = raw.windows.get(AHT, {})
    aht = ratio((aht_c.get(TALK_MS, 0) + aht_c.get(ACW_MS, 0)) / 1000, aht_c.get(HANDLED, 0))
    fc = erlang.forecast(raw.windows.get(ARRIVAL, {}).get(OFFERED, 0), aht, staffed,  # type: ignore[arg-type]
                         q.sl_threshold_seconds, q.sl_target)
    view["arrival_rate_per_hour"] = fc.arrival_rate_per_hour
    view["predicted_service_level"] = fc.predicted_service_level
    view["predicted_asa_seconds"] = fc.predicted_asa_seconds
    view["agents_required"] = fc.agents_required
    view["sl_target"] = q.sl_target
    view["sl_threshold_seconds"] = q.sl_threshold_seconds
    view["asa_target_seconds"] = q.asa_target_seconds
    # One sorted pass over the gauges for the KPIs and the open tickets' dimensions.
    kpis: dict[str, float] = {}
    by: dict[str, dict[str, int]] = {"status": {}, "priority": {}}
    for k, v in sorted(g.items()):
        if k.startswith(KPI_HELD):
            if v:
                name = k[len(KPI_HELD):]
                kpis[name] = g.get(KPI + name, 0) / KPI_SCALE
        elif k.startswith(KPI):
            kpis[k[len(KPI):]] = v / KPI_SCALE  # also state written before kpi_n: existed
        elif v and k.startswith(_OPEN_PREFIX):
            _, dim, value = k.split(":", 2)
            by[dim][value] = v
    view["kpis"] = kpis
    breached = get(T.Z_BREACH, 0)
    view["tickets_open"] = get(T.TICKETS_OPEN, 0)
    view["tickets_open_by_status"] = by["status"]
    view["tickets_open_by_priority"] = by["priority"]
    view["backlog"] = get(T.Z_BACKLOG, 0)
    view["sla_breached_open"] = breached
    view["sla_due_soon"] = get(T.Z_SOON, 0) - breached
    return view


_OPEN_PREFIX = T.TICKETS_OPEN + ":"


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
    """The latest KPI samples (stored in millionths): every name held (``kpi_n:``), or with a value."""
    names = {k[len(KPI):] for k in g if k.startswith(KPI)}
    names.update(k[len(KPI_HELD):] for k, v in g.items() if v and k.startswith(KPI_HELD))
    return {name: g.get(KPI + name, 0) / KPI_SCALE for name in sorted(names)}


def _sum(dicts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    get = total.get
    for d in dicts:
        for k, v in d.items():
            total[k] = get(k, 0) + v
    return total


def rollup(raws: Mapping[str, QueueRaw], cfg: MetricsConfig, now_ms: int,
           scans: Optional[Mapping[str, list[_Scan]]] = None, agents: bool = True) -> dict[str, object]:
    """All queues: counts summed, ratios recomputed from the sums (standard SL), never averaged.

    ``scans`` (window name -> the scan of every queue's counters, as ``build_snapshot`` made them) spares
    scanning the sums again: the plain fields are summed apart from the agents' fields, and an agent seen in
    one queue only has that queue's fields, so its view is that queue's.
    """
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
        longest = max(known) if known else None
        if scans is None:
            view[name] = window_view(_sum(r.windows.get(name, {}) for r in raws.values()), longest, "standard", cfg)
            continue
        parts = scans[name]
        c = _sum(p.plain for p in parts)
        scan = _scan(c)
        seen: dict[str, _Scan] = {}
        for p in parts:
            for a, fields in p.agents.items():
                first = seen.get(a)
                if first is None:
                    seen[a] = p
                    scan.agents[a] = fields
                else:
                    merged = scan.agents[a]
                    if merged is first.agents[a]:  # a second queue: sum into a fresh dict
                        merged = scan.agents[a] = dict(merged)
                    for f, v in fields.items():
                        merged[f] = merged.get(f, 0) + v
        by_agent = scan.agent_views = {}
        for a in sorted(scan.agents):
            fields = scan.agents[a]
            own = seen[a]
            if fields is own.agents[a] and own.agent_views is not None:  # one queue only: the same view
                if a in own.agent_views:
                    by_agent[a] = own.agent_views[a]
                continue
            fget = fields.get
            if fget(_S_CSAT, 0) or fget(_S_NPS, 0) or fget(_S_CES, 0):
                by_agent[a] = _survey(fget)
        view[name] = _window_view(c, scan, longest, "standard", cfg, agents)
    return view


def custom_sums(scans: Mapping[str, list[_Scan]], cfg: MetricsConfig) -> dict[str, dict[str, int]]:
    """Per window, the counters the custom metrics read, summed over the scanned queues. Sums of disjoint sets of
    queues add up, so readers in several processes can each sum theirs (``ccmon/scrape_pool.py``)."""
    keys = {CUSTOM + cc.name for cc in cfg.custom_counters}
    for r in cfg.custom_ratios:
        keys |= {CUSTOM + r.numerator, r.numerator, CUSTOM + r.denominator, r.denominator}
    out: dict[str, dict[str, int]] = {}
    for name in cfg.window_names:
        c: dict[str, int] = {}
        for p in scans[name]:
            for k in keys:
                v = p.plain.get(k)
                if v is not None:
                    c[k] = c.get(k, 0) + v
        out[name] = c
    return out


def custom_rollup(sums: Mapping[str, Counts], cfg: MetricsConfig) -> dict[str, object]:
    """Only the custom metrics of the roll-up, per window (``{<window>: {"custom": {...}}}``), from ``custom_sums``."""
    return {name: {"custom": custom_view(sums.get(name, {}), cfg)} for name in cfg.window_names}


def build_snapshot(raws: Mapping[str, QueueRaw], cfg: MetricsConfig, now_ms: int,
                   rollup_all: bool = True, agents: bool = True, sums: bool = False) -> dict[str, object]:
    """The snapshot document: ``{"generated_at", "queues": {q: {"now", <window>..., "totals"}}, "all": {...}}``.

    ``rollup_all=False`` leaves out the roll-up but its custom metrics (``all.<window>.custom``), which is all the
    Prometheus exposition shows of it. ``agents=False`` leaves out every window's ``surveys_by_agent``, which no
    alert rule reads. ``sums`` adds ``custom_sums`` (what the custom roll-up is made of), for a reader that
    merges several partial snapshots.
    """
    queues: dict[str, object] = {}
    scans: dict[str, list[_Scan]] = {name: [] for name in cfg.window_names}
    for queue in sorted(raws):
        raw, q = raws[queue], cfg.queue(queue)
        if queue == GLOBAL:  # no view of its own, but its figures count in the roll-up
            for name in cfg.window_names:
                scan = raw.scans.get(name) if raw.scans is not None else None
                scans[name].append(scan if scan is not None else _scan(raw.windows.get(name, {})))
            continue
        view: dict[str, object] = {"now": now_view(raw, q, cfg, now_ms)}
        for name in cfg.window_names:
            c = raw.windows.get(name, {})
            scan = raw.scans.get(name) if raw.scans is not None else None
            if scan is None:
                scan = _scan(c)
            view[name] = _window_view(c, scan, raw.max_wait_ms.get(name), q.sl_formula, cfg, agents)
            scans[name].append(scan)
        view["totals"] = totals_view(raw.totals, q)
        queues[queue] = view
    generated = datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")
    glob = raws.get(GLOBAL) or QueueRaw()
    totals = custom_sums(scans, cfg) if sums or not rollup_all else {}
    doc: dict[str, object] = {
        "generated_at": generated.replace("+00:00", "Z"),
        "queues": queues,
        "all": rollup(raws, cfg, now_ms, scans, agents) if rollup_all else custom_rollup(totals, cfg),
        "kpis": kpi_view(glob.gauges),
    }
    if sums:
        doc["custom_sums"] = totals
    return doc


# ------------------------------------------------------------------ the reader


def reader_windows(cfg: MetricsConfig) -> list[tuple[str, int]]:
    """Every rolling span the reader sums: the configured windows plus the forecast's two."""
    return list(cfg.windows) + [(ARRIVAL, cfg.forecast_arrival_seconds), (AHT, cfg.forecast_aht_seconds)]


def reader_spans(cfg: MetricsConfig) -> tuple[int, ...]:
    """The distinct lengths (seconds) of the reader's rolling windows, shortest first: one segment each."""
    return tuple(sorted({seconds for _, seconds in reader_windows(cfg)}))


def segment_bounds(cfg: MetricsConfig, now_ms: int) -> tuple[int, tuple[int, ...]]:
    """The newest bucket and the first bucket of each reader span (shortest first) at ``now_ms``.

    Every rolling window ends at the current bucket, so the windows nest: segment j holds the
    buckets from span j's first bucket up to (not including) span j-1's, and the window of span j
    is the sum of segments 0..j.
    """
    width = cfg.bucket_seconds
    return bucket_start(now_ms, width), tuple(window_buckets(width, s, now_ms)[0] for s in reader_spans(cfg))


def segment_meta(width: int, last: int, firsts: Iterable[int]) -> str:
    """The range a queue's stored segment sums cover, as read.lua stores it in their ``@`` field."""
    return ":".join(str(x) for x in (width, last, *firsts))


def sum_segments(buckets: Mapping[int, Counts], waits: Mapping[int, int], width: int, last: int,
                 firsts: tuple[int, ...]) -> tuple[list[dict[str, int]], list[Optional[int]]]:
    """Segment sums and each span's longest wait, straight from bucket hashes and their longest waits.

    What read.lua computes when it rebuilds a queue's sums; the in-memory store of the tests uses it.
    """
    segments: list[dict[str, int]] = []
    hi = last
    for first in firsts:
        acc: dict[str, int] = {}
        for b in range(first, hi + 1, width):
            for k, v in buckets.get(b, {}).items():
                acc[k] = acc.get(k, 0) + v
        segments.append({k: v for k, v in acc.items() if v})
        hi = first - width
    longest: list[Optional[int]] = []
    for first in firsts:
        tops = [w for b, w in waits.items() if first <= b <= last]
        longest.append(max(tops) if tops else None)
    return segments, longest


@dataclass
class QueueData:
    """What the reader fetched from the store for one queue (the pseudo-queue ``GLOBAL`` included)."""

    segments: list[dict[str, int]] = field(default_factory=list)  # per reader span, shortest first (segment_bounds)
    max_wait_ms: list[Optional[int]] = field(default_factory=list)  # per reader span: the longest wait in its window
    day: dict[str, int] = field(default_factory=dict)  # today's counters
    day_max_wait_ms: Optional[int] = None
    gauges: dict[str, int] = field(default_factory=dict)  # the queue's gauge hash as stored
    totals: dict[str, int] = field(default_factory=dict)
    waiting: tuple[int, Optional[int]] = (0, None)  # calls waiting, oldest offer (ms)
    open_since: dict[str, list[int]] = field(default_factory=dict)  # occupancy state -> since (ms) of each agent
    windowed_members: dict[str, list[int]] = field(default_factory=dict)  # T.WINDOWED_MEMBERS kind -> scores
    due_members: dict[str, int] = field(default_factory=dict)  # T.GAUGE_MEMBERS kind -> members with score <= now
    # The segments and the day already sorted out (``scan_flat``), when the reader decoded them so.
    segment_scans: Optional[list[_Scan]] = None
    day_scan: Optional[_Scan] = None


def _cumulative_scans(parts: list[_Scan], nspans: int) -> list[_Scan]:
    """Each span's window (segments 0..j), sorted out from its segments' scans: no window is scanned again."""
    special: dict[str, tuple[Optional[str], ...]] = {}  # blocked and ticket-dimension fields seen in any segment
    for p in parts:
        for k, _ in p.blocked:
            special[k] = ("b",)
        for k, dim, value, _ in p.created:
            special[k] = ("t", dim, value)
    out: list[_Scan] = []
    plain: dict[str, int] = {}
    agents: dict[str, dict[str, int]] = {}
    for j in range(nspans):
        agents = dict(agents)  # the fields dicts are shared until a later segment adds to them (copied then)
        if j >= len(parts):
            plain = dict(plain)
        elif not plain:
            plain = dict(parts[j].plain)
        else:
            p = parts[j]
            plain = dict(plain)
            get = plain.get
            for k, v in p.plain.items():
                plain[k] = get(k, 0) + v
        if j < len(parts):
            p = parts[j]
            for a, fields in p.agents.items():
                mine = agents.get(a)
                if mine is None:
                    agents[a] = fields
                else:
                    mine = agents[a] = dict(mine)
                    for f, v in fields.items():
                        mine[f] = mine.get(f, 0) + v
        blocked: list[tuple[str, int]] = []
        created: list[tuple[str, str, str, int]] = []
        for k, kind in special.items():
            v = plain.get(k, 0)
            if v:
                if kind[0] == "b":
                    blocked.append((k, v))
                else:
                    created.append((k, kind[1], kind[2], v))  # type: ignore[arg-type]
        out.append(_Scan(plain, blocked, created, agents))
    return out


class Assembler:
    """The reader's pure half for one read at ``now_ms``: each queue's fetched data into its windows."""

    def __init__(self, cfg: MetricsConfig, now_ms: int):
        self.cfg, self.now_ms = cfg, now_ms
        self.last, self.firsts = segment_bounds(cfg, now_ms)
        index = {seconds: j for j, seconds in enumerate(reader_spans(cfg))}
        self.names = [(name, index[seconds]) for name, seconds in reader_windows(cfg)]

    def raw(self, queue: str, d: QueueData) -> QueueRaw:
        """One queue's windows (segment sums into spans), gauges and totals."""
        raw = QueueRaw(scans={})
        parts = d.segment_scans if d.segment_scans is not None else [_scan(seg) for seg in d.segments]
        spans = _cumulative_scans(parts, len(self.firsts))
        today = d.day_scan if d.day_scan is not None else _scan(d.day)
        add_ticket_members([s.plain for s in spans], today.plain, queue, d.windowed_members, self.firsts, self.cfg,
                           self.now_ms)
        for name, j in self.names:  # windows of the same length share their sums (nothing below writes to them)
            raw.windows[name] = spans[j].plain
            raw.scans[name] = spans[j]  # type: ignore[index]
            raw.max_wait_ms[name] = d.max_wait_ms[j] if j < len(d.max_wait_ms) else None
        raw.windows["today"] = today.plain
        raw.scans["today"] = today  # type: ignore[index]
        raw.max_wait_ms["today"] = d.day_max_wait_ms
        raw.gauges = {k: v for k, v in d.gauges.items() if k.startswith(_GAUGE_PREFIXES)}
        for kind in T.GAUGE_MEMBERS:
            raw.gauges[kind] = d.due_members.get(kind, 0)
        raw.totals = d.totals
        raw.waiting, raw.oldest_waiting_ms = d.waiting
        raw.open_since = {st: d.open_since.get(st, []) for st in OCCUPANCY_STATES}
        return raw


_GAUGE_PREFIXES = (AGENT_GAUGE, KPI, KPI_HELD, T.TICKETS_OPEN)


def assemble(queues: Iterable[str], data: Mapping[str, QueueData], cfg: MetricsConfig, now_ms: int,
             rollup_all: bool = True, agents: bool = True) -> dict[str, object]:
    """Turn the fetched segment sums into windows and build the snapshot (the reader's pure half)."""
    a = Assembler(cfg, now_ms)
    empty = QueueData()
    raws = {q: a.raw(q, data.get(q, empty)) for q in [*queues, GLOBAL]}
    return build_snapshot(raws, cfg, now_ms, rollup_all, agents)


def add_ticket_members(sums: list[dict[str, int]], today: dict[str, int], queue: str,
                       members: Mapping[str, list[int]], firsts: tuple[int, ...], cfg: MetricsConfig,
                       now_ms: int) -> None:
    """Time-driven ticket facts count like counters at their instant, once it has come (a first-response clock
    that runs out at 17:00 is not missed at 10:00): in each span whose window holds their bucket (``sums``, one
    per span as ``segment_bounds`` orders them) and in ``today``. ``members``: each kind's scores, ascending."""
    q = cfg.queue(queue)
    day = day_of(now_ms, q)
    lo = members_from(now_ms, firsts)
    starts = [first * 1000 for first in firsts]  # a score at or after it is in a bucket the span holds
    for kind, name in T.WINDOWED_MEMBERS.items():
        scores = members.get(kind)
        if not scores:
            continue
        end = bisect_right(scores, now_ms)  # the facts up to now: a later one has not happened yet
        for start, w in zip(starts, sums):
            n = end - bisect_left(scores, start, 0, end)
            if n:
                w[name] = w.get(name, 0) + n
        n = sum(1 for score in scores[bisect_left(scores, lo, 0, end):end] if day_of(score, q) == day)
        if n:
            today[name] = today.get(name, 0) + n


def members_from(now_ms: int, firsts: tuple[int, ...]) -> int:
    """The earliest score a read at ``now_ms`` can count. A local day lasts 25 hours at most, and the rolling
    windows are shorter: what is two days old counts nowhere."""
    return min(now_ms - _TWO_DAYS_MS, firsts[-1] * 1000 if firsts else now_ms)


_TWO_DAYS_MS = 2 * 86400_000

# The per-queue sorted sets the reader reads whole (scores only), and those it counts up to now.
OPEN_SETS = tuple(Z_OPEN + st for st in OCCUPANCY_STATES)
WINDOWED_SETS = tuple(T.WINDOWED_MEMBERS)
DUE_SETS = T.GAUGE_MEMBERS
