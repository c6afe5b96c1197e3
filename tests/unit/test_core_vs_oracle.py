"""The streaming core, in arbitrary batches, partitions and arrival orders, must equal the batch oracle."""

from __future__ import annotations

import random
from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.business_hours import parse_calendar
from agents.config import CustomCounter, CustomRatio, Filter, MetricsConfig, QueueConfig
from agents.core import COUNTER_HASHES, CORES, PartitionState, apply_batch, decode_state, encode_state
from agents.oracle import compute, replay
from agents.snapshot import LIVE_SETS, StoreData, assemble, needed_keys
from streams.events import Event, event_from_dict
from streams.partitioning import partition_for

BASE_MS = 1_795_400_000_000
M = 60_000
SLA = (("urgent", 10 * M, 30 * M), ("normal", 30 * M, 120 * M), ("low", 60 * M, 240 * M))
CFG = MetricsConfig(
    queues={
        "sales": QueueConfig(sl_threshold_seconds=30, short_abandon_seconds=3, timezone="Europe/Berlin",
                             sl_formula="abandons_met_if_short", ticket_sla=SLA, backlog_age_ms=60 * M),
        "billing": QueueConfig(sl_formula="answered_only", daily_reset="06:00", timezone="America/New_York",
                               ticket_sla=SLA, backlog_age_ms=90 * M, pause_statuses=("pending",),
                               calendar=parse_calendar({"timezone": "America/New_York",
                                                        "hours": {"weekdays": ["09:00-12:00", "13:00-17:00"]}})),
    },
    defaults=QueueConfig(ticket_sla=SLA, backlog_age_ms=45 * M),
    fcr_window_seconds=3600,
    lateness_seconds=300,
    call_max_age_seconds=1800,
    agent_idle_eviction_seconds=600,
    custom_counters=(
        CustomCounter("complaints", "ticket.created", (Filter("tags", "contains", "complaint"),)),
        CustomCounter("vip_offers", "call.offered", (Filter("attributes.tier", "equals", "vip"),)),
        CustomCounter("angry_replies", "ticket.replied", (Filter("tags", "contains", "angry"),
                                                          Filter("author", "equals", "customer"))),
    ),
    custom_ratios=(
        CustomRatio("complaint_rate", "complaints", "tickets_created"),
        CustomRatio("vip_share", "vip_offers", "offered"),
    ),
)


class MemoryStore:
    """Redis semantics the commit relies on (HINCRBY, ZADD/ZREM, HSET/HDEL), in memory."""

    def __init__(self) -> None:
        self.hashes: dict = defaultdict(lambda: defaultdict(int))
        self.zsets: dict = defaultdict(dict)
        self.queues: set[str] = set()

    def apply(self, res) -> None:  # type: ignore[no-untyped-def]
        for key, fields in res.deltas.counters.items():
            for f, v in fields.items():
                self.hashes[key][f] += v
        for key, members in res.deltas.zrem.items():
            for m in members:
                self.zsets[key].pop(m, None)
        for key, members in res.deltas.zadd.items():
            self.zsets[key].update(members)
        self.queues |= res.queues

    def snapshot(self, now_ms: int) -> dict:
        queues = sorted(self.queues)
        data = StoreData()
        for wk in needed_keys(queues, CFG, now_ms):
            if wk[0] in COUNTER_HASHES and wk in self.hashes:
                data.counters[wk] = dict(self.hashes[wk])
            elif wk in self.zsets and self.zsets[wk]:
                data.zmax[wk] = max(self.zsets[wk].values())
        for q in queues:
            for kind in LIVE_SETS:
                members = self.zsets.get((kind, q, ""), {})
                if kind == "zq":
                    data.waiting[q] = (len(members), min(members.values()) if members else None)
                elif kind.startswith("za:"):
                    data.open_since[(q, kind[3:])] = sorted(members.values())
                else:
                    data.ticket_members[(kind, q)] = sorted(members.values())
        return assemble(queues, data, CFG, now_ms)


