"""The ticket definitions, case by case: SLA clocks, pauses, business hours, queue moves, FCR, gauges."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from agents.business_hours import parse_calendar
from agents.config import MetricsConfig, QueueConfig
from agents.core import TicketsCore
from agents.tickets import (
    FCR_NO,
    FCR_YES,
    FRT_MET,
    FRT_MISSED,
    FRT_MS,
    RES_MET,
    RES_MISSED,
    RES_MS,
    TICKETS_REOPENED,
    TICKETS_SOLVED,
    Z_BACKLOG,
    Z_BREACH,
    Z_FCR_YES,
    Z_FRT_MISSED,
    Z_RES_MISSED,
    Z_SOON,
    TicketFacts,
    ticket_due,
    ticket_facts,
)

from streams.events import Event, event_from_dict

M, H, D = 60_000, 3600_000, 86400_000
BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = parse_calendar({"timezone": "Europe/Berlin", "hours": {"weekdays": ["09:00-12:00", "13:00-18:00"]},
                         "holidays": ["2026-12-25"]})
SLA = (("urgent", 1 * H, 4 * H), ("normal", 8 * H, 3 * D))
CFG = MetricsConfig(
    defaults=QueueConfig(ticket_sla=SLA),
    queues={"office": QueueConfig(ticket_sla=SLA, calendar=OFFICE),
            "vip": QueueConfig(ticket_sla=(("urgent", 30 * M, 2 * H), ("normal", 2 * H, 8 * H)))},
)


def at(text: str) -> int:
    return round(datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp() * 1000)


T0 = at("2026-11-23 10:00")  # a Monday


def created(queue: str = "desk", priority: str = "normal", ts: int = T0) -> tuple:
    return (ts, "c", "created", queue, "email", priority)


def reply(ts: int, author: str = "agent", public: bool = True, eid: str = "") -> tuple:
    return (ts, eid or f"r{ts}", "reply", author, "1" if public else "0", "")


def status(ts: int, s: str) -> tuple:
    return (ts, f"s{ts}{s}", "status", s, "", "")


def counters(f: TicketFacts) -> dict[str, list[tuple[str, int, int]]]:
    out: dict[str, list[tuple[str, int, int]]] = {}
    for q, ts, name, n in f.counters:
        out.setdefault(name, []).append((q, ts, n))
    return out


def members(f: TicketFacts) -> dict[str, tuple[str, int]]:
    return {kind: (q, score) for kind, q, score in f.members}


def test_first_reply_within_target_is_met_and_measured_on_the_clock() -> None:
    f = ticket_facts([created(priority="urgent"), reply(T0 + 20 * M)], CFG)
    c = counters(f)
    assert c[FRT_MET] == [("desk", T0 + 20 * M, 1)] and c[FRT_MS] == [("desk", T0 + 20 * M, 20 * M)]
    assert FRT_MISSED not in c and Z_FRT_MISSED not in members(f)


def test_unanswered_clock_counts_missed_when_it_runs_out_not_when_answered() -> None:
    pending = ticket_facts([created(priority="urgent")], CFG)
    assert members(pending)[Z_FRT_MISSED] == ("desk", T0 + H)  # counted at the run-out instant, with no event
    late = counters(ticket_facts([created(priority="urgent"), reply(T0 + 3 * H)], CFG))
    assert late[FRT_MISSED] == [("desk", T0 + H, 1)] and FRT_MET not in late


def test_private_notes_and_customer_replies_are_not_first_responses() -> None:
    f = ticket_facts([created(priority="urgent"), reply(T0 + M, "customer"), reply(T0 + 2 * M, public=False)], CFG)
    assert FRT_MET not in counters(f) and Z_FRT_MISSED in members(f)


def test_pending_stops_the_clock_and_it_resumes_after() -> None:
    events = [created(priority="urgent"), status(T0 + 10 * M, "pending"), status(T0 + 70 * M, "open")]
    assert members(ticket_facts(events, CFG))[Z_FRT_MISSED] == ("desk", T0 + 2 * H)  # 60 min paused
    still = ticket_facts(events[:2], CFG)
    assert Z_FRT_MISSED not in members(still) and Z_BREACH not in members(still)  # paused: no run-out yet


def test_business_hours_clock_skips_lunch_nights_weekends_and_holidays() -> None:
    friday_late = at("2026-11-27 17:30")
    f = ticket_facts([created("office", "urgent", friday_late)], CFG)
    # 30 min on Friday, then Monday 09:00 + 30 min
    assert members(f)[Z_FRT_MISSED] == ("office", at("2026-11-30 09:30"))
    lunch = ticket_facts([created("office", "urgent", at("2026-11-23 11:30"))], CFG)
    assert members(lunch)[Z_FRT_MISSED] == ("office", at("2026-11-23 13:30"))
    xmas = ticket_facts([created("office", "urgent", at("2026-12-24 17:30"))], CFG)
    assert members(xmas)[Z_FRT_MISSED] == ("office", at("2026-12-28 09:30"))


def test_moving_queue_takes_the_new_policy_from_then_on() -> None:
    moved = [created("desk", "normal"), (T0 + H, "a", "assign", "vip", "ann", "")]
    # 1 h used under desk (8 h target); vip's target is 2 h, so 1 h remains from the move
    assert members(ticket_facts(moved, CFG))[Z_FRT_MISSED] == ("vip", T0 + 2 * H)
    too_late = [created("desk", "normal"), (T0 + 3 * H, "a", "assign", "vip", "ann", "")]
    assert members(ticket_facts(too_late, CFG))[Z_FRT_MISSED] == ("vip", T0 + 3 * H)  # over at the move


def test_resolution_sla_and_solve_counts() -> None:
    events = [created(priority="urgent"), reply(T0 + 10 * M), status(T0 + 3 * H, "solved")]
    c = counters(ticket_facts(events, CFG))
    assert c[RES_MET] == [("desk", T0 + 3 * H, 1)] and c[RES_MS] == [("desk", T0 + 3 * H, 3 * H)]
    assert c[TICKETS_SOLVED] == [("desk", T0 + 3 * H, 1)]
    late = counters(ticket_facts([created(priority="urgent"), status(T0 + 5 * H, "solved")], CFG))
    assert late[RES_MISSED] == [("desk", T0 + 4 * H, 1)]
    assert late[FRT_MISSED] == [("desk", T0 + H, 1)]  # solved without a reply after the FRT clock ran out
    assert Z_RES_MISSED in members(ticket_facts([created(priority="urgent")], CFG))


@pytest.mark.parametrize(
    "events, expected",
    [
        ([reply(T0 + M), status(T0 + H, "solved")], ("member", T0 + H + 7 * D)),
        ([reply(T0 + M), reply(T0 + 2 * M), status(T0 + H, "solved")], (FCR_NO, T0 + H)),
        ([reply(T0 + M), status(T0 + H, "solved"), (T0 + 2 * D, "o", "reopen", "", "", "")], (FCR_NO, T0 + 2 * D)),
        ([reply(T0 + M), status(T0 + H, "solved"), (T0 + 8 * D, "o", "reopen", "", "", "")], ("member", T0 + H + 7 * D)),
        ([status(T0 + H, "solved")], ("member", T0 + H + 7 * D)),  # zero replies is at most one
    ],
)
def test_fcr(events: list, expected: tuple) -> None:
    f = ticket_facts([created()] + events, CFG)
    kind, when = expected
    if kind == "member":
        assert members(f)[Z_FCR_YES] == ("desk", when) and FCR_NO not in counters(f)
        assert counters(ticket_facts([created()] + events, CFG, final=True))[FCR_YES] == [("desk", when, 1)]
    else:
        assert counters(f)[FCR_NO] == [("desk", when, 1)] and Z_FCR_YES not in members(f)


def test_reopened_ticket_is_open_again_and_counted() -> None:
    events = [created(), status(T0 + H, "solved"), (T0 + 2 * H, "o", "reopen", "", "", "")]
    f = ticket_facts(events, CFG)
    assert counters(f)[TICKETS_REOPENED] == [("desk", T0 + 2 * H, 1)]
    assert ("desk", "tickets_open", 1) in f.gauges
    assert ticket_due(events, CFG) is None  # open tickets stay in memory


def test_open_ticket_gauges_backlog_breach_and_due_soon() -> None:
    f = ticket_facts([created(priority="urgent")], CFG)
    m = members(f)
    assert m[Z_BACKLOG] == ("desk", T0 + 24 * H)
    assert m[Z_BREACH] == ("desk", T0 + H) and m[Z_SOON] == ("desk", T0 + 48 * M)
    office = members(ticket_facts([created("office", "urgent")], CFG))
    assert office[Z_BACKLOG][1] == at("2026-11-26 10:00")  # 24 business hours: 7 + 8 + 8 + 1


def test_solved_ticket_leaves_after_its_fcr_window() -> None:
    events = [created(), status(T0 + H, "solved")]
    assert ticket_due(events, CFG) == T0 + H + 7 * D
    assert ticket_facts(events, CFG).gauges == []


def test_events_before_creation_are_held() -> None:
    assert ticket_facts([reply(T0)], CFG) == TicketFacts()


# ``TicketsCore.inert``: the batch loop skips recomputing a ticket's contributions for the events it calls inert, so
# the claim is checked here on random histories (any order, queues with business hours and pause statuses).
_KINDS = ("created", "reply_agent", "reply_customer", "note", "status", "assign", "assign_none", "escalate", "reopen")


@st.composite
def _ticket_history(draw: st.DrawFn) -> list:
    events = []
    for i in range(draw(st.integers(1, 9))):
        ts = T0 + draw(st.integers(-2, 40)) * 30 * M
        kind = draw(st.sampled_from(_KINDS))
        eid = f"e{i}"
        raw: dict = {"event_id": eid, "ts": ts / 1000, "ticket_id": "t1"}
        if kind == "created":
            raw.update(type="ticket.created", queue=draw(st.sampled_from(["desk", "office", "vip"])), channel="email",
                       priority=draw(st.sampled_from(["normal", "urgent"])))
        elif kind.startswith("reply") or kind == "note":
            raw.update(type="ticket.replied", author="customer" if kind == "reply_customer" else "agent",
                       public=kind != "note")
        elif kind == "status":
            raw.update(type="ticket.status_changed", status=draw(st.sampled_from(["open", "pending", "solved"])))
        elif kind.startswith("assign"):
            raw.update(type="ticket.assigned", agent_id="a1",
                       queue=None if kind == "assign_none" else draw(st.sampled_from(["desk", "office", "vip"])))
        elif kind == "escalate":
            raw.update(type="ticket.escalated")
        else:
            raw.update(type="ticket.reopened")
        ev = event_from_dict(raw)
        assert isinstance(ev, Event), ev
        events.append(ev)
    return events


@settings(max_examples=500, deadline=None)
@given(_ticket_history())
def test_an_inert_event_leaves_the_contributions_as_they_are(events: list) -> None:
    state = None
    for ev in events:
        new, problem, _ = TicketsCore.apply(state, ev, CFG)
        if problem:
            continue
        if state is not None and TicketsCore.inert(state, ev):
            for leaving in (False, True):
                assert TicketsCore.contributions(new, CFG, leaving=leaving) == \
                    TicketsCore.contributions(state, CFG, leaving=leaving), (ev, state)
        state = new


@settings(max_examples=300, deadline=None)
@given(_ticket_history(), st.sampled_from(["desk", "office", "vip"]))
def test_the_one_queue_shortcut_gives_the_clocks_run_out_of_the_general_walk(events: list, moved_to: str) -> None:
    """``_runouts`` computes a ticket's clocks' run-out, whole or at 80% of their targets (the "soon" gauge),
    without ``_runout``'s loop when it never moved queue; the same with a queue move appended, which takes the loop."""
    from agents.core import ticket_event_tuple
    from agents.tickets import _runout, _runouts, _timeline

    history = sorted(ticket_event_tuple(ev) for ev in events)
    for tuples in (history, sorted([*history, (T0 + 5 * H, "mv", "assign", moved_to, "a1", "")])):
        tl = _timeline(tuples, CFG)
        if tl is None:
            continue
        assert _runouts(tl, CFG) == tuple(_runout(tl, CFG, lambda q, i=i: CFG.queue(q).sla_targets(tl.priority)[i])
                                          for i in (0, 1))
        for clocks in ((0, 1), (0,), (1,), ()):
            assert _runouts(tl, CFG, clocks, 4, 5) == tuple(
                _runout(tl, CFG, lambda q, i=i: CFG.queue(q).sla_targets(tl.priority)[i] * 4 // 5) for i in clocks)
