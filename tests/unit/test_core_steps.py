"""Each incremental core's ``step`` must record exactly ``contributions`` after minus before.

``contributions`` is the definition of what an entity adds; ``step`` keeps it incrementally, one
event at a time, in any arrival order and with repeats. Both are applied to a store that already
holds the entity's earlier contribution, and must leave it in the same state.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.config import MetricsConfig, QueueConfig
from agents.core import EMPTY, AgentsCore, CallsCore, Deltas, SurveysCore, decode_state, encode_state
from streams.events import event_from_dict

BASE = 1_795_400_000
CFG = MetricsConfig(
    bucket_seconds=30,
    queues={"sales": QueueConfig(sl_threshold_seconds=30, short_abandon_seconds=3, timezone="Asia/Kathmandu",
                                 daily_reset="06:30")},
)
QUEUES = ["sales", "support"]


def materialize(store: dict, deltas: Deltas) -> None:
    """Apply a batch's deltas the way the commit script does: counters, then removals, then additions."""
    for wk, fields in deltas.counters.items():
        for f, v in fields.items():
            store["h", wk, f] = store.get(("h", wk, f), 0) + v
    for wk, members in deltas.zrem.items():
        for m in members:
            store.pop(("z", wk, m), None)
    for wk, scored in deltas.zadd.items():
        for m, score in scored.items():
            store["z", wk, m] = score


def nonzero(store: dict) -> dict:
    return {k: v for k, v in store.items() if k[0] == "z" or v}


def check(core, events: list, split: int) -> None:  # type: ignore[no-untyped-def]
    state = None
    for ev in events[:split]:
        new, problem, _ = core.apply(state, ev, CFG)
        state = new if not problem else state
    start = None if state is None else decode_state(core.name, encode_state(state))
    # The store as it is before the rest arrives: the entity's contribution so far.
    store: dict = {}
    if start is not None:
        seed = Deltas()
        seed.add(EMPTY, core.contributions(start, CFG), CFG)
        materialize(store, seed)
    by_step, by_diff = dict(store), dict(store)

    stepped = Deltas()
    stepped.bind(CFG)
    current = None if start is None else decode_state(core.name, encode_state(start))
    for ev in events[split:]:
        new, problem, _ = core.step(current, ev, round(ev.ts * 1000), CFG, stepped)
        if not problem:
            current = new
    materialize(by_step, stepped)

    diffed = Deltas()
    if current is not None:
        diffed.add(core.contributions(start, CFG) if start is not None else EMPTY, core.contributions(current, CFG), CFG)
    materialize(by_diff, diffed)
    assert nonzero(by_step) == nonzero(by_diff)


@st.composite
def call_events(draw):  # type: ignore[no-untyped-def]
    out = []
    n = 0
    for q in draw(st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True)):
        t = BASE + draw(st.integers(0, 7200))
        steps = draw(st.sampled_from([
            ["offered", "answered", "ended", "wrapup_completed"], ["offered", "answered", "ended"], ["offered", "answered"],
            ["offered", "abandoned"], ["offered", "timed_out"], ["blocked"], ["offered"], ["answered", "abandoned"],
            ["offered", "blocked"], ["answered", "ended", "wrapup_completed"],
        ]))
        for s in steps:
            t += draw(st.sampled_from([0, 1, 2.5, 19, 31, 200]))
            n += 1
            ev = {"type": f"call.{s}", "event_id": f"e{n}", "ts": t, "call_id": "c", "queue": q}
            if s in ("answered", "wrapup_completed"):
                ev["agent_id"] = "a1"
            if s == "blocked":
                ev["reason"] = draw(st.sampled_from(["queue_full", "closed"]))
            if s == "ended" and draw(st.booleans()):
                ev["hold_seconds"] = 4.5
            out.append(ev)
    return out


@st.composite
def agent_events(draw):  # type: ignore[no-untyped-def]
    out = []
    t = BASE + draw(st.integers(0, 600))
    for n in range(draw(st.integers(1, 7))):
        t += draw(st.sampled_from([0, 1, 29, 45, 130, 900]))
        out.append({"type": "agent.state", "event_id": f"a{n}", "ts": t, "agent_id": "ag",
                    "state": draw(st.sampled_from(["available", "on_call", "wrap_up", "away", "offline"])),
                    "queues": draw(st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True)),
                    "reason": draw(st.sampled_from([None, "lunch"]))})
    return out


def arrange(raw: list, draw_seed: int, dupes: int) -> list:
    rng = random.Random(draw_seed)
    raw = raw + [raw[rng.randrange(len(raw))] for _ in range(dupes)]
    rng.shuffle(raw)
    return [event_from_dict(e) for e in raw]


@settings(max_examples=600, deadline=None)
@given(call_events(), st.integers(0, 10_000), st.integers(0, 3), st.integers(0, 10))
def test_call_step_equals_contribution_diff(raw: list, seed: int, dupes: int, split: int) -> None:
    events = arrange(raw, seed, dupes)
    check(CallsCore, events, min(split, len(events)))


@settings(max_examples=600, deadline=None)
@given(agent_events(), st.integers(0, 10_000), st.integers(0, 2), st.integers(0, 10))
def test_agent_step_equals_contribution_diff(raw: list, seed: int, dupes: int, split: int) -> None:
    events = arrange(raw, seed, dupes)
    check(AgentsCore, events, min(split, len(events)))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([("csat", 5), ("nps", 9), ("nps", 3), ("ces", 6)]), st.sampled_from([None, "a1"]),
       st.integers(0, 2))
def test_survey_step_equals_contribution_diff(kind_score: tuple, agent: object, dupes: int) -> None:
    kind, score = kind_score
    raw = [{"type": "survey.response", "event_id": "s1", "ts": BASE + 7, "survey_id": "s", "kind": kind, "score": score,
            "queue": "sales", "agent_id": agent}]
    raw += [{**raw[0], "event_id": f"s{2 + i}"} for i in range(dupes)]  # a second response is refused
    check(SurveysCore, [event_from_dict(e) for e in raw], 0)


def test_steps_count_the_waiting_gauge_across_queues() -> None:
    # A call offered to sales, then moved to support: it stops waiting in sales and waits in support.
    raw = [{"type": "call.offered", "event_id": "1", "ts": BASE, "call_id": "c", "queue": "sales"},
           {"type": "call.offered", "event_id": "2", "ts": BASE + 40, "call_id": "c", "queue": "support"}]
    deltas = Deltas()
    deltas.bind(CFG)
    state = None
    for e in raw:
        ev = event_from_dict(e)
        state, problem, _ = CallsCore.step(state, ev, round(ev.ts * 1000), CFG, deltas)
        assert not problem
    assert dict(deltas.zadd) == {("zq", "support", ""): {"2": (BASE + 40) * 1000}}
    assert dict(deltas.zrem) == {("zq", "sales", ""): {"1"}}
    assert deltas.counters[("b", "sales", BASE // 30 * 30)]["offered"] == 1
    # Out of order, the sales leg is moved on the moment it arrives: it never waits.
    deltas, state = Deltas(), None
    deltas.bind(CFG)
    for e in reversed(raw):
        ev = event_from_dict(e)
        state, problem, _ = CallsCore.step(state, ev, round(ev.ts * 1000), CFG, deltas)
    assert dict(deltas.zadd) == {("zq", "support", ""): {"2": (BASE + 40) * 1000}} and not deltas.zrem
