"""The pure streaming core for calls: per-call state, and the metric deltas of each batch.

The state of a call keeps, for every leg ``(call_id, queue)`` and every event
type, the timestamp of the event that defines it. The metrics a call contributes
are a pure function of that state (``contributions``), so applying a batch is:
contributions after minus contributions before. This makes the result depend only
on the *set* of events seen, never on their arrival order, which is exactly what
the oracle checks.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

import msgspec

from agents.config import MetricsConfig, bucket_start, day_of
from streams.events import (
    CallAbandoned,
    CallAnswered,
    CallBlocked,
    CallEnded,
    CallEvent,
    CallOffered,
    CallTimedOut,
    CallWrapupCompleted,
)

# Counter fields kept per bucket and per day; ``*_ms`` are integer sums so totals stay exact.
OFFERED = "offered"
BLOCKED = "blocked"
ANSWERED = "answered"
ANSWERED_IN_SL = "answered_in_sl"
ANSWER_WAIT_MS = "answer_wait_ms"
ABANDONED = "abandoned"
SHORT_ABANDONED = "short_abandoned"
TIMED_OUT = "timed_out"
BLOCKED_REASON = "blocked:"  # + reason
COUNTERS = (OFFERED, BLOCKED, ANSWERED, ANSWERED_IN_SL, ANSWER_WAIT_MS, ABANDONED, SHORT_ABANDONED, TIMED_OUT)

# Gauges kept per queue under ``now``.
CALLS_WAITING = "calls_waiting"

Mark = tuple[int, str]  # (ts_ms, event_id) of the event that defines a step; the earliest wins


class Leg(msgspec.Struct, frozen=True, omit_defaults=True):
    """What is known of one call leg: the defining event of each step, and its payload."""

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
    """Every leg of one call, and the event ids already applied (for dedup)."""

    legs: dict[str, Leg] = {}
    seen: tuple[str, ...] = ()


_STEP = {
    CallOffered: "offered",
    CallBlocked: "blocked",
    CallAnswered: "answered",
    CallAbandoned: "abandoned",
    CallTimedOut: "timed_out",
    CallEnded: "ended",
    CallWrapupCompleted: "wrapup",
}


def apply_event(state: CallState | None, ev: CallEvent) -> CallState | None:
    """Fold one event into a call's state; ``None`` means a duplicate that changes nothing."""
    state = state or CallState()
    if ev.event_id in state.seen:
        return None
    step = _STEP[type(ev)]
    leg = state.legs.get(ev.queue) or Leg()
    mark = (ev.ts_ms, ev.event_id)
    current: Mark | None = getattr(leg, step)
    if current is None or mark < current:
        changes: dict[str, object] = {step: mark}
        if isinstance(ev, CallBlocked):
            changes["block_reason"] = ev.reason
        elif isinstance(ev, CallAnswered):
            changes["agent_id"] = ev.agent_id
        elif isinstance(ev, CallEnded) and ev.hold_seconds is not None:
            changes["hold_ms"] = round(ev.hold_seconds * 1000)
        leg = msgspec.structs.replace(leg, **changes)
    return CallState(legs={**state.legs, ev.queue: leg}, seen=state.seen + (ev.event_id,))


def outcome(leg: Leg) -> tuple[str, int] | None:
    """How the leg left the queue, and when: the earliest of answered, abandoned, timed out."""
    best: tuple[int, int, str] | None = None
    for rank, step in enumerate(("answered", "abandoned", "timed_out")):
        mark = getattr(leg, step)
        if mark is not None and (best is None or (mark[0], rank) < best[:2]):
            best = (mark[0], rank, step)
    return None if best is None else (best[2], best[0])


Contribution = dict[tuple[str, Optional[int], str], int]  # (queue, ts_ms or None for gauges, field) -> value


