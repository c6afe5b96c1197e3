"""The streaming core, applied in arbitrary batches and orders, must equal the batch oracle."""

from __future__ import annotations

import random
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.config import MetricsConfig, QueueConfig
from agents.core import CallState, apply_batch, decode_state, encode_state
from agents.oracle import compute
from agents.snapshot import assemble
from streams.events import CallEvent, event_from_dict

BASE_MS = 1_795_400_000_000  # 2026-11-23T...Z, a few minutes after a day boundary is covered below
CFG = MetricsConfig(
    queues={"sales": QueueConfig(sl_threshold_seconds=30, short_abandon_seconds=3, timezone="Europe/Berlin")},
)


def stream(events: list[CallEvent], cfg: MetricsConfig, batches: list[int], now_ms: int) -> dict:
    """Run events through the core in the given batch sizes into an in-memory 'store'."""
    store: dict = defaultdict(lambda: defaultdict(int))
    states: dict[str, CallState] = {}
    queues: set[str] = set()
    i = 0
    sizes = iter(batches)
    while i < len(events):
        n = max(1, next(sizes, 7))
        res = apply_batch(states, events[i : i + n], cfg)
        i += n
        for key, fields in res.deltas.items():
            for f, v in fields.items():
                store[key][f] += v
        # states go through the store's encoding, as they do in Redis
        states.update({k: decode_state(encode_state(v)) for k, v in res.states.items()})
        queues |= res.queues
    return assemble(sorted(queues), store, cfg, now_ms)


@st.composite
def call_streams(draw):
    """Calls with 1-2 legs, random subsets of steps, duplicates, and shuffled arrival."""
    events: list[dict] = []
    n_calls = draw(st.integers(0, 25))
    for c in range(n_calls):
        cid = f"c{c}"
        queues = draw(st.lists(st.sampled_from(["sales", "support", "billing"]), min_size=1, max_size=2, unique=True))
        t = BASE_MS + draw(st.integers(-7200_000, 3600_000))
        for q in queues:
            e = lambda typ, ts, **kw: events.append(
                {"event_id": f"{cid}-{q}-{typ}-{ts}", "type": typ, "ts": ts / 1000, "call_id": cid, "queue": q, **kw}
            )
            if draw(st.booleans()) and draw(st.booleans()):
                e("call.blocked", t, reason=draw(st.sampled_from(["queue_full", "no_agents", "closed", "trunk_busy"])))
                continue
            if draw(st.integers(0, 9)):
                e("call.offered", t)
            wait = draw(st.sampled_from([0, 1000, 2999, 3000, 3001, 5000, 20_000, 30_000, 30_001, 95_000]))
            end = draw(st.sampled_from(["answered", "abandoned", "timed_out", "none", "answered+abandoned"]))
            if end in ("answered", "answered+abandoned"):
                e("call.answered", t + wait, agent_id="a1")
                if draw(st.booleans()):
                    e("call.ended", t + wait + 60_000, hold_seconds=3)
            if end in ("abandoned", "answered+abandoned"):
                e("call.abandoned", t + wait + draw(st.sampled_from([-500, 0, 500])))
            if end == "timed_out":
                e("call.timed_out", t + wait)
            t += wait + 1000
    # duplicates: re-send some events with the same event_id
    dups = [ev for ev in events if draw(st.integers(0, 4)) == 0]
    events += dups
    order = draw(st.permutations(range(len(events))))
    return [events[i] for i in order]


@settings(max_examples=300, deadline=None)
@given(
    raw=call_streams(),
    batches=st.lists(st.integers(1, 12), max_size=30),
    now_offset=st.integers(-3600_000, 4 * 3600_000),
)
def test_streaming_core_equals_oracle(raw, batches, now_offset):
    events = [event_from_dict(d) for d in raw]
    assert all(isinstance(e, CallEvent) for e in events)
    now = BASE_MS + now_offset
    assert stream(events, CFG, batches, now) == compute(events, CFG, now)


def test_arrival_order_does_not_matter():
    """Per-call shuffles of a fixed stream all end equal to the in-order result."""
    raw = [
        {"event_id": "1", "type": "call.offered", "ts": 1795400000, "call_id": "c", "queue": "support"},
        {"event_id": "2", "type": "call.answered", "ts": 1795400012, "call_id": "c", "queue": "support", "agent_id": "a"},
        {"event_id": "3", "type": "call.ended", "ts": 1795400100, "call_id": "c", "queue": "support"},
        {"event_id": "4", "type": "call.offered", "ts": 1795400001, "call_id": "d", "queue": "support"},
        {"event_id": "5", "type": "call.abandoned", "ts": 1795400004, "call_id": "d", "queue": "support"},
        {"event_id": "6", "type": "call.offered", "ts": 1795400002, "call_id": "e", "queue": "support"},
        {"event_id": "7", "type": "call.abandoned", "ts": 1795400030, "call_id": "e", "queue": "support"},
    ]
    events = [event_from_dict(d) for d in raw]
    now = 1795400200_000
    expected = stream(events, CFG, [100], now)
    w = expected["queues"]["support"]["15m"]
    assert (w["offered"], w["answered"], w["abandoned"], w["short_abandoned"]) == (3, 1, 2, 1)
    assert w["asa_seconds"] == 12.0
    assert w["service_level"] == 1 / 2  # 1 in SL / (1 answered + 2 abandoned - 1 short)
    rng = random.Random(7)
    for _ in range(50):
        shuffled = events[:]
        rng.shuffle(shuffled)
        assert stream(shuffled, CFG, [rng.randint(1, 4) for _ in range(10)], now) == expected