def stream(events: list[Event], partitions: int, sizes: list[int], now_ms: int, rng: random.Random) -> dict:
    """Route events to partitions, apply them in batches, reloading state through the codec now and then."""
    store = MemoryStore()
    parts: dict[tuple[str, int], PartitionState] = defaultdict(PartitionState)
    queues: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for ev in events:
        queues[(ev.domain, partition_for(ev.entity_id, partitions))].append(ev)
    sizes_it = iter(sizes)
    while any(queues.values()):
        key = rng.choice([k for k, v in queues.items() if v])
        n = max(1, next(sizes_it, 5))
        batch, queues[key] = queues[key][:n], queues[key][n:]
        core = CORES[key[0]]
        part = parts[key]
        res = apply_batch(core, part, batch, CFG)
        store.apply(res)
        if rng.random() < 0.2:  # a restart: states come back from their encoding, the heap is rebuilt
            states = {k: decode_state(key[0], encode_state(v)) for k, v in part.states.items()}
            parts[key] = PartitionState(states=states, stream_ms=part.stream_ms)
            parts[key].index(core, CFG)
    return store.snapshot(now_ms)


QUEUES = ["sales", "support", "billing"]


@st.composite
def traffic(draw):  # type: ignore[no-untyped-def]
    """Calls and agent changes with random steps, shuffles, duplicates, late and impossible events."""
    events: list[dict] = []
    n = 0

    def add(**e: object) -> None:
        nonlocal n
        n += 1
        events.append({"event_id": f"e{n}", **e, "ts": e["ts"] / 1000})  # type: ignore[operator]

    for c in range(draw(st.integers(0, 18))):
        cid = f"c{c % 14}"  # some ids reused much later: a new call after the old one was forgotten
        t = BASE_MS + draw(st.integers(0, 3 * 3600_000))
        for q in draw(st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True)):
            base = dict(call_id=cid, queue=q)
            if draw(st.integers(0, 5)) == 0:
                add(type="call.blocked", ts=t, reason=draw(st.sampled_from(["queue_full", "closed"])), **base)
                continue
            if draw(st.integers(0, 9)):
                add(type="call.offered", ts=t, attributes={"tier": draw(st.sampled_from(["vip", "std"]))}, **base)
            wait = draw(st.sampled_from([0, 2999, 3000, 5000, 20_000, 30_001, 95_000]))
            end = draw(st.sampled_from(["answered", "abandoned", "timed_out", "none", "conflict"]))
            if end in ("answered", "conflict"):
                add(type="call.answered", ts=t + wait, agent_id="a1", **base)
                if draw(st.booleans()):
                    add(type="call.ended", ts=t + wait + 60_000, hold_seconds=draw(st.sampled_from([0, 2.5])), **base)
                    if draw(st.booleans()):
                        add(type="call.wrapup_completed", ts=t + wait + 90_000, agent_id="a1", **base)
            if end in ("abandoned", "conflict"):
                add(type="call.abandoned", ts=t + wait + 500, **base)
            if end == "timed_out":
                add(type="call.timed_out", ts=t + wait, **base)
            t += wait + 1000
    for a in range(draw(st.integers(0, 4))):
        t = BASE_MS + draw(st.integers(0, 3600_000))
        for _ in range(draw(st.integers(1, 6))):
            t += draw(st.sampled_from([1000, 45_000, 130_000, 900_000]))
            add(type="agent.state", ts=t, agent_id=f"ag{a}",
                state=draw(st.sampled_from(["available", "on_call", "wrap_up", "away", "offline"])),
                queues=draw(st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True)))
    for k in range(draw(st.integers(0, 6))):
        tid, t = f"t{k % 5}", BASE_MS + draw(st.integers(0, 3 * 3600_000))
        q = draw(st.sampled_from(QUEUES))
        add(type="ticket.created", ts=t, ticket_id=tid, queue=q, channel=draw(st.sampled_from(["email", "chat"])),
            priority=draw(st.sampled_from(["low", "normal", "urgent"])),
            tags=draw(st.sampled_from([[], ["complaint"], ["x", "complaint"]])))
        for _ in range(draw(st.integers(0, 6))):
            t += draw(st.sampled_from([5000, 200_000, 700_000, 2_400_000]))
            kind = draw(st.sampled_from(["reply", "reply", "status", "status", "assign", "escalate", "reopen"]))
            if kind == "reply":
                add(type="ticket.replied", ts=t, ticket_id=tid, author=draw(st.sampled_from(["agent", "customer"])),
                    public=draw(st.sampled_from([True, True, False])), tags=draw(st.sampled_from([[], ["angry"]])))
            elif kind == "status":
                add(type="ticket.status_changed", ts=t, ticket_id=tid,
                    status=draw(st.sampled_from(["open", "pending", "on_hold", "solved", "closed"])))
            elif kind == "assign":
                add(type="ticket.assigned", ts=t, ticket_id=tid, agent_id="a1",
                    queue=draw(st.sampled_from([None, *QUEUES])))
            elif kind == "escalate":
                add(type="ticket.escalated", ts=t, ticket_id=tid, level=2)
            else:
                add(type="ticket.reopened", ts=t, ticket_id=tid)
    for k in range(draw(st.integers(0, 6))):
        add(type="survey.response", ts=BASE_MS + draw(st.integers(0, 3 * 3600_000)), survey_id=f"s{k % 4}",
            kind=(kind := draw(st.sampled_from(["csat", "nps", "ces"]))),
            score=draw(st.integers(*{"csat": (1, 5), "nps": (0, 10), "ces": (1, 7)}[kind])),
            queue=draw(st.sampled_from(QUEUES)), agent_id=draw(st.sampled_from([None, "a1", "a2"])))
    for k in range(draw(st.integers(0, 5))):
        add(type="kpi.sample", ts=BASE_MS + draw(st.integers(0, 3 * 3600_000)),
            name=draw(st.sampled_from(["churn", "nps_external"])), value=draw(st.sampled_from([0.5, 1.25, -3.0])),
            queue=draw(st.sampled_from([None, "sales"])))
    events += [e for e in events if draw(st.integers(0, 5)) == 0]  # duplicate deliveries
    # Mostly time order with local shuffles (out of order within lateness), plus a few far-off stragglers.
    events.sort(key=lambda e: e["ts"] + draw(st.integers(0, 400)) * (draw(st.integers(0, 3)) == 0))
    order = list(range(len(events)))
    for _ in range(draw(st.integers(0, 3))):
        if len(order) > 1:
            i, j = draw(st.integers(0, len(order) - 1)), draw(st.integers(0, len(order) - 1))
            order.insert(j, order.pop(i))
    return [events[i] for i in order]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=traffic(),
    partitions=st.integers(1, 3),
    sizes=st.lists(st.integers(1, 9), max_size=40),
    now_offset=st.one_of(st.integers(-600_000, 5 * 3600_000), st.sampled_from([3600_000, 3 * 3600_000, 5 * 3600_000])),
    seed=st.integers(0, 1000),
)
def test_streaming_core_equals_oracle(raw, partitions, sizes, now_offset, seed):  # type: ignore[no-untyped-def]
    events = [event_from_dict(d) for d in raw]
    assert all(isinstance(e, Event) for e in events)
    now = BASE_MS + now_offset
    assert stream(events, partitions, sizes, now, random.Random(seed)) == compute(events, CFG, now, partitions)


