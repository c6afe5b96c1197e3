"""The batch oracle: every metric recomputed from the raw event list.

This is the reference definition. It reads the events once in arrival order to
decide what the rules reject (late, duplicate, impossible transitions) and when
a call is forgotten or expires, then computes every metric directly from the
surviving events. It shares no state machine or delta code with the streaming
core, so property tests can hold one against the other.

Rules, per partition of each topic (Kafka's default partitioner over
``partitions`` partitions):

- stream time is the newest event time applied so far; an event older than
  stream time minus the lateness is *late* and ignored;
- a call whose every leg is finished is forgotten once stream time is past its
  last event plus the lateness; a later event with its id starts a new call;
- a call not finished within ``call_max_age`` of its first event *expires*: it
  stops counting as waiting, and a later event with its id starts a new call;
- a solved or closed ticket is forgotten once stream time is past its due (the lateness after its FCR window);
  its facts still to come then count at their instants like any counter, while a kept ticket's count only once
  their instant has come;
- a repeated ``event_id`` within a call (or an agent) is ignored;
- each leg follows one path (answered -> ended -> wrap-up, abandoned, timed out,
  or blocked) and records each step once; an event that breaks this is an
  invalid transition and is ignored.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Collection, Iterable, Mapping, Optional, Union

import msgspec

from agents.config import HIST, MetricsConfig, bucket_bound, bucket_start, day_of, in_rolling_window
from agents.snapshot import AHT, ARRIVAL, QueueRaw, build_snapshot, window_start_ms
from streams.events import (
    AgentState,
    CallBlocked,
    CallEnded,
    CallEvent,
    Event,
    KpiSample,
    SurveyResponse,
    TicketCreated,
    TicketEvent,
)
from streams.partitioning import partition_for
from agents.core import ticket_event_tuple
from agents.tickets import WINDOWED_MEMBERS, ticket_due, ticket_facts
from agents.tickets import TicketEvent as TicketEventTuple

PATHS = {"call.answered": "answered", "call.ended": "answered", "call.wrapup_completed": "answered",
         "call.abandoned": "abandoned", "call.timed_out": "timed_out", "call.blocked": "blocked"}


@dataclass
class Call:
    """One instance of a call id: its legs' events by type."""

    legs: dict[str, dict[str, CallEvent]] = field(default_factory=lambda: defaultdict(dict))
    ids: set[str] = field(default_factory=set)
    first: int = 0
    last: int = 0
    expired: bool = False

    def finished(self) -> bool:
        """Every leg has reached its end (or was transferred away while waiting)."""
        for queue, steps in self.legs.items():
            if not ({"call.blocked", "call.abandoned", "call.timed_out"} & steps.keys()
                    or {"call.answered", "call.ended", "call.wrapup_completed"} <= steps.keys()
                    or self.moved_on(queue)):
                return False
        return True

    def moved_on(self, queue: str) -> bool:
        """The leg waited with no outcome and the call was later offered to another queue."""
        steps = self.legs[queue]
        if "call.offered" not in steps or {"call.answered", "call.abandoned", "call.timed_out"} & steps.keys():
            return False
        t = steps["call.offered"].ts_ms
        return any("call.offered" in s and s["call.offered"].ts_ms > t for q, s in self.legs.items() if q != queue)


@dataclass
class Agent:
    """One agent's state changes."""

    changes: list[AgentState] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)


@dataclass
class Outcome:
    """What the oracle decided about each input event, by kind; ``applied`` lists the events that count."""

    late: int = 0
    duplicates: int = 0
    invalid: int = 0
    expired: int = 0
    applied: list[Event] = field(default_factory=list)
    tickets: list["Ticket"] = field(default_factory=list)


@dataclass
class Ticket:
    """One instance of a ticket id: its applied events."""

    events: list[TicketEventTuple] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    final: bool = False  # forgotten (stream time past its due): its pending facts became counters


