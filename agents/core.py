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
from abc import ABC, abstractmethod
from bisect import bisect_right
from itertools import chain
import math
from operator import attrgetter
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Protocol, Sequence

import msgspec

from agents.config import HIST, MetricsConfig, bucket_bound, bucket_start, day_of, hist_fields
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
KPI_HELD = "kpi_n:"  # + name: 1 while a latest sample is held (a value of 0 leaves no ``kpi:`` field behind)
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


class Contribution(msgspec.Struct, gc=False):
    """What one entity adds: counters by (queue, event time, field), sorted-set members with scores.

    Untracked by the cyclic GC (it holds only dicts of tuples and numbers): the tickets' memo keeps tens of
    thousands of these, and the collector walking them was the worker's longest pauses.
    """

    counters: Counters = msgspec.field(default_factory=lambda: defaultdict(int))
    members: Members = msgspec.field(default_factory=dict)

    def kept(self) -> "Contribution":
        """This contribution as a memo keeps it: counters in a plain dict, which a full collection can untrack
        (it never untracks a ``defaultdict``)."""
        return Contribution(dict(self.counters), self.members)


EMPTY = Contribution()

# A window key names one Redis structure:
#   ("b", queue, bucket) | ("d", queue, day) | ("n", queue, "") | ("t", queue, "")   counter hashes
#   ("ba", queue, bucket) | ("da", queue, day)   the same bucket's and day's per-agent fields (BY_AGENT...), kept
#       apart so that a reader that shows no per-agent view (the alert evaluator) never reads them
#   ("zw", queue, bucket) | ("zwd", queue, day) | ("zq", queue, "") | ("za:<state>", queue, "")   sorted sets
WindowKey = tuple[str, str, object]
AGENT_BUCKET, AGENT_DAY = "ba", "da"
COUNTER_HASHES = ("b", "d", AGENT_BUCKET, AGENT_DAY, "n", TOTAL)  # window-key kinds stored as hashes (the rest: sets)