def test_arrival_order_within_lateness_does_not_matter() -> None:
    raw = [
        {"event_id": "1", "type": "call.offered", "ts": 1795400000, "call_id": "c", "queue": "support"},
        {"event_id": "2", "type": "call.answered", "ts": 1795400012, "call_id": "c", "queue": "support", "agent_id": "a"},
        {"event_id": "3", "type": "call.ended", "ts": 1795400100, "call_id": "c", "queue": "support", "hold_seconds": 4},
        {"event_id": "3w", "type": "call.wrapup_completed", "ts": 1795400130, "call_id": "c", "queue": "support",
         "agent_id": "a"},
        {"event_id": "4", "type": "call.offered", "ts": 1795400001, "call_id": "d", "queue": "support"},
        {"event_id": "5", "type": "call.abandoned", "ts": 1795400004, "call_id": "d", "queue": "support"},
        {"event_id": "6", "type": "call.offered", "ts": 1795400002, "call_id": "e", "queue": "support"},
        {"event_id": "7", "type": "call.abandoned", "ts": 1795400030, "call_id": "e", "queue": "support"},
        {"event_id": "8", "type": "call.offered", "ts": 1795400003, "call_id": "f", "queue": "support"},
        {"event_id": "9", "type": "call.timed_out", "ts": 1795400033, "call_id": "f", "queue": "support"},
        {"event_id": "10", "type": "call.blocked", "ts": 1795400040, "call_id": "g", "queue": "support",
         "reason": "queue_full"},
    ]
    events = [event_from_dict(d) for d in raw]
    now = 1795400200_000
    expected = stream(events, 1, [100], now, random.Random(0))
    w = expected["queues"]["support"]["15m"]
    assert (w["offered"], w["answered"], w["abandoned"], w["short_abandoned"], w["timed_out"]) == (4, 1, 2, 1, 1)
    assert w["asa_seconds"] == 12.0 and w["max_wait_seconds"] == 30.0
    assert w["service_level"] == 1 / 3  # 1 in SL / (1 answered + 2 abandoned + 1 timed out - 1 short)
    assert w["abandon_rate"] == 1 / 3 and w["blocking_rate"] == 1 / 5
    assert w["aht_seconds"] == (88 + 30) and w["avg_talk_seconds"] == 88 and w["avg_hold_seconds"] == 4
    assert w["avg_acw_seconds"] == 30
    rng = random.Random(7)
    for _ in range(50):
        shuffled = events[:]
        rng.shuffle(shuffled)
        assert stream(shuffled, 2, [rng.randint(1, 4) for _ in range(10)], now, rng) == expected


