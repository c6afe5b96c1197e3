"""The definition of every ticket metric, as a pure function of one ticket's events.

Both the streaming core and the oracle call ``ticket_facts``: the ticket rules
(SLA clocks on business hours with pauses and queue moves, first response,
resolution, FCR, open/backlog/breach gauges) live here once and are tested
table by table in ``tests/unit/test_tickets.py``; the oracle comparison then
proves the streaming machinery (dedup, lateness, eviction, deltas, the store
and the reader) around them.

Time-driven facts are *members* scored by the instant they happen, so they are
right at whatever moment a reader asks, with no event: a first-response clock
that runs out unanswered, a resolution clock that runs out unsolved, an FCR
window that closes without a reopen (windowed counts), and an open ticket
crossing into backlog, breach or "due soon" (gauges).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from agents.business_hours import OPEN_PAUSE_END, business_ms, deadline
from agents.config import MetricsConfig, hist_fields

# (ts_ms, event_id, kind, a, b, c): created(queue, channel, priority) | reply(author, "1"/"0" public) |
# status(status) | assign(queue or "") | escalate | reopen
TicketEvent = tuple[int, str, str, str, str, str]

SOLVED = ("solved", "closed")

# Windowed counters.
TICKETS_SOLVED = "tickets_solved"
TICKETS_REOPENED = "tickets_reopened"
TICKETS_ESCALATED = "tickets_escalated"
FRT_COUNT, FRT_MS, FRT_MET, FRT_MISSED = "frt_count", "frt_ms", "frt_met", "frt_missed"
RES_COUNT, RES_MS, RES_MET, RES_MISSED = "res_count", "res_ms", "res_met", "res_missed"
FCR_YES, FCR_NO = "fcr_yes", "fcr_no"
FRT_HIST = "frt"  # lifetime histogram of first-response clock times
# Gauges of open tickets.
TICKETS_OPEN = "tickets_open"
# Members: windowed (counted like a counter at their score) and gauges (counted once their score <= now).
Z_FRT_MISSED = "ztf"  # an unanswered ticket's first-response clock runs out
Z_RES_MISSED = "ztr"  # an unsolved ticket's resolution clock runs out
Z_FCR_YES = "ztc"  # a solved ticket's FCR window closes without a reopen
WINDOWED_MEMBERS = {Z_FRT_MISSED: FRT_MISSED, Z_RES_MISSED: RES_MISSED, Z_FCR_YES: FCR_YES}
Z_BACKLOG = "ztb"  # an open ticket crosses backlog_age
Z_BREACH = "zts"  # an open ticket's running clock runs out
Z_SOON = "ztd"  # an open ticket's running clock reaches 80% of its target
GAUGE_MEMBERS = (Z_BACKLOG, Z_BREACH, Z_SOON)


@dataclass
class TicketFacts:
    """What one ticket adds: counters (queue, ts, field, n), gauges (queue, field, n), members (kind, queue, score)."""

    counters: list[tuple[str, int, str, int]] = field(default_factory=list)
    gauges: list[tuple[str, str, int]] = field(default_factory=list)
    members: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass
class _Timeline:
    created: int
    priority: str
    segments: list[tuple[int, str]]  # (from, queue)
    pauses: list[tuple[int, int]]
    status: str
    first_reply: Optional[int]
    replies_before_solve: int
    solves: list[int]
    reopens: list[int]
    first_escalation: Optional[int]

    def queue_at(self, ts: int) -> str:
        queue = self.segments[0][1]
        for start, q in self.segments:
            if start <= ts:
                queue = q
        return queue

    @property
    def queue(self) -> str:
        return self.segments[-1][1]


def _timeline(events: Sequence[TicketEvent], cfg: MetricsConfig) -> Optional[_Timeline]:
    created = next((e for e in events if e[2] == "created"), None)
    if created is None:
        return None  # held until the creation arrives: queue and priority are unknown before
    t0, _, _, q0, _channel, priority = created
    tl = _Timeline(t0, priority, [(t0, q0)], [], "open", None, 0, [], [], None)
    paused_since: Optional[int] = None
    for ts, _eid, kind, a, b, _c in events:
        new = tl.status
        if kind == "assign" and a and a != tl.queue:
            tl.segments.append((max(ts, t0), a))
        elif kind == "status":
            new = a
        elif kind == "reopen":
            new = "open"
            tl.reopens.append(ts)
        elif kind == "reply" and a == "agent" and b == "1":
            if tl.first_reply is None:
                tl.first_reply = ts
            if not tl.solves:
                tl.replies_before_solve += 1
        elif kind == "escalate" and tl.first_escalation is None:
            tl.first_escalation = ts
        if new != tl.status:
            if new in SOLVED and tl.status not in SOLVED:
                tl.solves.append(ts)
            pausing = cfg.queue(tl.queue_at(ts)).pause_statuses
            if new in pausing and paused_since is None:
                paused_since = ts
            elif new not in pausing and paused_since is not None:
                tl.pauses.append((paused_since, ts))
                paused_since = None
            tl.status = new
    if paused_since is not None:
        tl.pauses.append((paused_since, OPEN_PAUSE_END))
    return tl


# The last timeline built from a tuple of events: the streaming core asks for a ticket's facts and then its
# due time from the same state, one after the other. Only tuples are kept (they cannot change in place).
_last_timeline: tuple[object, object, Optional[_Timeline]] = (None, None, None)


def _timeline_of(events: Sequence[TicketEvent], cfg: MetricsConfig) -> Optional[_Timeline]:
    """``_timeline`` of the events in time order, reusing the last one built from the same tuple."""
    global _last_timeline
    if type(events) is not tuple:
        return _timeline(sorted(events), cfg)
    seen, seen_cfg, tl = _last_timeline
    if seen is events and seen_cfg is cfg:
        return tl
    tl = _timeline(sorted(events), cfg)
    _last_timeline = (events, cfg, tl)
    return tl


def _runout(tl: _Timeline, cfg: MetricsConfig, target_of: Callable[[str], int]) -> Optional[int]:
    """When the clock from creation reaches its target, each queue segment on its own calendar and target."""
    elapsed = 0
    for i, (start, queue) in enumerate(tl.segments):
        seg_start = max(start, tl.created)
        seg_end = tl.segments[i + 1][0] if i + 1 < len(tl.segments) else None
        if seg_end is not None and seg_end <= seg_start:
            continue
        q = cfg.queue(queue)
        remaining = target_of(queue) - elapsed
        if remaining <= 0:
            return seg_start  # the new queue's target was already used up when the ticket moved there
        d = deadline(q.calendar, seg_start, remaining, tl.pauses)
        if d is not None and (seg_end is None or d <= seg_end):
            return d
        if seg_end is None:
            return None
        elapsed += business_ms(q.calendar, seg_start, seg_end, tl.pauses)
    return None


def _runouts(tl: _Timeline, cfg: MetricsConfig, clocks: Sequence[int] = (0, 1), num: int = 1,
             den: int = 1) -> tuple[Optional[int], ...]:
    """``_runout`` of the given clocks (0: first response, 1: resolution) at ``num / den`` of their targets (rounded
    down); for a ticket that never moved queue (most of them), without its loop over segments."""
    if len(tl.segments) == 1:
        start, queue = tl.segments[0]
        qc = cfg.queue(queue)
        at = max(start, tl.created)
        targets = qc.sla_targets(tl.priority)
        out = []
        for i in clocks:
            target = targets[i] * num // den
            out.append(at if target <= 0 else deadline(qc.calendar, at, target, tl.pauses))
        return tuple(out)
    return tuple(_runout(tl, cfg, lambda q, i=i: cfg.queue(q).sla_targets(tl.priority)[i] * num // den)
                 for i in clocks)


def _clock(tl: _Timeline, cfg: MetricsConfig, until: int) -> int:
    """SLA-clock time from creation to ``until``."""
    total = 0
    for i, (start, queue) in enumerate(tl.segments):
        seg_start = max(start, tl.created)
        seg_end = min(tl.segments[i + 1][0], until) if i + 1 < len(tl.segments) else until
        if seg_end > seg_start:
            total += business_ms(cfg.queue(queue).calendar, seg_start, seg_end, tl.pauses)
    return total


def _score_clock(tl: _Timeline, cfg: MetricsConfig, done: Optional[int], run: Optional[int], stop: Optional[int],
                 final: bool, names: tuple[str, str, str, str, str], out: TicketFacts, hist: str = "") -> None:
    """One SLA clock's facts: measured (and observed in ``hist``) and met/missed when ``done``; else missed at the
    run-out (a member while it may still change, unless the clock stopped at ``stop`` first)."""
    count, ms, met, missed, pending = names
    if done is not None:
        q = tl.queue_at(done)
        used = _clock(tl, cfg, done)
        out.counters += [(q, done, count, 1), (q, done, ms, used)]
        if hist:
            bucket, total = hist_fields(hist, cfg.queue(q).frt_bounds_ms, used)
            out.counters += [(q, done, bucket, 1), (q, done, total, used)]
        if run is None or done <= run:
            out.counters.append((q, done, met, 1))
        else:
            out.counters.append((tl.queue_at(run), run, missed, 1))
    elif run is not None and (stop is None or run < stop):
        if stop is not None or final:
            out.counters.append((tl.queue_at(run), run, missed, 1))
        else:
            out.members.append((pending, tl.queue_at(run), run))


def ticket_facts(events: Sequence[TicketEvent], cfg: MetricsConfig, final: bool = False) -> TicketFacts:
    """Every metric one ticket contributes; ``final``: its FCR window has closed, so pending facts become counters."""
    out = TicketFacts()
    tl = _timeline_of(events, cfg)
    if tl is None:
        return out
    c, m = out.counters, out.members
    for ts in tl.solves:
        c.append((tl.queue_at(ts), ts, TICKETS_SOLVED, 1))
    for ts in tl.reopens:
        c.append((tl.queue_at(ts), ts, TICKETS_REOPENED, 1))
    if tl.first_escalation is not None:
        c.append((tl.queue_at(tl.first_escalation), tl.first_escalation, TICKETS_ESCALATED, 1))

    first_solve = tl.solves[0] if tl.solves else None
    frt_run, res_run = _runouts(tl, cfg)

    reply = tl.first_reply if tl.first_reply is not None and (first_solve is None or tl.first_reply <= first_solve) else None
    _score_clock(tl, cfg, reply, frt_run, first_solve, final, (FRT_COUNT, FRT_MS, FRT_MET, FRT_MISSED, Z_FRT_MISSED), out,
                 FRT_HIST)
    _score_clock(tl, cfg, first_solve, res_run, None, final, (RES_COUNT, RES_MS, RES_MET, RES_MISSED, Z_RES_MISSED), out)

    if first_solve is not None:
        q = tl.queue_at(first_solve)
        window = cfg.fcr_window_seconds * 1000
        reopen = next((r for r in tl.reopens if first_solve < r <= first_solve + window), None)
        if tl.replies_before_solve > 1:
            c.append((q, first_solve, FCR_NO, 1))
        elif reopen is not None:
            c.append((tl.queue_at(reopen), reopen, FCR_NO, 1))
        elif final:
            c.append((q, first_solve + window, FCR_YES, 1))
        else:
            m.append((Z_FCR_YES, q, first_solve + window))

    if tl.status not in SOLVED:
        q, qc = tl.queue, cfg.queue(tl.queue)
        out.gauges += [(q, TICKETS_OPEN, 1), (q, f"{TICKETS_OPEN}:status:{tl.status}", 1),
                       (q, f"{TICKETS_OPEN}:priority:{tl.priority}", 1)]
        backlog = deadline(qc.calendar, tl.created, qc.backlog_age_ms)
        if backlog is not None:
            m.append((Z_BACKLOG, q, backlog))
        running = [i for i, done in ((0, reply), (1, first_solve)) if done is None]  # clocks still running
        breach = [t for t in ((frt_run, res_run)[i] for i in running) if t is not None]
        soon = [t for t in _runouts(tl, cfg, running, 4, 5) if t is not None]
        if breach:
            m.append((Z_BREACH, q, min(breach)))
        if soon:
            m.append((Z_SOON, q, min(soon)))
    return out


def ticket_due(events: Sequence[TicketEvent], cfg: MetricsConfig) -> Optional[int]:
    """When a ticket may leave memory: a solved or closed one after the lateness and its FCR window, one that was
    never created (events of a ticket already forgotten, or created before ccmon saw it) once its creation could
    no longer arrive on time; None while open."""
    tl = _timeline_of(events, cfg)
    if tl is None:
        return max(e[0] for e in events) + cfg.lateness_ms
    if tl.status not in SOLVED:
        return None
    last = max(e[0] for e in events)
    return max(last + cfg.lateness_ms, tl.solves[0] + cfg.fcr_window_seconds * 1000 if tl.solves else last)