class Deltas:
    """A batch's writes, pre-aggregated: counter increments and sorted-set adds/removes.

    Counters are summed in ``raw`` per (queue, minute, field): the incremental cores add to it
    directly (``count``), the others through ``add`` (``after - before`` of an entity). Spreading
    onto buckets, days and lifetime totals happens once per distinct key when ``counters`` is
    read, so the cost per event does not depend on how many structures a field lands in.
    """

    __slots__ = ("raw", "unit", "_spread", "_cfg", "zops", "_zcache")

    def __init__(self) -> None:
        # (queue, start of the minute in ms, or None for a gauge, field) -> increment
        self.raw: dict[tuple[str, Optional[int], str], int] = defaultdict(int)
        self.unit = 60_000
        self._spread: dict[WindowKey, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._cfg: Optional[MetricsConfig] = None
        # (kind, queue, bucket / day / "", member) -> score, or None to remove: the last write wins
        self.zops: dict[tuple[str, str, object, str], Optional[int]] = {}
        self._zcache: Optional[tuple[dict[WindowKey, dict[str, int]], dict[WindowKey, set[str]]]] = None

    def bind(self, cfg: MetricsConfig) -> None:
        """Use ``cfg`` (bucket width, queue days) for what is recorded next."""
        if self._cfg is not cfg:
            self._cfg = cfg
            # Minutes are the unit: buckets are whole minutes or divide one, and day boundaries fall on
            # whole minutes (every time zone's offset since 1980 is whole minutes; resets are HH:MM).
            self.unit = _unit_ms(cfg.bucket_seconds)

    @property
    def counters(self) -> dict[WindowKey, dict[str, int]]:
        """Counter increments per window key (``("b", queue, bucket)``, ``("d", queue, day)``...)."""
        raw, cfg = self.raw, self._cfg
        if raw and cfg is not None:
            out, width = self._spread, cfg.bucket_seconds
            windows: dict[tuple[str, int], tuple[dict[str, int], dict[str, int], dict[str, int]]] = {}
            agent_windows: dict[tuple[str, int], tuple[dict[str, int], dict[str, int]]] = {}
            for (queue, ts, name), d in raw.items():
                if not d:
                    continue
                if ts is None:
                    out[("n", queue, "")][name] += d
                    continue
                to_total = _TO_TOTAL.get(name)
                if to_total is None:
                    to_total = _TO_TOTAL[name] = (
                        3 if name.startswith(BY_AGENT) else 2 if name.startswith(HIST)
                        else 1 if name in TOTAL_FIELDS or name.startswith(BLOCKED_REASON) else 0)
                if to_total == 3:  # an agent's own field: the agent bucket and day hashes
                    a = agent_windows.get((queue, ts))
                    if a is None:
                        a = agent_windows[(queue, ts)] = (out[(AGENT_BUCKET, queue, bucket_start(ts, width))],
                                                          out[(AGENT_DAY, queue, day_of(ts, cfg.queue(queue)))])
                    a[0][name] += d
                    a[1][name] += d
                    continue
                # The bucket, day and lifetime hashes of this (queue, minute), looked up once per batch.
                w = windows.get((queue, ts))
                if w is None:
                    w = windows[(queue, ts)] = (out[("b", queue, bucket_start(ts, width))],
                                                out[("d", queue, day_of(ts, cfg.queue(queue)))], out[(TOTAL, queue, "")])
                if to_total == 2:
                    w[2][name] += d  # histograms count only in the lifetime hash
                else:
                    w[0][name] += d
                    w[1][name] += d
                    if to_total:
                        w[2][name] += d
            raw.clear()
        return self._spread

    def add(self, before: Contribution, after: Contribution, cfg: MetricsConfig) -> None:
        """Record ``after - before``; counters are summed per minute and spread when read."""
        self.bind(cfg)
        raw, unit = self.raw, self.unit
        b, a = before.counters, after.counters
        for key, v in a.items():
            d = v - b.get(key, 0)
            if d:
                queue, ts, name = key
                raw[(queue, None if ts is None else ts - ts % unit, name)] += d
        for key, v in b.items():
            if key not in a and v:
                queue, ts, name = key
                raw[(queue, None if ts is None else ts - ts % unit, name)] -= v
        if before.members or after.members:
            self.members(before.members, after.members)

    def members(self, before: Members, after: Members) -> None:
        """Record the sorted-set changes from ``before`` to ``after`` (keys ``(kind, queue, ts or None, member)``)."""
        for key in before.keys() | after.keys():
            score = after.get(key)
            if score is None:
                self.zdel(*key)
            elif before.get(key) != score:
                self.zset(*key, score)

    def zset(self, kind: str, queue: str, ts: Optional[int], member: str, score: Optional[int]) -> None:
        """Set ``member``'s score in the sorted set ``kind`` of ``queue`` (its bucket's and day's when ``ts``);
        a score of None removes it. The last call for a member wins."""
        ops = self.zops
        self._zcache = None
        if ts is None:
            ops[(kind, queue, "", member)] = score
        else:
            cfg = self._cfg
            assert cfg is not None, "bind(cfg) first"
            width = cfg.bucket_seconds
            ops[(kind, queue, ts // (width * 1000) * width, member)] = score
            ops[(_DAY_KIND.get(kind) or _day_kind(kind), queue, day_of(ts, cfg.queue(queue)), member)] = score

    def zdel(self, kind: str, queue: str, ts: Optional[int], member: str) -> None:
        """Remove ``member`` from the sorted set ``kind`` of ``queue``."""
        self.zset(kind, queue, ts, member, None)

    @property
    def zadd(self) -> dict[WindowKey, dict[str, int]]:
        """Members to add (or re-score) per sorted set."""
        return self._zsplit()[0]

    @property
    def zrem(self) -> dict[WindowKey, set[str]]:
        """Members to remove per sorted set."""
        return self._zsplit()[1]

    def _zsplit(self) -> tuple[dict[WindowKey, dict[str, int]], dict[WindowKey, set[str]]]:
        if self._zcache is None:
            add: dict[WindowKey, dict[str, int]] = defaultdict(dict)
            rem: dict[WindowKey, set[str]] = defaultdict(set)
            for (kind, queue, part, member), score in self.zops.items():
                if score is None:
                    rem[(kind, queue, part)].add(member)
                else:
                    add[(kind, queue, part)][member] = score
            self._zcache = (add, rem)
        return self._zcache


_DAY_KIND: dict[str, str] = {}  # sorted-set kind -> the kind of its per-day set ("zw" -> "zwd")


def _day_kind(kind: str) -> str:
    name = _DAY_KIND[kind] = kind + "d"
    return name


# Where a counter field counts: 0 buckets and days, 1 also the lifetime hash, 2 only there (histograms), 3 the agent
# bucket and day hashes (an agent's own field).
_TO_TOTAL: dict[str, int] = {}


def _unit_ms(bucket_seconds: int) -> int:
    """The finest grain a counter needs: a minute, or the bucket width when it does not fill one."""
    return math.gcd(bucket_seconds * 1000, 60_000)


class BaseCore:
    """Defaults shared by the domain cores: keyed by the event's entity id, nothing to compact."""

    # Whether ``contributions(..., leaving=True)`` can differ for a finished entity (tickets: it can).
    leaving_changes = False
    # Incremental cores define ``step(state, event, ts_ms, cfg, deltas)``: it updates the state in place
    # and records the event's effect, equal to ``contributions`` after minus before. The batch loop
    # diffs ``contributions`` once per touched entity for the cores without one.
    step: Optional[Callable[..., tuple[object, str, str]]] = None
    # Cores without ``step`` may define ``inert(state, event)``: True when folding the event into ``state`` (not None)
    # leaves ``contributions`` as they are. The batch loop then keeps the new state, its due time and the remembered
    # contributions, and neither recomputes nor diffs them for that event.
    inert: Optional[Callable[[object, Event], bool]] = None
    name = ""

    @classmethod
    def apply(cls, state: object, ev: Event, cfg: MetricsConfig) -> tuple[object, str, str]:
        """Fold one event into a copy of ``state``: (new state, problem, detail), problem "" when applied."""
        assert cls.step is not None
        copy = None if state is None else decode_state(cls.name, encode_state(state))
        deltas = Deltas()
        deltas.bind(cfg)
        new, problem, detail = cls.step(copy, ev, round(ev.ts * 1000), cfg, deltas)
        return new, problem, detail

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


class Leg(msgspec.Struct, omit_defaults=True, gc=False):
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


class CallState(msgspec.Struct, omit_defaults=True, gc=False):
    """Every leg of one call, the event ids applied (for dedup), and its first and last event time.

    Mutable: ``CallsCore.step`` updates it in place. It holds only strings, numbers and containers
    of them (no cycles), so the garbage collector need not track it.
    """

    legs: dict[str, Leg] = {}
    seen: tuple[str, ...] = ()  # a tuple, not a list: the collector stops tracking it, a list it walks forever
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
# Steps that can change which legs are waiting (an offer can also move another leg on).
_WAIT_STEPS = frozenset({"offered", "answered", "abandoned", "timed_out"})
# The steps each term of a leg's contribution needs: a term is counted when the last of them is recorded.
_HANDLED_STEPS = frozenset({"offered", "answered", "ended"})
_WRAPUP_STEPS = frozenset({"offered", "answered", "ended", "wrapup"})


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


def waiting(state: CallState) -> Members:
    """The call's legs waiting now (offered, no outcome, not moved on to a later queue), as members."""
    out: Members = {}
    legs = state.legs
    for queue, leg in legs.items():
        offered = leg.offered
        if offered is None or leg.answered is not None or leg.abandoned is not None or leg.timed_out is not None:
            continue
        if len(legs) > 1 and transferred(state, queue, leg):
            continue
        out[(Z_WAITING, queue, None, offered[1])] = offered[0]
    return out


_wait_fields: dict[tuple[str, tuple[int, ...], Optional[int]], tuple[str, str]] = {}


def _wait_hist(step: str, bounds: tuple[int, ...], wait: int) -> tuple[str, str]:
    """``hist_fields`` of a wait, cached per (outcome, bounds, bucket): the f-strings are the cost."""
    bound = bucket_bound(bounds, wait)
    key = (step, bounds, bound)
    names = _wait_fields.get(key)
    if names is None:
        names = _wait_fields[key] = hist_fields(WAIT_HIST + step, bounds, wait)
    return names


class CallsCore(BaseCore):
    """The call domain: one state per ``call_id``."""

    name = "calls"
    state_type = CallState
    key = attrgetter("call_id")

    @staticmethod
    def step(state: Optional[CallState], ev: Event, ts: int, cfg: MetricsConfig,
             deltas: Deltas) -> tuple[Optional[CallState], str, str]:
        """Record one event in the call (in place) and its effect on the counters.

        Returns (state, problem, detail) with problem "" when applied. Each term of a leg's
        ``contributions`` is fixed once all the steps it needs are recorded (a step is recorded
        once), so it is counted when the last of them arrives, in whatever order they come; the
        waiting gauge, which an offer on another queue can end, is diffed instead.
        """
        assert isinstance(ev, CallEvent)
        eid = ev.event_id
        if state is None:
            state = CallState(first_ms=ts, last_ms=ts)
        elif eid in state.seen:
            return None, "duplicate", ""
        step = _STEP[type(ev)]
        queue = ev.queue
        legs = state.legs
        leg = legs.get(queue)
        # The waiting gauge: one leg (the common case) is waiting while offered with no outcome; with
        # more, an offer on one queue can move another leg on, so the whole call is diffed.
        single = not legs
        if leg is None:
            leg = Leg()  # a new leg accepts any step
        else:
            if getattr(leg, step) is not None:
                return None, "invalid_transition", f"{ev.type} was already recorded for call {ev.call_id} in {queue}"
            have = ("answered" if leg.answered or leg.ended or leg.wrapup else "abandoned" if leg.abandoned else
                    "timed_out" if leg.timed_out else "blocked" if leg.blocked else None)
            path = _PATH.get(step)
            if (path is not None and have is not None and path != have) or (step == "offered" and have == "blocked") or (
                step == "blocked" and leg.offered is not None
            ):
                return None, "invalid_transition", (
                    f"{ev.type} cannot follow the {have or 'offered'} path already recorded for call "
                    f"{ev.call_id} in {queue}"
                )
            single = len(legs) == 1
        affects_waiting = step in _WAIT_STEPS
        was_waiting: object = None
        if affects_waiting:
            if single:
                was_waiting = leg.offered is not None and leg.answered is None and leg.abandoned is None and \
                    leg.timed_out is None
            else:
                was_waiting = waiting(state)
        setattr(leg, step, (ts, eid))
        if step == "blocked":
            leg.block_reason = ev.reason  # type: ignore[attr-defined]
        elif step == "answered":
            leg.agent_id = ev.agent_id  # type: ignore[attr-defined]
        elif step == "ended" and ev.hold_seconds is not None:  # type: ignore[attr-defined]
            leg.hold_ms = round(ev.hold_seconds * 1000)  # type: ignore[attr-defined]
        legs[queue] = leg
        state.seen += (eid,)
        if ts < state.first_ms:
            state.first_ms = ts
        elif ts > state.last_ms:
            state.last_ms = ts

        c, unit = deltas.raw, deltas.unit
        if step == "blocked":
            m = ts - ts % unit
            c[(queue, m, BLOCKED)] += 1
            c[(queue, m, BLOCKED_REASON + (leg.block_reason or "unknown"))] += 1
        elif leg.offered is not None:
            offered, leg_id = leg.offered
            if step == "offered":
                c[(queue, offered - offered % unit, OFFERED)] += 1
            if leg.answered is not None:
                result, at = "answered", leg.answered[0]
            elif leg.abandoned is not None:
                result, at = "abandoned", leg.abandoned[0]
            elif leg.timed_out is not None:
                result, at = "timed_out", leg.timed_out[0]
            else:
                result = ""
            if result and (step == "offered" or step == result):
                q = cfg.queue(queue)
                wait = max(0, at - offered)
                m = at - at % unit
                deltas.zset(Z_WAIT, queue, at, leg_id, wait)
                bucket, total = _wait_hist(result, q.wait_bounds_ms, wait)
                c[(queue, m, bucket)] += 1
                c[(queue, m, total)] += wait
                if result == "answered":
                    c[(queue, m, ANSWERED)] += 1
                    c[(queue, m, ANSWER_WAIT_MS)] += wait
                    if wait <= q.sl_threshold_ms:
                        c[(queue, m, ANSWERED_IN_SL)] += 1
                elif result == "abandoned":
                    c[(queue, m, ABANDONED)] += 1
                    if wait <= q.short_abandon_ms:
                        c[(queue, m, SHORT_ABANDONED)] += 1
                    if wait <= q.sl_threshold_ms:
                        c[(queue, m, ABANDONED_IN_SL)] += 1
                else:
                    c[(queue, m, TIMED_OUT)] += 1
            if result == "answered" and leg.ended is not None:
                ended = leg.ended[0]
                if step in _HANDLED_STEPS:
                    m = ended - ended % unit
                    c[(queue, m, HANDLED)] += 1
                    c[(queue, m, TALK_MS)] += max(0, ended - at)
                    c[(queue, m, HOLD_MS)] += leg.hold_ms or 0
                if leg.wrapup is not None and step in _WRAPUP_STEPS:
                    done = leg.wrapup[0]
                    m = done - done % unit
                    c[(queue, m, WRAPUPS)] += 1
                    c[(queue, m, ACW_MS)] += max(0, done - ended)
        if affects_waiting:
            if single:
                if was_waiting or step == "offered":
                    offered_mark = leg.offered
                    assert offered_mark is not None
                    now = leg.answered is None and leg.abandoned is None and leg.timed_out is None
                    if now != was_waiting:
                        deltas.zset(Z_WAITING, queue, None, offered_mark[1], offered_mark[0] if now else None)
            else:
                now_waiting = waiting(state)
                if now_waiting != was_waiting:
                    deltas.members(was_waiting, now_waiting)  # type: ignore[arg-type]
        return state, "", ""

    @staticmethod
    def contributions(state: CallState, cfg: MetricsConfig, expired: bool = False, leaving: bool = False) -> Contribution:
        """Everything one call adds to counters and sets (the definition ``step`` keeps incrementally);
        an expired call is no longer waiting."""
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
        for queue, leg in legs.items():
            if not (leg.blocked or leg.abandoned or leg.timed_out or (leg.answered and leg.ended and leg.wrapup)):
                # A leg waiting with no outcome is finished once the call moved on to a later queue.
                if len(legs) == 1 or leg.offered is None or leg.answered or not transferred(state, queue, leg):
                    return state.first_ms + cfg.call_max_age_ms, False
        return state.last_ms + cfg.lateness_ms, True



def state_key_of(leg: Leg) -> str:
    """A leg's stable member id in sorted sets: its offer's event id."""
    return leg.offered[1] if leg.offered else ""


# -------------------------------------------------------------- agents: state

AgentMark = tuple[int, str, str, tuple[str, ...]]  # (ts_ms, event_id, state, queues)


class AgentStateRecord(msgspec.Struct, omit_defaults=True, gc=False):
    """An agent's state changes still within the lateness horizon (sorted by time), and the ids seen.

    Mutable: ``AgentsCore.step`` inserts into it in place.
    """

    agent_id: str = ""
    changes: list[AgentMark] = []
    seen: list[str] = []
    reasons: list[tuple[str, str]] = []  # (event_id, reason) of the changes that gave one (the agent view)

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


def _interval(deltas: Deltas, start: AgentMark, end_ms: int, width_s: int, sign: int) -> None:
    """Count (``sign`` 1) or uncount (-1) the closed interval from change ``start`` to ``end_ms``."""
    t, _, st, queues = start
    if st not in OCCUPANCY_STATES:
        return
    c, unit, name, width = deltas.raw, deltas.unit, AGENT_MS + st, width_s * 1000
    while t < end_ms:  # as _split_ms, inlined
        edge = t - t % width + width
        if edge > end_ms:
            edge = end_ms
        m, ms = t - t % unit, sign * (edge - t)
        for q in queues:
            c[(q, m, name)] += ms
        t = edge


def _latest_gauges(deltas: Deltas, mark: AgentMark, sign: int) -> None:
    """Count (``sign`` 1) or uncount (-1) the agent in the gauges of its latest change."""
    c, st = deltas.raw, mark[2]
    gauge = AGENT_GAUGE + st
    for q in mark[3]:
        c[(q, None, gauge)] += sign
        if st != "offline":
            c[(q, None, STAFFED)] += sign


class AgentsCore(BaseCore):
    """The agent domain: one state per ``agent_id``; gauges per queue from the latest state."""

    name = "agents"
    state_type = AgentStateRecord
    key = attrgetter("agent_id")

    @staticmethod
    def step(state: Optional[AgentStateRecord], ev: Event, ts: int, cfg: MetricsConfig,
             deltas: Deltas) -> tuple[Optional[AgentStateRecord], str, str]:
        """Insert one state change in time order (in place) and record its effect.

        A change splits the interval it lands in: the old interval is uncounted and the two new
        ones counted. A change that becomes the latest also moves the agent's gauges and members.
        """
        assert isinstance(ev, AgentState)
        if state is None:
            state = AgentStateRecord(agent_id=ev.agent_id)
        elif ev.event_id in state.seen:
            return None, "duplicate", ""
        mark: AgentMark = (ts, ev.event_id, ev.state, tuple(ev.queues))
        changes = state.changes
        i = bisect_right(changes, mark)
        prev = changes[i - 1] if i else None
        nxt = changes[i] if i < len(changes) else None
        width = cfg.bucket_seconds
        if prev is not None:
            if nxt is not None:
                _interval(deltas, prev, nxt[0], width, -1)
            _interval(deltas, prev, ts, width, 1)
        if nxt is not None:
            _interval(deltas, mark, nxt[0], width, 1)
        else:
            agent = ev.agent_id
            if prev is not None:
                _latest_gauges(deltas, prev, -1)
            _latest_gauges(deltas, mark, 1)
            if prev is not None and prev[2] in OCCUPANCY_STATES:
                for q in prev[3]:
                    deltas.zset(Z_OPEN + prev[2], q, None, agent, None)
            if ev.state in OCCUPANCY_STATES:
                for q in mark[3]:
                    deltas.zset(Z_OPEN + ev.state, q, None, agent, ts)  # the last write wins: a kept member stays
        changes.insert(i, mark)
        state.agent_id = ev.agent_id
        state.seen.append(ev.event_id)
        if ev.reason:
            state.reasons.append((ev.event_id, ev.reason))
        return state, "", ""

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
            else:
                break
        if keep_from == 0:
            return state
        dropped = {ch[1] for ch in changes[:keep_from]}
        del changes[:keep_from]
        state.seen = [e for e in state.seen if e not in dropped]
        state.reasons = [r for r in state.reasons if r[0] not in dropped]
        return state


# ------------------------------------------------------------- surveys: state


class SurveyRecord(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
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
    key = attrgetter("survey_id")

    @staticmethod
    def step(state: Optional[SurveyRecord], ev: Event, ts: int, cfg: MetricsConfig,
             deltas: Deltas) -> tuple[Optional[SurveyRecord], str, str]:
        """Record the response and count it; a second one with another id is an invalid transition."""
        assert isinstance(ev, SurveyResponse)
        if state is not None:
            if state.event_id == ev.event_id:
                return None, "duplicate", ""
            return None, "invalid_transition", f"survey {ev.survey_id} already has a response ({state.event_id})"
        c, queue, m = deltas.raw, ev.queue, ts - ts % deltas.unit
        for name, value in survey_fields(ev.kind, ev.score).items():
            c[(queue, m, name)] += value
            if ev.agent_id:
                c[(queue, m, f"{BY_AGENT}{ev.agent_id}:{name}")] += value
        return SurveyRecord(ev.event_id, ts, ev.kind, ev.score, queue, ev.agent_id), "", ""

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


class TicketRecord(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
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
    key = attrgetter("ticket_id")
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
    def inert(state: TicketRecord, ev: Event) -> bool:
        """Whether ``ev`` leaves the ticket's contributions as they are, wherever it falls in time: a reply that is
        not an agent's public one, or an assignment that moves no queue (to no queue, or to the only queue the
        ticket was created in and assigned to). ``ticket_facts`` reads neither (``tests/unit/test_tickets.py``)."""
        if isinstance(ev, TicketReplied):
            return not (ev.author == "agent" and ev.public)
        if not isinstance(ev, TicketAssigned):
            return False
        if not ev.queue:
            return True
        for e in state.events:  # the queue of its creation and of every assignment so far: all ev's queue?
            if (e[2] == "created" or e[2] == "assign") and e[3] and e[3] != ev.queue:
                return False
        return True

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


class KpiRecord(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
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
            out.counters[(queue, None, KPI_HELD + state.name)] += 1
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

    step: Optional[Callable[..., tuple[object, str, str]]]
    inert: Optional[Callable[[object, Event], bool]]

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
    # Cores without ``step``: the contribution of recently changed entities' current state (the oldest
    # go first past MEMO_SIZE), so the next batch that touches one need not recompute its "before".
    memo: dict[str, Contribution] = field(default_factory=dict)
    memo_hits: int = 0
    memo_misses: int = 0

    def compact_heap(self, core: DomainCore, cfg: MetricsConfig) -> None:
        """Drop the heap's stale entries (the entity changed or left since it was pushed), keeping one of each."""
        states, dues = self.states, self.dues
        live = set()
        for entry in self.heap:
            due_at, k = entry
            st = states.get(k)
            if st is None:
                continue
            due = dues.get(k)
            if due is None:
                due = dues[k] = core.due(st, cfg)
            if due[0] == due_at:
                live.add(entry)
        self.heap = list(live)
        heapq.heapify(self.heap)

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
    applied_ts: list[int] = field(default_factory=list)  # event time (ms) of every applied event, in order
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
    deltas = res.deltas
    deltas.bind(cfg)
    step, contributions, due_of, key, inert = core.step, core.contributions, core.due, core.key, core.inert
    compact = None if core.compact is BaseCore.compact else core.compact
    before: dict[str, Contribution] = {}  # cores without ``step``: each touched entity's contribution before
    touched: dict[str, None] = {}  # entities whose state this batch changed, in order
    restated: dict[str, None] = {}  # entities only inert events changed (``BaseCore.inert``): same contributions
    custom = Contribution()
    lateness = cfg.lateness_ms
    states, dues, changed, memo = part.states, part.dues, res.changed, part.memo
    queues, applied_ts = res.queues, res.applied_ts
    applied_before = len(applied_ts)

    def retire(k: str, st: object, finished: bool) -> None:
        # The entity leaves memory; an unfinished one expires and leaves the live gauges.
        base = before.pop(k, None)
        if base is None and (not finished or core.leaving_changes):
            base = contributions(st, cfg)
        if base is not None:  # else leaving changes nothing: a finished entity adds the same whether kept or not
            deltas.add(base, contributions(st, cfg, expired=not finished, leaving=True), cfg)
        touched.pop(k, None)
        restated.pop(k, None)
        memo.pop(k, None)
        del states[k]
        dues.pop(k, None)
        changed[k] = None
        if finished:
            res.evicted += 1
        else:
            res.expired += 1

    # Stream time as a number throughout (-inf-like before the first event): fewer branches per event.
    stream = part.stream_ms if part.stream_ms is not None else _NO_STREAM
    floor = stream - lateness
    get, dues_get, dues_pop = states.get, dues.get, dues.pop
    append_ts, add_queue, custom_counters = applied_ts.append, queues.add, cfg.custom_counters
    agents = core is AgentsCore
    for i, ev in enumerate(events):
        ts = round(ev.ts * 1000)  # == ev.ts_ms, without the property call (the hottest loop in ccmon)
        if ts < floor:
            res.late += 1
            res.rejected.append((i, "late", f"event time is {(stream - ts) / 1000:.3f}s behind the partition's "
                                            f"stream time; the lateness allowed is {cfg.lateness_seconds}s"))
            continue
        k = key(ev)
        st = get(k)
        if st is not None:
            due = dues_get(k)  # cached for states this batch has not changed yet
            if due is None:
                due = due_of(st, cfg)
            if due[0] is not None and due[0] < stream:
                retire(k, st, due[1])
                st = None
        if step is not None:
            new, problem, detail = step(st, ev, ts, cfg, deltas)
        else:
            new, problem, detail = core.apply(st, ev, cfg)
        if problem:
            if problem == "duplicate":
                res.duplicates += 1
            else:
                res.invalid += 1
                res.rejected.append((i, problem, detail))
            continue
        if k in touched:
            pass
        elif inert is not None and st is not None and inert(st, ev):
            restated[k] = None  # its contributions (and what the memo holds of them) stand
        else:
            touched[k] = None
            restated.pop(k, None)
            if step is None:
                base = None if st is None else memo.pop(k, None)
                if base is None and st is not None:
                    base = contributions(st, cfg)
                    part.memo_misses += 1
                elif st is not None:
                    part.memo_hits += 1
                before[k] = base or EMPTY
        if new is not st:
            states[k] = new
        if st is not None:
            dues_pop(k, None)
        append_ts(ts)
        q = getattr(ev, "queue", None)
        if q:
            add_queue(q)
        if agents:
            queues.update(ev.queues)  # type: ignore[attr-defined]
        if custom_counters:
            for counter in custom_counters:
                if counter.matches(ev):
                    custom.counters[(getattr(ev, "queue", None) or GLOBAL, ts, CUSTOM + counter.name)] += 1
        if ts > stream:
            stream, floor = ts, ts - lateness
    res.applied += len(applied_ts) - applied_before
    if stream != _NO_STREAM:
        part.stream_ms = stream

    if custom.counters:
        deltas.add(EMPTY, custom, cfg)
    horizon = stream - lateness
    heap, push = part.heap, heapq.heappush
    for k in chain(touched, restated) if restated else touched:  # the two are disjoint
        st = states[k]
        if step is None and k in before:  # a restated entity keeps its contributions, and the memo what it holds
            after = contributions(st, cfg)
            deltas.add(before[k], after, cfg)
            if compact is None:
                memo[k] = after.kept()
                if len(memo) > MEMO_SIZE:
                    del memo[next(iter(memo))]
        if compact is not None:
            st = states[k] = compact(st, horizon)
        changed[k] = st
        due = dues[k] = due_of(st, cfg)
        if due[0] is not None:
            push(heap, (due[0], k))
    before.clear()  # every touched entity's delta is recorded; a sweep below starts from its new state
    touched.clear()
    restated.clear()
    pop = heapq.heappop
    while heap and heap[0][0] < stream:
        due_at, k = pop(heap)
        st = get(k)
        if st is None:
            continue
        due = dues_get(k) or due_of(st, cfg)
        if due[0] == due_at:  # else a stale entry: the entity changed since it was pushed
            retire(k, st, due[1])
    if len(heap) > HEAP_STALE_FACTOR * len(states) + HEAP_SLACK:
        part.compact_heap(core, cfg)
    return res


_NO_STREAM = -(1 << 62)  # stream time before any event: every time is on time
# Each batch pushes a heap entry per touched entity, and the old one stays until it is popped: past this many
# entries per live entity (plus the slack) the heap is compacted. 4x held ~8 MB of stale entries in the
# memory benchmark's calls alone; compaction costs one cached-due lookup per entry.
HEAP_STALE_FACTOR = 2
HEAP_SLACK = 1024
MEMO_SIZE = 20_000  # contributions remembered per partition (cores without ``step``)


# ------------------------------------------------------------ label caps

OTHER = "other"  # where the events of label values beyond a cap count
OTHER_QUEUE = OTHER


class LabelCap(ABC):
    """Which values of one sender-controlled label keep their name; every other one counts as ``other``.

    Values configured (queues in the YAML), and ``other`` itself, always keep their name. Any other value is
    admitted first come, up to ``limit`` values, by the store (``Store.admit``: one set per ``kind``, shared by
    every worker and kept across restarts). Admission is final both ways, since the admitted set only grows: a
    value refused when the set was full stays refused. So the admitted sets alone decide how each event counts,
    and the oracle reproduces a run from them (``agents.oracle.compute(..., admitted=...)``).

    A subclass says which events carry the label and how to rename it (``values``, ``renamed``); one with a
    ``reason`` dead-letters an event naming a refused value instead, with that reason (a KPI's latest value has
    no meaningful ``other``).
    """

    kind = ""  # the admitted set's name: "queues", "agents", "channels", "kpis"
    reason = ""  # set: refused values are dead-lettered with this reason, not counted as ``other``
    __slots__ = ("limit", "kept", "full")

    def __init__(self, limit: int, configured: Iterable[str] = ()):
        self.limit = limit
        self.kept: set[str] = {OTHER, *configured}
        self.full = False  # the admitted set is full, and ``kept`` holds all of it: no value needs asking

    @abstractmethod
    def values(self, ev: Event) -> Iterable[str]:
        """The label values ``ev`` names."""

    @abstractmethod
    def renamed(self, ev: Event) -> Event:
        """``ev`` with every value not kept replaced by ``other``."""

    def strangers(self, events: Sequence[Event]) -> list[str]:
        """Values in ``events`` not (yet) known to keep their name, in order of first appearance."""
        kept, out = self.kept, {}
        for ev in events:
            for x in self.values(ev):
                if x not in kept:
                    out[x] = None
        return list(out)

    def learn(self, admitted: Iterable[str], full: bool) -> None:
        """Record the store's answer: values now admitted, and whether the set is full (then ``admitted`` is all
        of it)."""
        self.kept.update(admitted)
        self.full = full

    def capped(self, ev: Event) -> bool:
        """Whether ``ev`` names a value not kept."""
        return not self.kept.issuperset(self.values(ev))

    def rewrite(self, events: Sequence[Event]) -> tuple[list[Event], int]:
        """``events`` with every value not kept replaced by ``other``, and how many events were rewritten."""
        out, n = list(events), 0
        for i, ev in enumerate(out):
            if self.capped(ev):
                out[i] = self.renamed(ev)
                n += 1
        return out, n

    def detail(self, ev: Event) -> str:
        """What was wrong with an event a refusing cap dead-letters, and what to do."""
        return f"{self.kind} value over the cap of {self.limit}"


class QueueCap(LabelCap):
    """``CCMON_MAX_QUEUES``: the ``queue`` of every event, and an agent's ``queues`` (deduplicated once renamed)."""

    kind = "queues"
    __slots__ = ()

    def values(self, ev: Event) -> Iterable[str]:
        """The queues ``ev`` names."""
        if type(ev) is AgentState:
            return ev.queues
        q = getattr(ev, "queue", None)
        return () if q is None else (q,)

    def renamed(self, ev: Event) -> Event:
        """``ev`` counted in ``other`` (an agent's queues deduplicated)."""
        kept = self.kept
        if type(ev) is AgentState:
            return msgspec.structs.replace(ev, queues=list(dict.fromkeys(x if x in kept else OTHER for x in ev.queues)))
        return msgspec.structs.replace(ev, queue=OTHER)

    def strangers(self, events: Sequence[Event]) -> list[str]:
        """As ``LabelCap.strangers``, with the common case first: one set of the batch's queue names."""
        try:
            if self.kept.issuperset({ev.queue for ev in events} - {None}):  # type: ignore[attr-defined]
                return []
        except AttributeError:  # agent states name ``queues``; ticket events may name none
            pass
        return super().strangers(events)


class FieldCap(LabelCap):
    """A cap on one optional string field of one event type."""

    event_type: type[Event] = Event
    attr = ""  # the field's name
    __slots__ = ()

    def values(self, ev: Event) -> Iterable[str]:
        """The field's value, when ``ev`` is of the type and has one."""
        x = getattr(ev, self.attr) if type(ev) is self.event_type else None
        return () if x is None else (x,)

    def renamed(self, ev: Event) -> Event:
        """``ev`` with the field set to ``other``."""
        return msgspec.structs.replace(ev, **{self.attr: OTHER})

    def strangers(self, events: Sequence[Event]) -> list[str]:
        """As ``LabelCap.strangers``, with the common case (all values kept) in one set comprehension."""
        cls, get = self.event_type, attrgetter(self.attr)
        names = {get(ev) for ev in events if type(ev) is cls} - {None}
        return [] if self.kept.issuperset(names) else super().strangers(events)


class AgentCap(FieldCap):
    """``CCMON_MAX_AGENTS``: the agent of a survey response (the ``agent`` label of the per-agent survey gauges)."""

    kind, event_type, attr = "agents", SurveyResponse, "agent_id"
    __slots__ = ()


class ChannelCap(FieldCap):
    """``CCMON_MAX_CHANNELS``: a ticket's channel (``tickets_created_by_channel``)."""

    kind, event_type, attr = "channels", TicketCreated, "channel"
    __slots__ = ()


class KpiCap(FieldCap):
    """``CCMON_MAX_KPIS``: KPI names (the ``name`` label of ``ccmon_kpi``); a sample of a refused name is
    dead-lettered, since the latest value of "some other KPI" means nothing."""

    kind, event_type, attr, reason = "kpis", KpiSample, "name", "too_many_kpis"
    __slots__ = ()

    def detail(self, ev: Event) -> str:
        """Why a sample of a refused name is dead-lettered, and what to do."""
        name = ev.name  # type: ignore[attr-defined]
        return (f"KPI name {name!r} is over the cap: {self.limit} KPI names are in use (CCMON_MAX_KPIS); "
                "reuse an existing name (with `queue` for a per-queue figure) or raise CCMON_MAX_KPIS")


LABEL_CAPS: dict[str, type[LabelCap]] = {c.kind: c for c in (QueueCap, AgentCap, ChannelCap, KpiCap)}
# The caps each domain's events go through, refusing ones first (a refused event admits nothing else).
CAPS_OF: dict[str, tuple[str, ...]] = {
    "calls": ("queues",), "agents": ("queues",), "tickets": ("queues", "channels"),
    "surveys": ("queues", "agents"), "kpis": ("kpis", "queues"),
}


# Most values admitted per kind by default (CCMON_MAX_QUEUES, _AGENTS, _CHANNELS, _KPIS).
DEFAULT_LIMITS: dict[str, int] = {"queues": 1000, "agents": 5000, "channels": 100, "kpis": 500}


def label_caps(domain: str, limits: Optional[Mapping[str, int]] = None,
               configured_queues: Iterable[str] = ()) -> list[LabelCap]:
    """The caps of ``domain``'s events, by ``limits`` (kind -> most values admitted; defaults for those absent)."""
    limits = {**DEFAULT_LIMITS, **(limits or {})}
    return [LABEL_CAPS[k](limits[k], configured_queues if k == "queues" else ()) for k in CAPS_OF[domain]]


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