@dataclass
class Once:
    """A ticket's or survey's ids seen, its last event time, and whether it was created / answered."""

    ids: set[str] = field(default_factory=set)
    last: int = 0
    done: bool = False


def entity_of(ev: Event) -> str:
    """The id that keys an event on its topic."""
    return ev.entity_id


def replay(events: Iterable[Event], cfg: MetricsConfig, partitions: int) -> tuple[list[Call], dict[str, Agent], Outcome]:
    """Apply the acceptance rules in arrival order; return every call instance and agent, and what applied."""
    lat = cfg.lateness_ms
    max_age = cfg.call_max_age_seconds * 1000
    stream: dict[tuple[str, int], int] = {}
    calls: list[Call] = []
    current: dict[str, Call] = {}
    agents: dict[str, Agent] = {}
    out = Outcome()
    home: dict[str, int] = {}
    once: dict[tuple[str, str], Once] = {}
    open_tickets: dict[str, Ticket] = {}
    kpis: dict[tuple[str, str], tuple[int, str]] = {}
    for ev in events:
        where = (ev.domain, partition_for(entity_of(ev), partitions))
        now = stream.get(where)
        if now is not None and ev.ts_ms < now - lat:
            out.late += 1
            continue
        if isinstance(ev, KpiSample):
            slot = (ev.name, ev.queue or "")
            if kpis.get(slot) == (ev.ts_ms, ev.event_id):
                out.duplicates += 1
                continue
            kpis[slot] = max(kpis.get(slot, (ev.ts_ms, ev.event_id)), (ev.ts_ms, ev.event_id))
        elif isinstance(ev, TicketEvent):
            ticket = open_tickets.get(ev.ticket_id)
            if ticket is not None and now is not None:
                due = ticket_due(ticket.events, cfg)
                if due is not None and due < now:
                    ticket.final = True
                    ticket = None  # solved or closed, its FCR window over: forgotten
            if ticket is None:
                ticket = Ticket()
            if ev.event_id in ticket.ids:
                out.duplicates += 1
                continue
            if isinstance(ev, TicketCreated) and any(e[2] == "created" for e in ticket.events):
                out.invalid += 1
                continue
            if ticket is not open_tickets.get(ev.ticket_id):
                open_tickets[ev.ticket_id] = ticket
                out.tickets.append(ticket)
            ticket.ids.add(ev.event_id)
            ticket.events.append(ticket_event_tuple(ev))
        elif isinstance(ev, SurveyResponse):
            key = (ev.domain, entity_of(ev))
            rec = once.get(key)
            if rec is not None and now is not None and rec.last + lat < now:
                rec = None  # forgotten: nothing on time can repeat what it saw
            rec = rec or Once(last=ev.ts_ms)
            if ev.event_id in rec.ids:
                out.duplicates += 1
                continue
            creates = True
            if creates and rec.done:
                out.invalid += 1
                continue
            rec.done = rec.done or creates
            rec.ids.add(ev.event_id)
            rec.last = max(rec.last, ev.ts_ms)
            once[key] = rec
        elif isinstance(ev, AgentState):
            agent = agents.setdefault(ev.agent_id, Agent())
            if ev.event_id in agent.ids:
                out.duplicates += 1
                continue
            agent.ids.add(ev.event_id)
            agent.changes.append(ev)
        else:
            call = current.get(ev.call_id)
            if call is not None and now is not None:
                if call.finished() and call.last + lat < now:
                    call = None  # forgotten
                elif not call.finished() and call.first + max_age < now:
                    call.expired = True
                    out.expired += 1
                    call = None
            if call is None:
                call = Call(first=ev.ts_ms, last=ev.ts_ms)
            if ev.event_id in call.ids:
                out.duplicates += 1
                continue
            steps = call.legs[ev.queue]
            path = PATHS.get(ev.type)
            have = {PATHS[t] for t in steps if t in PATHS}
            if ev.type in steps or (path and have - {path}) or (ev.type == "call.offered" and "blocked" in have) or (
                path == "blocked" and "call.offered" in steps
            ):
                out.invalid += 1
                if not steps:
                    del call.legs[ev.queue]
                continue
            if call is not current.get(ev.call_id):
                current[ev.call_id] = call
                calls.append(call)
            steps[ev.type] = ev
            call.ids.add(ev.event_id)
            call.first, call.last = min(call.first, ev.ts_ms), max(call.last, ev.ts_ms)
            home[ev.call_id] = where[1]
        out.applied.append(ev)
        stream[where] = ev.ts_ms if now is None else max(now, ev.ts_ms)
    for ticket_id, ticket in open_tickets.items():
        now = stream.get(("tickets", partition_for(ticket_id, partitions)))
        due = ticket_due(ticket.events, cfg)
        if due is not None and now is not None and due < now:
            ticket.final = True  # the streaming path forgets it at the end of the batch that moved stream time
    for call_id, call in current.items():
        now = stream.get(("calls", home[call_id]))
        if not call.expired and not call.finished() and now is not None and call.first + max_age < now:
            call.expired = True
            out.expired += 1
    return calls, agents, out