def test_late_and_impossible_events_are_rejected_and_counted() -> None:
    raw = [
        {"event_id": "1", "type": "call.offered", "ts": 1795400000, "call_id": "c", "queue": "q"},
        {"event_id": "2", "type": "call.answered", "ts": 1795400010, "call_id": "c", "queue": "q", "agent_id": "a"},
        {"event_id": "3", "type": "call.abandoned", "ts": 1795400011, "call_id": "c", "queue": "q"},  # impossible
        {"event_id": "4", "type": "call.offered", "ts": 1795401000, "call_id": "d", "queue": "q"},
        {"event_id": "5", "type": "call.offered", "ts": 1795400001, "call_id": "x", "queue": "q"},  # 999 s late
    ]
    events = [event_from_dict(d) for d in raw]
    res = apply_batch(CORES["calls"], PartitionState(), events, CFG)
    assert (res.applied, res.invalid, res.late) == (3, 1, 1)
    assert [(i, reason) for i, reason, _ in res.rejected] == [(2, "invalid_transition"), (4, "late")]
    assert "abandoned" in res.rejected[0][2] and "lateness" in res.rejected[1][2]
    _, _, outcome = replay(events, CFG, 1)
    assert (outcome.invalid, outcome.late) == (1, 1)


def test_unfinished_calls_expire_and_leave_the_waiting_gauge() -> None:
    part = PartitionState()
    first = event_from_dict({"event_id": "1", "type": "call.offered", "ts": 1795400000, "call_id": "c", "queue": "q"})
    apply_batch(CORES["calls"], part, [first], CFG)
    later = event_from_dict({"event_id": "2", "type": "call.offered", "ts": 1795400000 + 1801, "call_id": "d",
                             "queue": "q"})
    res = apply_batch(CORES["calls"], part, [later], CFG)
    assert res.expired == 1 and "c" not in part.states and res.changed["c"] is None
    assert res.deltas.zrem[("zq", "q", "")] == {"1"}
