"""The pure streaming core: per-entity state, contributions, and the deltas of each batch.

An entity's state keeps the timestamps of its events, not an assumed order. What
an entity adds to the counters and sorted sets is a pure function of its state
(``contributions``), so a batch's effect is "contributions after minus before":
the result depends on the set of events applied, never on their arrival order.

Stream time is the newest event time applied on a partition. An event older
than stream time minus the lateness is late: rejected, counted, dead-lettered.
Entities leave memory through a due-time heap: a finished one once it can no
longer receive an on-time event, an unfinished one after its maximum age
("expired", which also takes it out of the live gauges).
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Optional, Protocol, Sequence

import msgspec

from agents.config import HIST, MetricsConfig, bucket_start, day_of, hist_fields
from agents.tickets import TicketEvent as TicketEventTuple
from agents.tickets import TICKETS_ESCALATED, TICKETS_REOPENED, TICKETS_SOLVED, ticket_due, ticket_facts
from streams.events import (
    AgentState,
    KpiSample,
    SurveyResponse,
    TicketAssigned,
    TicketCreated,
    TicketEscalated,
    TicketReplied,
    TicketStatusChanged,
    CallAbandoned,
    CallAnswered,
    CallBlocked,
    CallEnded,
    CallEvent,
    CallOffered,
    CallTimedOut,
    CallWrapupCompleted,
    Event,
)

# ----------------------------------------------------------------- field names
# Counters kept per bucket and per day; ``*_ms`` are integer sums so totals stay exact.
OFFERED = "offered"
BLOCKED = "blocked"
BLOCKED_REASON = "blocked:"  # + reason
ANSWERED = "answered"
ANSWERED_IN_SL = "answered_in_sl"
ANSWER_WAIT_MS = "answer_wait_ms"
ABANDONED = "abandoned"
SHORT_ABANDONED = "short_abandoned"
ABANDONED_IN_SL = "abandoned_in_sl"  # abandoned with wait <= T (Asterisk's SL2)
TIMED_OUT = "timed_out"
HANDLED = "handled"
TALK_MS = "talk_ms"
HOLD_MS = "hold_ms"
ACW_MS = "acw_ms"
WRAPUPS = "wrapups"
AGENT_MS = "agent_ms:"  # + state: closed agent-state time, for occupancy

TICKETS_CREATED = "tickets_created"
SURVEY = "survey:"  # + kind: responses
CSAT_SATISFIED = "csat_satisfied"
NPS_PROMOTERS = "nps_promoters"
NPS_DETRACTORS = "nps_detractors"
CES_SUM = "ces_sum"
BY_AGENT = "by_agent:"  # + agent + ":" + field
CUSTOM = "custom:"  # + counter name
KPI = "kpi:"  # + name: the latest sample, in millionths
KPI_SCALE = 1_000_000
GLOBAL = ""  # the pseudo-queue of figures that belong to no queue (queue-less KPIs and custom counts)

# Lifetime counters (the "t" hash per queue, never expiring) for Prometheus's own rates: these fields
# also count there, as do blocked reasons and every histogram field (which counts only there).
TOTAL = "t"
TOTAL_FIELDS = frozenset({OFFERED, BLOCKED, ANSWERED, ANSWERED_IN_SL, ABANDONED, SHORT_ABANDONED, TIMED_OUT, HANDLED,
                          TALK_MS, HOLD_MS, ACW_MS, WRAPUPS, TICKETS_CREATED, TICKETS_SOLVED, TICKETS_REOPENED,
                          TICKETS_ESCALATED, SURVEY + "csat", SURVEY + "nps", SURVEY + "ces"})
WAIT_HIST = "wait:"  # + outcome (answered, abandoned, timed_out): lifetime histogram of waits

# Counters a custom ratio may name as its numerator or denominator.
BUILTIN_COUNTERS = (OFFERED, BLOCKED, ANSWERED, ANSWERED_IN_SL, ABANDONED, SHORT_ABANDONED, ABANDONED_IN_SL, TIMED_OUT,
                    HANDLED, TICKETS_CREATED, CSAT_SATISFIED, NPS_PROMOTERS, NPS_DETRACTORS)

# Gauges kept per queue under ``now``.
AGENT_GAUGE = "agents_"  # + state, and agents_staffed
STAFFED = "agents_staffed"

# Sorted sets: (kind, queue, ts_ms or None, member) -> score
Z_WAIT = "zw"  # per bucket and day: waits of calls that left the queue (for the max)
Z_WAITING = "zq"  # per queue: calls waiting now, scored by offer time
Z_OPEN = "za:"  # + state, per queue: agents in that state now, scored by since
OCCUPANCY_STATES = ("available", "on_call", "wrap_up")

Counters = dict[tuple[str, Optional[int], str], int]
Members = dict[tuple[str, str, Optional[int], str], int]


@dataclass
class Contribution:
    """What one entity adds: counters by (queue, event time, field), sorted-set members with scores."""

    counters: Counters = field(default_factory=lambda: defaultdict(int))
    members: Members = field(default_factory=dict)


EMPTY = Contribution()

# A window key names one Redis structure:
#   ("b", queue, bucket) | ("d", queue, day) | ("n", queue, "") | ("t", queue, "")   counter hashes
#   ("zw", queue, bucket) | ("zwd", queue, day) | ("zq", queue, "") | ("za:<state>", queue, "")   sorted sets
WindowKey = tuple[str, str, object]
COUNTER_HASHES = ("b", "d", "n", TOTAL)  # window-key kinds stored as hashes (the rest are sorted sets)


class Deltas:
    """A batch's writes, pre-aggregated: counter increments and sorted-set adds/removes.

    ``add`` only sums each entity's ``after - before`` per (queue, minute, field); spreading
    onto buckets, days and lifetime totals happens once per distinct key when ``counters`` is
    read, so the cost per entity does not depend on how many structures a field lands in.
    """

    __slots__ = ("_raw", "_spread", "_cfg", "zadd", "zrem")

    def __init__(self) -> None:
        self._raw: dict[tuple[str, Optional[int], str], int] = defaultdict(int)
        self._spread: dict[WindowKey, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._cfg: Optional[MetricsConfig] = None
        self.zadd: dict[WindowKey, dict[str, int]] = defaultdict(dict)
        self.zrem: dict[WindowKey, set[str]] = defaultdict(set)

    @property
    def counters(self) -> dict[WindowKey, dict[str, int]]:
        """Counter increments per window key (``("b", queue, bucket)``, ``("d", queue, day)``...)."""
        raw, cfg = self._raw, self._cfg
        if raw and cfg is not None:
            out, width = self._spread, cfg.bucket_seconds
            for (queue, ts, name), d in raw.items():
                if not d:
                    continue
                if ts is None:
                    out[("n", queue, "")][name] += d
                elif name.startswith(HIST):
                    out[(TOTAL, queue, "")][name] += d
                else:
                    out[("b", queue, bucket_start(ts, width))][name] += d
                    out[("d", queue, day_of(ts, cfg.queue(queue)))][name] += d
                    if name in TOTAL_FIELDS or name.startswith(BLOCKED_REASON):
                        out[(TOTAL, queue, "")][name] += d
            raw.clear()
        return self._spread

    def add(self, before: Contribution, after: Contribution, cfg: MetricsConfig) -> None:
        """Record ``after - before``; counters are summed per minute and spread when read."""
        self._cfg = cfg
        raw = self._raw
        b, a = before.counters, after.counters
        # Minutes are the unit: buckets are whole minutes or divide one, and day boundaries fall on
        # whole minutes (every time zone's offset since 1980 is whole minutes; resets are HH:MM).
        unit = _unit_ms(cfg.bucket_seconds)
        for key, v in a.items():
            d = v - b.get(key, 0)
            if d:
                queue, ts, name = key
                raw[(queue, None if ts is None else ts - ts % unit, name)] += d
        for key, v in b.items():
            if key not in a and v:
                queue, ts, name = key
                raw[(queue, None if ts is None else ts - ts % unit, name)] -= v
        if not (before.members or after.members):
            return
        width = cfg.bucket_seconds
        for key in before.members.keys() | after.members.keys():
            score = after.members.get(key)
            if score is not None and before.members.get(key) == score:
                continue
            kind, queue, ts, member = key
            if ts is None:
                targets: list[WindowKey] = [(kind, queue, "")]
            else:
                targets = [(kind, queue, bucket_start(ts, width)), (kind + "d", queue, day_of(ts, cfg.queue(queue)))]
            for wk in targets:
                if score is None:
                    self.zadd[wk].pop(member, None)
                    self.zrem[wk].add(member)
                else:
                    self.zrem[wk].discard(member)
                    self.zadd[wk][member] = score


def _unit_ms(bucket_seconds: int) -> int:
    """The finest grain a counter needs: a minute, or the bucket width when it does not fill one."""
    return math.gcd(bucket_seconds * 1000, 60_000)


class BaseCore:
    """Defaults shared by the domain cores: keyed by the event's entity id, nothing to compact."""

    # Whether ``contributions(..., leaving=True)`` can differ for a finished entity (tickets: it can).
    leaving_changes = False

    @staticmethod
    def key(ev: Event) -> str:
        """The entity id (``call_id``, ``agent_id``...)."""
        return ev.entity_id

    @staticmethod
    def compact(state: object, horizon_ms: int) -> object:
        """Most entities keep their whole (short) history."""
        return state


