"""The simulator emits valid, ordered, deterministic and internally consistent contract-v1 events."""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict

import pytest

from streams.events import SCORE_RANGES, Rejected, event_from_dict
from streams.simulator import SimConfig, generate

START = 1_800_000_000.0  # 2027-01-15
HOUR = 3600.0

# Allowed agent transitions; away only after wrap-up, matching how the simulator sends agents on break.
AGENT_NEXT = {
    "available": {"on_call"},
    "on_call": {"wrap_up"},
    "wrap_up": {"available", "away"},
    "away": {"available"},
}


@pytest.fixture(scope="module")
def default_run() -> list[dict]:
    """Four simulated hours with the default config, shared by the read-only checks."""
    return list(generate(SimConfig(), START, 4 * HOUR))


def check_call_legs(events: list[dict]) -> Counter:
    """Assert every call leg follows the call state machine; return the count of outcomes."""
    steps: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    outcomes: Counter = Counter()
    for ev in events:
        if not ev["type"].startswith("call."):
            continue
        leg = steps[(ev["call_id"], ev["queue"])]
        kind = ev["type"]
        assert kind not in leg, f"{kind} twice for {ev['call_id']}"
        if kind == "call.blocked":
            assert not leg, f"blocked leg {ev['call_id']} has other steps"
        elif kind == "call.offered":
            assert not leg, f"offered is not the first step of {ev['call_id']}"
        elif kind in ("call.answered", "call.abandoned", "call.timed_out"):
            assert "call.offered" in leg, f"{kind} before offered for {ev['call_id']}"
            others = {"call.answered", "call.abandoned", "call.timed_out"} & leg.keys()
            assert not others, f"{kind} after {others} for {ev['call_id']}"
        elif kind == "call.ended":
            assert "call.answered" in leg, f"ended before answered for {ev['call_id']}"
            hold = ev.get("hold_seconds")
            if hold is not None:
                assert 0 <= hold <= ev["ts"] - leg["call.answered"]["ts"] + 0.1
        elif kind == "call.wrapup_completed":
            assert "call.ended" in leg, f"wrap-up before ended for {ev['call_id']}"
            assert ev["agent_id"] == leg["call.answered"]["agent_id"]
        else:
            raise AssertionError(f"unexpected call event {kind}")
        if leg:
            assert "call.blocked" not in leg
            assert ev["ts"] >= max(e["ts"] for e in leg.values())
        leg[kind] = ev
        outcomes[kind if kind != "call.blocked" else f"blocked:{ev['reason']}"] += 1
    return outcomes


def test_every_event_validates(default_run: list[dict]) -> None:
    assert len(default_run) > 1000
    for ev in default_run:
        decoded = event_from_dict(ev)
        assert not isinstance(decoded, Rejected), (ev, decoded)
        assert decoded.type == ev["type"]
        assert ev["source"] == "simulator"
        assert ev["ts"] == round(ev["ts"], 3)


def test_all_types_are_produced(default_run: list[dict]) -> None:
    types = {ev["type"] for ev in default_run}
    expected = {
        "call.offered",
        "call.answered",
        "call.abandoned",
        "call.ended",
        "call.wrapup_completed",
        "agent.state",
        "ticket.created",
        "ticket.assigned",
        "ticket.replied",
        "ticket.status_changed",
        "ticket.escalated",
        "ticket.reopened",
        "survey.response",
    }
    assert expected <= types


def test_ts_ordered_and_in_window(default_run: list[dict]) -> None:
    ts = [ev["ts"] for ev in default_run]
    assert ts == sorted(ts)
    assert START <= ts[0] and ts[-1] < START + 4 * HOUR


def test_ids_unique(default_run: list[dict]) -> None:
    ids = [ev["event_id"] for ev in default_run]
    assert len(ids) == len(set(ids))
    surveys = [ev["survey_id"] for ev in default_run if ev["type"] == "survey.response"]
    assert len(surveys) == len(set(surveys))
    offered = [ev["call_id"] for ev in default_run if ev["type"] in ("call.offered", "call.blocked")]
    assert len(offered) == len(set(offered))
    created = [ev["ticket_id"] for ev in default_run if ev["type"] == "ticket.created"]
    assert len(created) == len(set(created))


def test_deterministic() -> None:
    cfg = SimConfig(seed=7)
    a = list(generate(cfg, START, HOUR))
    assert a == list(generate(cfg, START, HOUR))
    assert a != list(generate(SimConfig(seed=8), START, HOUR))
    # A shorter window is a prefix of a longer one: nothing depends on the end.
    b = list(generate(cfg, START, 2 * HOUR))
    assert b[: len(a)] == a


def test_call_legs_consistent(default_run: list[dict]) -> None:
    outcomes = check_call_legs(default_run)
    assert outcomes["call.offered"] >= outcomes["call.answered"] + outcomes["call.abandoned"] > 0
    assert outcomes["call.ended"] > 0 and outcomes["call.wrapup_completed"] > 0