Admitted = Union[Collection[str], Mapping[str, Collection[str]]]


def capped(events: Iterable[Event], cfg: MetricsConfig, admitted: Admitted) -> list[Event]:
    """``events`` as they count under the label caps, given the values each cap admitted (``kind -> values``; a
    plain collection is the queue names). A queue, survey agent or ticket channel that is neither configured
    (queues in the YAML), nor ``other``, nor admitted counts as ``other`` (an agent's queues deduplicated once
    renamed); a KPI sample whose name was not admitted is dropped (dead-lettered). A kind absent is not capped."""
    sets = admitted if isinstance(admitted, Mapping) else {"queues": admitted}
    keep = {kind: {"other", *names, *(cfg.queues if kind == "queues" else ())} for kind, names in sets.items()}

    def refused(kind: str, value: Optional[str]) -> bool:
        return value is not None and kind in keep and value not in keep[kind]

    out = []
    for ev in events:
        if isinstance(ev, KpiSample) and refused("kpis", ev.name):
            continue
        change: dict[str, object] = {}
        queue, queues = getattr(ev, "queue", None), getattr(ev, "queues", None)
        if refused("queues", queue):
            change["queue"] = "other"
        elif queues and any(refused("queues", q) for q in queues):
            change["queues"] = list(dict.fromkeys("other" if refused("queues", q) else q for q in queues))
        if isinstance(ev, SurveyResponse) and refused("agents", ev.agent_id):
            change["agent_id"] = "other"
        if isinstance(ev, TicketCreated) and refused("channels", ev.channel):
            change["channel"] = "other"
        out.append(msgspec.structs.replace(ev, **change) if change else ev)
    return out