def contributions(state: CallState, cfg: MetricsConfig) -> Contribution:
    """Everything one call adds to the counters and gauges, as a pure function of its state."""
    out: Contribution = defaultdict(int)
    offered_at = {q: leg.offered[0] for q, leg in state.legs.items() if leg.offered is not None}
    for queue, leg in state.legs.items():
        if leg.blocked is not None:
            out[(queue, leg.blocked[0], BLOCKED)] += 1
            out[(queue, leg.blocked[0], BLOCKED_REASON + (leg.block_reason or "unknown"))] += 1
        if leg.offered is None:
            continue  # an outcome is held until its offer arrives: its wait is unknown until then
        offered = leg.offered[0]
        out[(queue, offered, OFFERED)] += 1
        result = outcome(leg)
        if result is None:
            transferred = any(t > offered for q, t in offered_at.items() if q != queue)
            if not transferred:
                out[(queue, None, CALLS_WAITING)] += 1
            continue
        step, at = result
        wait = max(0, at - offered)
        q = cfg.queue(queue)
        if step == "answered":
            out[(queue, at, ANSWERED)] += 1
            out[(queue, at, ANSWER_WAIT_MS)] += wait
            if wait <= q.sl_threshold_ms:
                out[(queue, at, ANSWERED_IN_SL)] += 1
        elif step == "abandoned":
            out[(queue, at, ABANDONED)] += 1
            if wait <= q.short_abandon_ms:
                out[(queue, at, SHORT_ABANDONED)] += 1
        else:
            out[(queue, at, TIMED_OUT)] += 1
    return out


# A window key names one Redis hash: ("b", queue, bucket_start) | ("d", queue, day) | ("n", queue, "").
WindowKey = tuple[str, str, object]
Deltas = dict[WindowKey, dict[str, int]]


def to_window_deltas(diff: Contribution, cfg: MetricsConfig, into: Deltas | None = None) -> Deltas:
    """Spread per-event-time contributions onto their bucket, their day and the ``now`` gauges."""
    out: Deltas = into if into is not None else defaultdict(lambda: defaultdict(int))
    width = cfg.bucket_seconds
    for (queue, ts_ms, name), value in diff.items():
        if not value:
            continue
        if ts_ms is None:
            out[("n", queue, "")][name] += value
            continue
        out[("b", queue, bucket_start(ts_ms, width))][name] += value
        out[("d", queue, day_of(ts_ms, cfg.queue(queue)))][name] += value
    return out


def diff_contributions(before: Contribution, after: Contribution) -> Contribution:
    """``after - before``, keeping only non-zero entries."""
    out: Contribution = {}
    for key in before.keys() | after.keys():
        d = after.get(key, 0) - before.get(key, 0)
        if d:
            out[key] = d
    return out


@dataclass
class BatchResult:
    """What one batch changes: new states, counter deltas, and what was skipped."""

    states: dict[str, CallState] = field(default_factory=dict)
    deltas: Deltas = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    queues: set[str] = field(default_factory=set)
    applied: int = 0
    duplicates: int = 0


def apply_batch(
    states: Mapping[str, CallState],
    events: Iterable[CallEvent],
    cfg: MetricsConfig,
    deltas: Deltas | None = None,
) -> BatchResult:
    """Apply events to call states without mutating ``states``; return new states and deltas."""
    result = BatchResult()
    if deltas is not None:
        result.deltas = deltas
    touched = result.states
    before: dict[str, Contribution] = {}
    for ev in events:
        cid = ev.call_id
        if cid in touched:
            current = touched[cid]
        else:
            current = states.get(cid)
        new = apply_event(current, ev)
        if new is None:
            result.duplicates += 1
            continue
        result.applied += 1
        result.queues.add(ev.queue)
        if cid not in before:
            before[cid] = contributions(current, cfg) if current is not None else {}
        touched[cid] = new
    for cid, new in touched.items():
        to_window_deltas(diff_contributions(before[cid], contributions(new, cfg)), cfg, result.deltas)
    return result


_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(CallState)


def encode_state(state: CallState) -> bytes:
    """Serialize a call state for the store."""
    return _state_encoder.encode(state)


def decode_state(raw: bytes) -> CallState:
    """Deserialize a call state written by ``encode_state``."""
    return _state_decoder.decode(raw)