# --------------------------------------------------------------- calls: state

Mark = tuple[int, str]  # (ts_ms, event_id) of the event that recorded a step


class Leg(msgspec.Struct, frozen=True, omit_defaults=True):
    """What is known of one call leg ``(call_id, queue)``: each step's event, and its payload."""

    offered: Optional[Mark] = None
    blocked: Optional[Mark] = None
    block_reason: Optional[str] = None
    answered: Optional[Mark] = None
    agent_id: Optional[str] = None
    abandoned: Optional[Mark] = None
    timed_out: Optional[Mark] = None
    ended: Optional[Mark] = None
    hold_ms: Optional[int] = None
    wrapup: Optional[Mark] = None


class CallState(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every leg of one call, the event ids applied (for dedup), and its first and last event time."""

    legs: dict[str, Leg] = {}
    seen: tuple[str, ...] = ()
    first_ms: int = 0
    last_ms: int = 0


_STEP = {
    CallOffered: "offered",
    CallBlocked: "blocked",
    CallAnswered: "answered",
    CallAbandoned: "abandoned",
    CallTimedOut: "timed_out",
    CallEnded: "ended",
    CallWrapupCompleted: "wrapup",
}
# A leg follows one path: answered (-> ended -> wrap-up), abandoned, timed out, or blocked.
_PATH = {"answered": "answered", "ended": "answered", "wrapup": "answered", "abandoned": "abandoned",
         "timed_out": "timed_out", "blocked": "blocked"}


def _path(leg: Leg) -> Optional[str]:
    for step, path in _PATH.items():
        if getattr(leg, step) is not None:
            return path
    return None


def outcome(leg: Leg) -> Optional[tuple[str, int]]:
    """How the leg left the queue, and when: answered, abandoned or timed out."""
    for step in ("answered", "abandoned", "timed_out"):
        mark = getattr(leg, step)
        if mark is not None:
            return step, mark[0]
    return None


def transferred(state: CallState, queue: str, leg: Leg) -> bool:
    """A leg with no outcome left its queue when the call was offered to another queue later."""
    assert leg.offered is not None
    return any(o.offered is not None and o.offered[0] > leg.offered[0] for q, o in state.legs.items() if q != queue)


def leg_finished(state: CallState, queue: str, leg: Leg) -> bool:
    """Nothing more is expected for this leg."""
    if leg.blocked or leg.abandoned or leg.timed_out or (leg.answered and leg.ended and leg.wrapup):
        return True
    return leg.offered is not None and outcome(leg) is None and transferred(state, queue, leg)


class CallsCore(BaseCore):
    """The call domain: one state per ``call_id``."""

    name = "calls"
    state_type = CallState

    @staticmethod
    def apply(state: Optional[CallState], ev: Event, cfg: MetricsConfig) -> tuple[Optional[CallState], str, str]:
        """Fold one event into the call; returns (new state, problem, detail) with problem "" when applied."""
        assert isinstance(ev, CallEvent)
        ts = ev.ts_ms
        state = state or CallState(first_ms=ts, last_ms=ts)
        if ev.event_id in state.seen:
            return None, "duplicate", ""
        step = _STEP[type(ev)]
        leg = state.legs.get(ev.queue) or Leg()
        if getattr(leg, step) is not None:
            return None, "invalid_transition", f"{ev.type} was already recorded for call {ev.call_id} in {ev.queue}"
        path, have = _PATH.get(step), _path(leg)
        if (path is not None and have is not None and path != have) or (step == "offered" and have == "blocked") or (
            step == "blocked" and leg.offered is not None
        ):
            return None, "invalid_transition", (
                f"{ev.type} cannot follow the {have or 'offered'} path already recorded for call "
                f"{ev.call_id} in {ev.queue}"
            )
        changes: dict[str, object] = {step: (ts, ev.event_id)}
        if isinstance(ev, CallBlocked):
            changes["block_reason"] = ev.reason
        elif isinstance(ev, CallAnswered):
            changes["agent_id"] = ev.agent_id
        elif isinstance(ev, CallEnded) and ev.hold_seconds is not None:
            changes["hold_ms"] = round(ev.hold_seconds * 1000)
        leg = msgspec.structs.replace(leg, **changes)
        return (
            CallState(
                legs={**state.legs, ev.queue: leg},
                seen=state.seen + (ev.event_id,),
                first_ms=min(state.first_ms, ts),
                last_ms=max(state.last_ms, ts),
            ),
            "",
            "",
        )

    @staticmethod
    def contributions(state: CallState, cfg: MetricsConfig, expired: bool = False, leaving: bool = False) -> Contribution:
        """Everything one call adds to counters and sets; an expired call is no longer waiting."""
        out = Contribution()
        c, m = out.counters, out.members
        for queue, leg in state.legs.items():
            if leg.blocked is not None:
                c[(queue, leg.blocked[0], BLOCKED)] += 1
                c[(queue, leg.blocked[0], BLOCKED_REASON + (leg.block_reason or "unknown"))] += 1
            if leg.offered is None:
                continue  # outcomes are held until the offer arrives: the wait is unknown before
            offered, leg_id = leg.offered
            c[(queue, offered, OFFERED)] += 1
            result = outcome(leg)
            if result is None:
                if not expired and not transferred(state, queue, leg):
                    m[(Z_WAITING, queue, None, f"{state_key_of(leg)}")] = offered
                continue
            step, at = result
            wait = max(0, at - offered)
            q = cfg.queue(queue)
            m[(Z_WAIT, queue, at, leg_id)] = wait
            bucket, total = hist_fields(WAIT_HIST + step, q.wait_bounds_ms, wait)
            c[(queue, at, bucket)] += 1
            c[(queue, at, total)] += wait
            if step == "answered":
                c[(queue, at, ANSWERED)] += 1
                c[(queue, at, ANSWER_WAIT_MS)] += wait
                if wait <= q.sl_threshold_ms:
                    c[(queue, at, ANSWERED_IN_SL)] += 1
                if leg.ended is not None:
                    ended = leg.ended[0]
                    c[(queue, ended, HANDLED)] += 1
                    c[(queue, ended, TALK_MS)] += max(0, ended - at)
                    c[(queue, ended, HOLD_MS)] += leg.hold_ms or 0
                    if leg.wrapup is not None:
                        c[(queue, leg.wrapup[0], WRAPUPS)] += 1
                        c[(queue, leg.wrapup[0], ACW_MS)] += max(0, leg.wrapup[0] - ended)
            elif step == "abandoned":
                c[(queue, at, ABANDONED)] += 1
                if wait <= q.short_abandon_ms:
                    c[(queue, at, SHORT_ABANDONED)] += 1
                if wait <= q.sl_threshold_ms:
                    c[(queue, at, ABANDONED_IN_SL)] += 1
            else:
                c[(queue, at, TIMED_OUT)] += 1
        return out

    @staticmethod
    def due(state: CallState, cfg: MetricsConfig) -> tuple[int, bool]:
        """When the call may leave memory, and whether it is finished (else it will expire)."""
        legs = state.legs
        if len(legs) == 1:  # the common case, inlined: one leg cannot have been transferred
            (leg,) = legs.values()
            done = bool(leg.blocked or leg.abandoned or leg.timed_out or (leg.answered and leg.ended and leg.wrapup))
        else:
            done = all(leg_finished(state, q, leg) for q, leg in legs.items())
        if done:
            return state.last_ms + cfg.lateness_ms, True
        return state.first_ms + cfg.call_max_age_seconds * 1000, False



def state_key_of(leg: Leg) -> str:
    """A leg's stable member id in sorted sets: its offer's event id."""
    return leg.offered[1] if leg.offered else ""


# -------------------------------------------------------------- agents: state

AgentMark = tuple[int, str, str, tuple[str, ...]]  # (ts_ms, event_id, state, queues)


class AgentStateRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """An agent's state changes still within the lateness horizon (sorted by time), and the ids seen."""

    agent_id: str = ""
    changes: tuple[AgentMark, ...] = ()
    seen: tuple[str, ...] = ()
    reasons: tuple[tuple[str, str], ...] = ()  # (event_id, reason) of the changes that gave one (the agent view)

    def latest(self) -> Optional[tuple[int, str, tuple[str, ...], Optional[str]]]:
        """(since ms, state, queues, reason) of the newest change."""
        if not self.changes:
            return None
        since, event_id, st, queues = self.changes[-1]
        return since, st, queues, dict(self.reasons).get(event_id)


def _split_ms(start: int, end: int, width_s: int) -> Iterable[tuple[int, int]]:
    """Split ``[start, end)`` into (a time inside the bucket, ms in it) per bucket it touches."""
    width = width_s * 1000
    t = start
    while t < end:
        edge = (t // width + 1) * width
        yield t, min(edge, end) - t
        t = min(edge, end)


class AgentsCore(BaseCore):
    """The agent domain: one state per ``agent_id``; gauges per queue from the latest state."""

    name = "agents"
    state_type = AgentStateRecord

    @staticmethod
    def apply(
        state: Optional[AgentStateRecord], ev: Event, cfg: MetricsConfig
    ) -> tuple[Optional[AgentStateRecord], str, str]:
        """Insert one state change in time order."""
        state = state or AgentStateRecord()
        if ev.event_id in state.seen:
            return None, "duplicate", ""
        mark: AgentMark = (ev.ts_ms, ev.event_id, ev.state, tuple(ev.queues))  # type: ignore[attr-defined]
        reason = ev.reason  # type: ignore[attr-defined]
        new = AgentStateRecord(
            agent_id=ev.agent_id,  # type: ignore[attr-defined]
            changes=tuple(sorted(state.changes + (mark,))),
            seen=state.seen + (ev.event_id,),
            reasons=state.reasons + ((ev.event_id, reason),) if reason else state.reasons,
        )
        return new, "", ""

    @staticmethod
    def contributions(state: AgentStateRecord, cfg: MetricsConfig, expired: bool = False,
                      leaving: bool = False) -> Contribution:
        """Closed state intervals into buckets; the latest state as gauges and open-interval members."""
        out = Contribution()
        c, m = out.counters, out.members
        changes = state.changes
        for (start, _, st, queues), (end, *_rest) in zip(changes, changes[1:]):
            if st not in OCCUPANCY_STATES:
                continue
            for at, ms in _split_ms(start, end, cfg.bucket_seconds):
                for q in queues:
                    c[(q, at, AGENT_MS + st)] += ms
        if changes and not expired:
            since, _, st, queues = changes[-1]
            agent = state.agent_id
            for q in queues:
                c[(q, None, AGENT_GAUGE + st)] += 1
                if st != "offline":
                    c[(q, None, STAFFED)] += 1
                if st in OCCUPANCY_STATES:
                    m[(Z_OPEN + st, q, None, agent)] = since
        return out

    @staticmethod
    def due(state: AgentStateRecord, cfg: MetricsConfig) -> tuple[Optional[int], bool]:
        """An agent leaves memory only after being offline for the idle-eviction time."""
        if state.changes and state.changes[-1][2] == "offline":
            return state.changes[-1][0] + max(cfg.agent_idle_eviction_seconds * 1000, cfg.lateness_ms), True
        return None, True

    @staticmethod
    def compact(state: AgentStateRecord, horizon_ms: int) -> AgentStateRecord:
        """Drop changes whose intervals end before the horizon: no on-time event can alter them."""
        changes = state.changes
        keep_from = 0
        for i, ch in enumerate(changes):
            if ch[0] < horizon_ms:
                keep_from = i
        if keep_from == 0:
            return state
        dropped = {ch[1] for ch in changes[:keep_from]}
        return AgentStateRecord(
            agent_id=state.agent_id, changes=changes[keep_from:], seen=tuple(e for e in state.seen if e not in dropped),
            reasons=tuple(r for r in state.reasons if r[0] not in dropped),
        )



# ------------------------------------------------------------- surveys: state


class SurveyRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """The one response of a survey."""

    event_id: str = ""
    ts_ms: int = 0
    kind: str = ""
    score: int = 0
    queue: str = ""
    agent_id: Optional[str] = None


class SurveysCore(BaseCore):
    """The survey domain: one response per ``survey_id``."""

    name = "surveys"
    state_type = SurveyRecord

    @staticmethod
    def apply(state: Optional[SurveyRecord], ev: Event, cfg: MetricsConfig) -> tuple[Optional[SurveyRecord], str, str]:
        """Record the response; a second one with another id is an invalid transition."""
        assert isinstance(ev, SurveyResponse)
        if state is not None:
            if state.event_id == ev.event_id:
                return None, "duplicate", ""
            return None, "invalid_transition", f"survey {ev.survey_id} already has a response ({state.event_id})"
        return SurveyRecord(ev.event_id, ev.ts_ms, ev.kind, ev.score, ev.queue, ev.agent_id), "", ""

    @staticmethod
    def contributions(state: SurveyRecord, cfg: MetricsConfig, expired: bool = False, leaving: bool = False) -> Contribution:
        """Responses by kind, satisfied / promoters / detractors / CES sum, also per agent."""
        out = Contribution()
        fields = survey_fields(state.kind, state.score)
        for name, value in fields.items():
            out.counters[(state.queue, state.ts_ms, name)] += value
            if state.agent_id:
                out.counters[(state.queue, state.ts_ms, f"{BY_AGENT}{state.agent_id}:{name}")] += value
        return out

    @staticmethod
    def due(state: SurveyRecord, cfg: MetricsConfig) -> tuple[Optional[int], bool]:
        """A survey is final at once; it stays only for dedup within the lateness."""
        return state.ts_ms + cfg.lateness_ms, True



def survey_fields(kind: str, score: int) -> dict[str, int]:
    """The counter fields one response adds."""
    out = {SURVEY + kind: 1}
    if kind == "csat" and score >= 4:
        out[CSAT_SATISFIED] = 1
    elif kind == "nps":
        if score >= 9:
            out[NPS_PROMOTERS] = 1
        elif score <= 6:
            out[NPS_DETRACTORS] = 1
    elif kind == "ces":
        out[CES_SUM] = score
    return out


# -------------------------------------------------------------- tickets: state


class TicketRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """A ticket's events, sorted by time (their ids double as the dedup set)."""

    ticket_id: str = ""
    events: tuple[TicketEventTuple, ...] = ()


def ticket_event_tuple(ev: Event) -> TicketEventTuple:
    """The compact form of a ticket event kept in the ticket's state."""
    ts, eid = ev.ts_ms, ev.event_id
    if isinstance(ev, TicketCreated):
        return (ts, eid, "created", ev.queue, ev.channel, ev.priority)
    if isinstance(ev, TicketReplied):
        return (ts, eid, "reply", ev.author, "1" if ev.public else "0", "")
    if isinstance(ev, TicketStatusChanged):
        return (ts, eid, "status", ev.status, "", "")
    if isinstance(ev, TicketAssigned):
        return (ts, eid, "assign", ev.queue or "", ev.agent_id, "")
    if isinstance(ev, TicketEscalated):
        return (ts, eid, "escalate", "", "", "")
    return (ts, eid, "reopen", "", "", "")


class TicketsCore(BaseCore):
    """The ticket domain: creations, SLA clocks, FCR and open-ticket gauges (``agents/tickets.py``)."""

    name = "tickets"
    state_type = TicketRecord
    leaving_changes = True  # a ticket leaving memory finalizes its FCR

    @staticmethod
    def apply(state: Optional[TicketRecord], ev: Event, cfg: MetricsConfig) -> tuple[Optional[TicketRecord], str, str]:
        """Insert the event in time order; a second ``ticket.created`` with another id is an invalid transition."""
        state = state or TicketRecord(ticket_id=ev.ticket_id)  # type: ignore[attr-defined]
        if any(e[1] == ev.event_id for e in state.events):
            return None, "duplicate", ""
        if isinstance(ev, TicketCreated) and any(e[2] == "created" for e in state.events):
            return None, "invalid_transition", f"ticket {ev.ticket_id} was already created"
        events = tuple(sorted(state.events + (ticket_event_tuple(ev),)))
        return TicketRecord(state.ticket_id, events), "", ""

    @staticmethod
    def contributions(state: TicketRecord, cfg: MetricsConfig, expired: bool = False, leaving: bool = False) -> Contribution:
        """``tickets_created`` by channel and priority, plus every fact of ``ticket_facts``."""
        out = Contribution()
        created = next((e for e in state.events if e[2] == "created"), None)
        if created is None:
            return out
        ts, _, _, queue, channel, priority = created
        for name in (TICKETS_CREATED, f"{TICKETS_CREATED}:channel:{channel}", f"{TICKETS_CREATED}:priority:{priority}"):
            out.counters[(queue, ts, name)] += 1
        facts = ticket_facts(state.events, cfg, final=leaving)
        for q, at, name, n in facts.counters:
            out.counters[(q, at, name)] += n
        for q, name, n in facts.gauges:
            out.counters[(q, None, name)] += n
        for kind, q, score in facts.members:
            out.members[(kind, q, None, state.ticket_id)] = score
        return out

    @staticmethod
    def due(state: TicketRecord, cfg: MetricsConfig) -> tuple[Optional[int], bool]:
        """A solved or closed ticket leaves after the lateness and its FCR window; open ones stay."""
        return ticket_due(state.events, cfg), True



# ----------------------------------------------------------------- KPIs: state


class KpiRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """The latest sample of one KPI per queue (``""``: no queue): (ts_ms, event_id, value in millionths)."""

    name: str = ""
    latest: dict[str, tuple[int, str, int]] = {}


class KpisCore(BaseCore):
    """The KPI domain: a plain gauge per name (and queue), the latest sample by event time."""

    name = "kpis"
    state_type = KpiRecord

    @staticmethod
    def apply(state: Optional[KpiRecord], ev: Event, cfg: MetricsConfig) -> tuple[Optional[KpiRecord], str, str]:
        """Keep the newest sample; an older one is applied but changes nothing."""
        assert isinstance(ev, KpiSample)
        state = state or KpiRecord()
        queue = ev.queue or GLOBAL
        mark = (ev.ts_ms, ev.event_id, round(ev.value * KPI_SCALE))
        cur = state.latest.get(queue)
        if cur is not None and cur[:2] == mark[:2]:
            return None, "duplicate", ""
        if cur is not None and cur[:2] > mark[:2]:
            return state, "", ""
        return KpiRecord(name=ev.name, latest={**state.latest, queue: mark}), "", ""

    @staticmethod
    def contributions(state: KpiRecord, cfg: MetricsConfig, expired: bool = False, leaving: bool = False) -> Contribution:
        """The latest value as a gauge."""
        out = Contribution()
        for queue, (_ts, _eid, value) in state.latest.items():
            out.counters[(queue, None, KPI + state.name)] += value
        return out

    @staticmethod
    def due(state: KpiRecord, cfg: MetricsConfig) -> tuple[Optional[int], bool]:
        """KPIs stay: one record per name."""
        return None, True



# ------------------------------------------------------------ batch: generic


class DomainCore(Protocol):
    """What the batch loop needs of a domain."""

    name: str
    state_type: type

    @staticmethod
    def key(ev: Event) -> str: ...

    @staticmethod
    def apply(state, ev: Event, cfg: MetricsConfig): ...  # type: ignore[no-untyped-def]

    @staticmethod
    def contributions(state, cfg: MetricsConfig, expired: bool = False, leaving: bool = False) -> Contribution: ...  # type: ignore[no-untyped-def]

    @staticmethod
    def due(state, cfg: MetricsConfig) -> tuple[Optional[int], bool]: ...  # type: ignore[no-untyped-def]

    @staticmethod
    def compact(state, horizon_ms: int): ...  # type: ignore[no-untyped-def]

    leaving_changes: bool


@dataclass
class PartitionState:
    """One partition's working state: entities, stream time and the due-time heap.

    ``apply_batch`` mutates it; a caller whose commit fails must drop it and reload.
    """

    states: dict[str, object] = field(default_factory=dict)
    stream_ms: Optional[int] = None
    heap: list[tuple[int, str]] = field(default_factory=list)
    # (due, finished) of each entity's state as of the end of the last batch: saves recomputing it per event.
    dues: dict[str, tuple[Optional[int], bool]] = field(default_factory=dict)

    def index(self, core: DomainCore, cfg: MetricsConfig) -> None:
        """Rebuild the due-time heap (after loading states from the store)."""
        self.heap = []
        self.dues = {}
        for k, st in self.states.items():
            due = self.dues[k] = core.due(st, cfg)
            if due[0] is not None:
                self.heap.append((due[0], k))
        heapq.heapify(self.heap)


@dataclass
class BatchResult:
    """What one batch changes: entity states (``None``: deleted), deltas, and what was rejected."""

    changed: dict[str, object] = field(default_factory=dict)
    deltas: Deltas = field(default_factory=Deltas)
    queues: set[str] = field(default_factory=set)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (index in events, reason, detail)
    applied: int = 0
    duplicates: int = 0
    late: int = 0
    invalid: int = 0
    expired: int = 0
    evicted: int = 0


def apply_batch(
    core: DomainCore, part: PartitionState, events: Sequence[Event], cfg: MetricsConfig,
    result: Optional[BatchResult] = None,
) -> BatchResult:
    """Apply a batch in arrival order: lateness, eviction, dedup, transitions; then sweep the heap."""
    res = result or BatchResult()
    before: dict[str, Contribution] = {}
    custom = Contribution()
    lateness = cfg.lateness_ms
    dues, queues = part.dues, res.queues

    def retire(k: str, st: object, finished: bool) -> None:
        # The entity leaves memory; an unfinished one expires and leaves the live gauges.
        base = before.pop(k, None)
        if base is None and (not finished or core.leaving_changes):
            base = core.contributions(st, cfg)
        if base is not None:  # else leaving changes nothing: a finished entity adds the same whether kept or not
            res.deltas.add(base, core.contributions(st, cfg, expired=not finished, leaving=True), cfg)
        del part.states[k]
        part.dues.pop(k, None)
        res.changed[k] = None
        if finished:
            res.evicted += 1
        else:
            res.expired += 1

    states, key, due_of, apply, contributions = part.states, core.key, core.due, core.apply, core.contributions
    custom_counters = cfg.custom_counters
    stream = part.stream_ms
    for i, ev in enumerate(events):
        ts = round(ev.ts * 1000)  # == ev.ts_ms, without the property call (the hottest loop in ccmon)
        if stream is not None and ts < stream - lateness:
            res.late += 1
            res.rejected.append((i, "late", f"event time is {(stream - ts) / 1000:.3f}s behind the partition's "
                                            f"stream time; the lateness allowed is {cfg.lateness_seconds}s"))
            continue
        k = key(ev)
        st = states.get(k)
        if st is not None and stream is not None:
            known = None if k in before else dues.get(k)
            due, finished = known if known is not None else due_of(st, cfg)
            if due is not None and due < stream:
                retire(k, st, finished)
                st = None
        new, problem, detail = apply(st, ev, cfg)
        if problem == "duplicate":
            res.duplicates += 1
            continue
        if problem:
            res.invalid += 1
            res.rejected.append((i, problem, detail))
            continue
        if k not in before:
            before[k] = contributions(st, cfg) if st is not None else EMPTY
        states[k] = new
        res.applied += 1
        q = getattr(ev, "queue", None)
        if q:
            queues.add(q)
        if type(ev) is AgentState:
            queues.update(ev.queues)
        for counter in custom_counters:
            if counter.matches(ev):
                custom.counters[(getattr(ev, "queue", None) or GLOBAL, ts, CUSTOM + counter.name)] += 1
        if stream is None or ts > stream:
            stream = part.stream_ms = ts

    if custom.counters:
        res.deltas.add(EMPTY, custom, cfg)
    horizon = (part.stream_ms or 0) - lateness
    for k, base in before.items():
        st = part.states[k]
        res.deltas.add(base, core.contributions(st, cfg), cfg)
        st = part.states[k] = core.compact(st, horizon)
        res.changed[k] = st
        known = dues[k] = core.due(st, cfg)
        if known[0] is not None:
            heapq.heappush(part.heap, (known[0], k))
    before.clear()  # every touched entity's delta is recorded; a sweep below starts from its new state
    stream = part.stream_ms
    while stream is not None and part.heap and part.heap[0][0] < stream:
        due_at, k = heapq.heappop(part.heap)
        st = part.states.get(k)
        if st is None:
            continue
        due, finished = core.due(st, cfg)
        if due == due_at:  # else a stale entry: the entity changed since it was pushed
            retire(k, st, finished)
    if len(part.heap) > 4 * len(part.states) + 1024:
        part.index(core, cfg)  # drop stale entries so the heap stays proportional to the live entities
    return res


CORES: dict[str, DomainCore] = {  # type: ignore[dict-item]
    "calls": CallsCore, "agents": AgentsCore, "tickets": TicketsCore, "surveys": SurveysCore, "kpis": KpisCore,
}

_encoder = msgspec.msgpack.Encoder()
_decoders = {name: msgspec.msgpack.Decoder(core.state_type) for name, core in CORES.items()}


def encode_state(state: object) -> bytes:
    """Serialize an entity state for the store."""
    return _encoder.encode(state)


def decode_state(domain: str, raw: bytes) -> object:
    """Deserialize an entity state written by ``encode_state``."""
    return _decoders[domain].decode(raw)