def compute(events: Iterable[Event], cfg: MetricsConfig, now_ms: int, partitions: int = 1,
            admitted: Optional[Admitted] = None) -> dict[str, object]:
    """The snapshot that the streaming path must produce for ``events`` (in arrival order) at ``now_ms``; with
    ``admitted``, the values the label caps admitted (the store's sets, ``capped``), as under CCMON_MAX_QUEUES,
    CCMON_MAX_AGENTS, CCMON_MAX_CHANNELS and CCMON_MAX_KPIS."""
    events = list(events) if admitted is None else capped(events, cfg, admitted)
    calls, agents, outcome = replay(events, cfg, partitions)
    facts: list[tuple[str, int, str, int]] = []  # (queue, ts_ms, field, value)
    waits: list[tuple[str, int, int, str]] = []  # (queue, left at, wait, how): calls that left the queue
    raws: dict[str, QueueRaw] = defaultdict(QueueRaw)

    for call in calls:
        for queue, steps in call.legs.items():
            raws[queue]
            q = cfg.queue(queue)
            blocked = steps.get("call.blocked")
            if isinstance(blocked, CallBlocked):
                facts += [(queue, blocked.ts_ms, "blocked", 1), (queue, blocked.ts_ms, "blocked:" + blocked.reason, 1)]
            offered = steps.get("call.offered")
            if offered is None:
                continue
            facts.append((queue, offered.ts_ms, "offered", 1))
            end = next((steps[t] for t in ("call.answered", "call.abandoned", "call.timed_out") if t in steps), None)
            if end is None:
                if not call.expired and not call.moved_on(queue):
                    raw = raws[queue]
                    raw.waiting += 1
                    if raw.oldest_waiting_ms is None or offered.ts_ms < raw.oldest_waiting_ms:
                        raw.oldest_waiting_ms = offered.ts_ms
                continue
            at, wait = end.ts_ms, max(0, end.ts_ms - offered.ts_ms)
            waits.append((queue, at, wait, end.type.removeprefix("call.")))
            if end.type == "call.answered":
                facts += [(queue, at, "answered", 1), (queue, at, "answer_wait_ms", wait)]
                if wait <= q.sl_threshold_ms:
                    facts.append((queue, at, "answered_in_sl", 1))
                ended = steps.get("call.ended")
                if isinstance(ended, CallEnded):
                    e = ended.ts_ms
                    facts += [(queue, e, "handled", 1), (queue, e, "talk_ms", max(0, e - at)),
                              (queue, e, "hold_ms", round((ended.hold_seconds or 0) * 1000))]
                    wrap = steps.get("call.wrapup_completed")
                    if wrap is not None:
                        facts += [(queue, wrap.ts_ms, "wrapups", 1), (queue, wrap.ts_ms, "acw_ms", max(0, wrap.ts_ms - e))]
            elif end.type == "call.abandoned":
                facts.append((queue, at, "abandoned", 1))
                if wait <= q.short_abandon_ms:
                    facts.append((queue, at, "short_abandoned", 1))
                if wait <= q.sl_threshold_ms:
                    facts.append((queue, at, "abandoned_in_sl", 1))
            else:
                facts.append((queue, at, "timed_out", 1))

    for agent in agents.values():
        changes = sorted(agent.changes, key=lambda a: (a.ts_ms, a.event_id))
        for cur, nxt in zip(changes, changes[1:]):
            if cur.state in ("available", "on_call", "wrap_up"):
                t = cur.ts_ms
                while t < nxt.ts_ms:  # one fact per bucket the interval touches
                    edge = min(nxt.ts_ms, (t // (cfg.bucket_seconds * 1000) + 1) * cfg.bucket_seconds * 1000)
                    facts += [(q, t, "agent_ms:" + cur.state, edge - t) for q in cur.queues]
                    t = edge
        if changes:
            last = changes[-1]
            for q in last.queues:
                raw = raws[q]
                raw.gauges["agents_" + last.state] = raw.gauges.get("agents_" + last.state, 0) + 1
                if last.state != "offline":
                    raw.gauges["agents_staffed"] = raw.gauges.get("agents_staffed", 0) + 1
                if last.state in ("available", "on_call", "wrap_up"):
                    raw.open_since.setdefault(last.state, []).append(last.ts_ms)

    latest_kpi: dict[tuple[str, str], KpiSample] = {}
    for ev in outcome.applied:
        for q in [getattr(ev, "queue", None)] + list(getattr(ev, "queues", None) or []):
            if q:
                raws[q]  # every queue an applied event names appears, as in the store's queue set
        for counter in cfg.custom_counters:
            if counter.matches(ev):
                facts.append((getattr(ev, "queue", None) or "", ev.ts_ms, "custom:" + counter.name, 1))
        if isinstance(ev, TicketCreated):
            for name in ("tickets_created", f"tickets_created:channel:{ev.channel}",
                         f"tickets_created:priority:{ev.priority}"):
                facts.append((ev.queue, ev.ts_ms, name, 1))
        elif isinstance(ev, SurveyResponse):
            names = ["survey:" + ev.kind]
            if ev.kind == "csat" and ev.score >= 4:
                names.append("csat_satisfied")
            if ev.kind == "nps" and ev.score >= 9:
                names.append("nps_promoters")
            if ev.kind == "nps" and ev.score <= 6:
                names.append("nps_detractors")
            for name in names:
                facts.append((ev.queue, ev.ts_ms, name, 1))
                if ev.agent_id:
                    facts.append((ev.queue, ev.ts_ms, f"by_agent:{ev.agent_id}:{name}", 1))
            if ev.kind == "ces":
                facts.append((ev.queue, ev.ts_ms, "ces_sum", ev.score))
                if ev.agent_id:
                    facts.append((ev.queue, ev.ts_ms, f"by_agent:{ev.agent_id}:ces_sum", ev.score))
        elif isinstance(ev, KpiSample):
            slot = (ev.name, ev.queue or "")
            prev = latest_kpi.get(slot)
            if prev is None or (ev.ts_ms, ev.event_id) > (prev.ts_ms, prev.event_id):
                latest_kpi[slot] = ev
    for (name, queue), ev in latest_kpi.items():
        raws[queue].gauges["kpi:" + name] = round(ev.value * 1_000_000)
        raws[queue].gauges["kpi_n:" + name] = 1
    for ticket in outcome.tickets:
        tf = ticket_facts(ticket.events, cfg, final=ticket.final)
        facts += tf.counters
        for queue, name, n in tf.gauges:
            raws[queue].gauges[name] = raws[queue].gauges.get(name, 0) + n
        for kind, queue, score in tf.members:
            if score > now_ms:
                continue  # a fact at an instant still to come (a clock runs out at 17:00) counts from then on
            if kind in WINDOWED_MEMBERS:
                facts.append((queue, score, WINDOWED_MEMBERS[kind], 1))
            else:
                raws[queue].gauges[kind] = raws[queue].gauges.get(kind, 0) + 1

    width = cfg.bucket_seconds
    spans = list(cfg.windows) + [(ARRIVAL, cfg.forecast_arrival_seconds), (AHT, cfg.forecast_aht_seconds)]

    def windows_of(queue: str, ts: int) -> list[str]:
        b = bucket_start(ts, width)
        names = [name for name, secs in spans if in_rolling_window(b, width, secs, now_ms)]
        q = cfg.queue(queue)
        if day_of(ts, q) == day_of(now_ms, q):
            names.append("today")
        return names

    # Lifetime totals: every applied fact of these kinds, whenever it happened.
    lifetime = {"offered", "blocked", "answered", "answered_in_sl", "abandoned", "short_abandoned", "timed_out",
                "handled", "talk_ms", "hold_ms", "acw_ms", "wrapups", "tickets_created", "tickets_solved",
                "tickets_reopened", "tickets_escalated", "survey:csat", "survey:nps", "survey:ces"}
    for queue, ts, name, value in facts:
        raw = raws[queue]
        if name in lifetime or name.startswith("blocked:") or name.startswith(HIST):
            raw.totals[name] = raw.totals.get(name, 0) + value
        if name.startswith(HIST):
            continue  # histograms are lifetime only
        for w in windows_of(queue, ts):
            counters = raw.windows.setdefault(w, {})
            counters[name] = counters.get(name, 0) + value
    for queue, at, wait, how in waits:
        raw = raws[queue]
        bound = bucket_bound(cfg.queue(queue).wait_bounds_ms, wait)
        for name, value in ((f"h:wait:{how}:{'inf' if bound is None else bound}", 1), (f"h:wait:{how}:sum", wait)):
            raw.totals[name] = raw.totals.get(name, 0) + value
        for w in windows_of(queue, at):
            prev = raw.max_wait_ms.get(w)
            raw.max_wait_ms[w] = wait if prev is None else max(prev, wait)
    assert all(window_start_ms(cfg, s, now_ms) <= now_ms for _, s in spans)
    return build_snapshot(raws, cfg, now_ms)