def test_agent_states_consistent_with_calls(default_run: list[dict]) -> None:
    state: dict[str, str] = {}
    current_call: dict[str, str] = {}
    queue_of = {}
    for i, ev in enumerate(default_run):
        if ev["type"] == "agent.state":
            agent, new = ev["agent_id"], ev["state"]
            assert ev["queues"] == [agent.rsplit("-a", 1)[0]]
            if agent in state:
                assert new in AGENT_NEXT[state[agent]], f"{agent}: {state[agent]} -> {new}"
            else:
                assert new == "available" and ev["ts"] == START
            if new == "away":
                assert ev["reason"]
            state[agent] = new
            queue_of[agent] = ev["queues"][0]
        elif ev["type"] == "call.answered":
            agent = ev["agent_id"]
            assert state[agent] == "available" and agent not in current_call
            assert queue_of[agent] == ev["queue"]
            current_call[agent] = ev["call_id"]
            nxt = default_run[i + 1]  # the agent goes on_call with the answer
            assert (nxt["type"], nxt.get("agent_id"), nxt.get("state")) == ("agent.state", agent, "on_call")
        elif ev["type"] == "call.ended":
            agent = next(a for a, c in current_call.items() if c == ev["call_id"])
            assert state[agent] == "on_call"
        elif ev["type"] == "call.wrapup_completed":
            agent = ev["agent_id"]
            assert current_call.pop(agent) == ev["call_id"]
            assert state[agent] == "wrap_up"
    assert len(state) == 3 * SimConfig().agents_per_queue


def test_tickets_lifecycle(default_run: list[dict]) -> None:
    seen: dict[str, list[dict]] = defaultdict(list)
    for ev in default_run:
        if ev["type"].startswith("ticket."):
            seen[ev["ticket_id"]].append(ev)
    assert seen
    priorities = Counter()
    for tid, evs in seen.items():
        assert evs[0]["type"] == "ticket.created", tid
        priorities[evs[0]["priority"]] += 1
        status = "new"
        for ev in evs[1:]:
            assert ev["type"] != "ticket.created"
            assert status != "closed", f"{tid} has events after closed"
            if ev["type"] == "ticket.reopened":
                assert status == "solved"
                status = "open"
            elif ev["type"] == "ticket.status_changed":
                status = ev["status"]
    assert priorities.most_common(1)[0][0] == "normal"


def test_survey_scores_in_range(default_run: list[dict]) -> None:
    surveys = [ev for ev in default_run if ev["type"] == "survey.response"]
    assert {s["kind"] for s in surveys} == {"csat", "nps", "ces"}
    assert any("call_id" in s for s in surveys) and any("ticket_id" in s for s in surveys)
    answered = {ev["call_id"]: ev for ev in default_run if ev["type"] == "call.answered"}
    for s in surveys:
        lo, hi = SCORE_RANGES[s["kind"]]
        assert isinstance(s["score"], int) and lo <= s["score"] <= hi
        assert s["queue"] and s["agent_id"]
        assert ("call_id" in s) != ("ticket_id" in s)
        if "call_id" in s:
            assert answered[s["call_id"]]["agent_id"] == s["agent_id"]


def test_tiny_capacity_blocks_calls() -> None:
    cfg = SimConfig(seed=3, queues=("sales",), arrival_rate_per_hour=3600, agents_per_queue=2, queue_capacity=2)
    events = list(generate(cfg, START, HOUR))
    outcomes = check_call_legs(events)
    assert outcomes["blocked:queue_full"] > 100
    assert outcomes["call.offered"] > 0


def test_no_agents_blocks_calls() -> None:
    cfg = SimConfig(queues=("sales",), agents_per_queue=0, ticket_rate_per_hour=0)
    events = list(generate(cfg, START, HOUR))
    assert events and all(ev["type"] == "call.blocked" and ev["reason"] == "no_agents" for ev in events)


def test_low_patience_abandons() -> None:
    cfg = SimConfig(seed=4, queues=("support",), mean_patience_seconds=5, agents_per_queue=2)
    outcomes = check_call_legs(list(generate(cfg, START, HOUR)))
    assert outcomes["call.abandoned"] > 50


def test_max_wait_times_out() -> None:
    cfg = SimConfig(seed=5, queues=("support",), mean_patience_seconds=1e9, max_wait_seconds=30, agents_per_queue=2)
    outcomes = check_call_legs(list(generate(cfg, START, HOUR)))
    assert outcomes["call.timed_out"] > 50
    assert outcomes["call.abandoned"] == 0


def test_empty_window() -> None:
    assert list(generate(SimConfig(), START, 0)) == []


def test_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        SimConfig(survey_probability=1.5)
    with pytest.raises(ValueError):
        SimConfig(queues=())
    with pytest.raises(ValueError):
        SimConfig(arrival_rate_per_hour=-1)


def test_lazy_forever() -> None:
    t0 = time.perf_counter()
    first = list(itertools.islice(generate(SimConfig(), START, None), 1000))
    assert time.perf_counter() - t0 < 1.0
    assert len(first) == 1000
    assert first == list(generate(SimConfig(), START, HOUR))[:1000]


def test_runs_far_ahead_lazily() -> None:
    # 200k events is ~two simulated days: it must stream, not build the run up front.
    last = None
    for last in itertools.islice(generate(SimConfig(seed=9), START, None), 200_000):
        pass
    assert last is not None and last["ts"] > START + 24 * HOUR
