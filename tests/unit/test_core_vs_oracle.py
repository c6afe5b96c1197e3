"""The streaming core, in arbitrary batches, partitions and arrival orders, must equal the batch oracle."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Optional
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import core as core_module
from agents.business_hours import parse_calendar
from agents.config import CustomCounter, CustomRatio, Filter, MetricsConfig, QueueConfig
from agents.config import day_of
from agents.core import (AGENT_BUCKET, AGENT_DAY, CORES, GLOBAL, OCCUPANCY_STATES, TOTAL, Z_WAIT, Z_WAITING,
                         PartitionState, apply_batch, decode_state, encode_state)
from agents.oracle import compute, replay
from agents.snapshot import DUE_SETS, OPEN_SETS, WINDOWED_SETS, QueueData, assemble, segment_bounds
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


class WindowSums:
    """One queue's rolling-window segment sums as Redis holds them (ws and wz), kept the way commit.lua's
    window-sum section (at each commit) and read.lua (at each read now) keep them: the model the Lua follows,
    step by step. ``kind`` "b" the queue's buckets, AGENT_BUCKET its agents' own (no waits)."""

    def __init__(self, store: "MemoryStore", queue: str, last: int, firsts: tuple[int, ...], kind: str = "b") -> None:
        """read.lua's rebuild: every bucket of the range, summed into segments."""
        self.store, self.queue, self.last, self.firsts, self.kind = store, queue, last, firsts, kind
        self.sums: list[dict[str, int]] = []
        self.waits: dict[int, int] = {}  # wz: each bucket's longest wait
        self.maxima: list[Optional[int]] = []  # 'm|j': None when unknown
        for j, (lo, hi) in enumerate(self.ranges()):
            acc: dict[str, int] = defaultdict(int)
            for b in range(lo, hi + 1, WIDTH):
                for f, v in store.hashes.get((kind, queue, b), {}).items():
                    acc[f] += v
                top = self.top(b)
                if top is not None:
                    self.waits[b] = top
            self.sums.append({f: v for f, v in acc.items() if v})
            self.maxima.append(self.longest(j))

    def top(self, b: int) -> Optional[int]:
        return self.store.top(self.queue, b) if self.kind == "b" else None

    def ranges(self) -> list[tuple[int, int]]:
        his = [self.last] + [f - WIDTH for f in self.firsts[:-1]]
        return list(zip(self.firsts, his))

    def segment(self, b: int, last: Optional[int] = None, firsts: Optional[tuple[int, ...]] = None) -> Optional[int]:
        last, firsts = (self.last, self.firsts) if last is None else (last, firsts)
        if b > last:
            return None
        return next((j for j, first in enumerate(firsts) if b >= first), None)  # type: ignore[arg-type]

    def longest(self, j: int) -> int:
        lo, hi = self.ranges()[j]
        return max([self.waits[b] for b in range(lo, hi + 1, WIDTH) if b in self.waits], default=-1)

    def add(self, j: int, fields: dict[str, int], sign: int) -> None:
        seg = self.sums[j]
        for f, v in fields.items():
            seg[f] = seg.get(f, 0) + sign * v
            if not seg[f]:
                del seg[f]

    def commit(self, b: int, fields: dict[str, int], waits_touched: bool) -> None:
        """commit.lua's window-sum section for one touched bucket (after the batch's own writes)."""
        j = self.segment(b)
        if j is None:
            return
        self.add(j, fields, 1)
        if waits_touched:
            old, new = self.waits.get(b, -1), self.top(b)
            if new is None:
                self.waits.pop(b, None)
                new = -1
            else:
                self.waits[b] = new
            m = self.maxima[j]
            if m is not None:
                if new > m:
                    self.maxima[j] = new
                elif new < old == m:
                    self.maxima[j] = None

    def slide(self, last: int, firsts: tuple[int, ...]) -> bool:
        """read.lua's slide to a new range; False when it would rebuild instead."""
        n = (last - firsts[-1]) // WIDTH + 1
        lo, hi = min(self.firsts[-1], firsts[-1]), max(self.last, last)
        if (hi - lo) // WIDTH >= 2 * n:
            return False
        moves = [(b, self.segment(b), self.segment(b, last, firsts)) for b in range(lo, hi + 1, WIDTH)]
        moves = [m for m in moves if m[1] != m[2]]
        if len(moves) >= n:
            return False
        dirty: set[int] = set()
        for b, o, m in moves:
            fields = self.store.hashes.get((self.kind, self.queue, b), {})
            if o is not None:
                self.add(o, fields, -1)
                w = self.waits.get(b)
                if w is not None and w == self.maxima[o]:
                    dirty.add(o)
            else:
                w = self.top(b)
            if m is None:
                self.waits.pop(b, None)
            else:
                self.add(m, fields, 1)
                if w is not None:
                    self.waits[b] = w
                    if self.maxima[m] is not None and w > self.maxima[m]:  # type: ignore[operator]
                        self.maxima[m] = w
        self.last, self.firsts = last, firsts
        for j in range(len(firsts)):
            if j in dirty or self.maxima[j] is None:
                self.maxima[j] = self.longest(j)
        return True


WIDTH = CFG.bucket_seconds


class MemoryStore:
    """What Redis holds, in memory: the commit's counters and sorted sets (HINCRBY, ZADD/ZREM, HSET/HDEL), and
    the readers' window sums, kept by the commit and slid or rebuilt by reads (``WindowSums``)."""

    def __init__(self) -> None:
        self.hashes: dict = defaultdict(lambda: defaultdict(int))
        self.zsets: dict = defaultdict(dict)
        self.queues: set[str] = set()
        self.sums: dict[tuple[str, str], WindowSums] = {}  # (bucket kind, queue) -> its sums

    def top(self, queue: str, b: int) -> Optional[int]:
        scores = self.zsets.get((Z_WAIT, queue, b))
        return max(scores.values()) if scores else None

    def apply(self, res) -> None:  # type: ignore[no-untyped-def]
        counters, zrem, zadd = res.deltas.counters, res.deltas.zrem, res.deltas.zadd
        for key, fields in counters.items():
            for f, v in fields.items():
                self.hashes[key][f] += v
        for key, members in zrem.items():
            for m in members:
                self.zsets[key].pop(m, None)
        for key, members in zadd.items():
            self.zsets[key].update(members)
        self.queues |= res.queues
        # The commit's window-sum section, from the same batch.
        touched = {(q, b) for (kind, q, b), m in [*zadd.items(), *zrem.items()] if kind == Z_WAIT and m}
        for family in ("b", AGENT_BUCKET):
            buckets = {(q, b): {f: v for f, v in fields.items() if v} for (kind, q, b), fields in counters.items()
                       if kind == family}
            for q, b in buckets.keys() | (touched if family == "b" else set()):
                if (family, q) in self.sums:
                    self.sums[(family, q)].commit(b, buckets.get((q, b), {}), (q, b) in touched)

    def read(self, now_ms: int) -> None:
        """read.lua at a read now: bring every queue's sums to the range of ``now_ms``."""
        last, firsts = segment_bounds(CFG, now_ms)
        for q in [*sorted(self.queues), GLOBAL]:
            for family in ("b", AGENT_BUCKET):
                ws = self.sums.get((family, q))
                if ws is not None and (ws.last, ws.firsts) == (last, firsts):
                    for j, m in enumerate(ws.maxima):
                        if m is None:
                            ws.maxima[j] = ws.longest(j)
                elif ws is None or not ws.slide(last, firsts):
                    self.sums[(family, q)] = WindowSums(self, q, last, firsts, family)

    def snapshot(self, now_ms: int) -> dict:
        self.read(now_ms)
        queues = sorted(self.queues)
        data = {}
        for q in [*queues, GLOBAL]:
            ws, own = self.sums[("b", q)], self.sums[(AGENT_BUCKET, q)]
            longest, top = [], None
            for m in ws.maxima:
                if m is not None and m >= 0 and (top is None or m > top):
                    top = m
                longest.append(top)
            day = day_of(now_ms, CFG.queue(q))
            day_waits = self.zsets.get((Z_WAIT + "d", q, day))
            d = QueueData(segments=[{**s, **a} for s, a in zip(ws.sums, own.sums)], max_wait_ms=longest,
                          day={**self.hashes.get(("d", q, day), {}), **self.hashes.get((AGENT_DAY, q, day), {})},
                          day_max_wait_ms=max(day_waits.values()) if day_waits else None,
                          gauges=dict(self.hashes.get(("n", q, ""), {})), totals=dict(self.hashes.get((TOTAL, q, ""), {})))
            if q != GLOBAL:
                waiting = self.zsets.get((Z_WAITING, q, ""), {})
                d.waiting = (len(waiting), min(waiting.values()) if waiting else None)
                d.open_since = {st: sorted(self.zsets.get((k, q, ""), {}).values())
                                for st, k in zip(OCCUPANCY_STATES, OPEN_SETS)}
                d.windowed_members = {k: sorted(self.zsets.get((k, q, ""), {}).values()) for k in WINDOWED_SETS}
                d.due_members = {k: sum(1 for s in self.zsets.get((k, q, ""), {}).values() if s <= now_ms)
                                 for k in DUE_SETS}
            data[q] = d
        return assemble(queues, data, CFG, now_ms)


def stream(events: list[Event], partitions: int, sizes: list[int], now_ms: int, rng: random.Random) -> dict:
    """Route events to partitions, apply them in batches, reloading state through the codec now and then, and
    reading (which slides or rebuilds the window sums) at random instants in between."""
    store = MemoryStore()
    parts: dict[tuple[str, int], PartitionState] = defaultdict(PartitionState)
    queues: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for ev in events:
        queues[(ev.domain, partition_for(ev.entity_id, partitions))].append(ev)
    sizes_it = iter(sizes)
    read_at = now_ms
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
        if rng.random() < 0.3:  # a scrape: mostly a little later than the last, sometimes far off
            read_at = rng.choice([read_at + rng.randint(0, 200_000), now_ms - rng.randint(0, 2 * 3600_000),
                                  now_ms + rng.randint(-90_000, 90_000)])
            store.read(read_at)
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
            name=draw(st.sampled_from(["churn", "nps_external"])), value=draw(st.sampled_from([0.5, 1.25, -3.0, 0.0])),
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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    raw=traffic(),
    partitions=st.integers(1, 3),
    sizes=st.lists(st.integers(1, 9), max_size=40),
    now_offset=st.integers(-600_000, 5 * 3600_000),
    seed=st.integers(0, 1000),
)
def test_compacting_the_due_heap_after_every_batch_changes_nothing(raw, partitions, sizes, now_offset,  # type: ignore[no-untyped-def]
                                                                    seed):
    events = [event_from_dict(d) for d in raw]
    now = BASE_MS + now_offset
    with patch.multiple(core_module, HEAP_STALE_FACTOR=0, HEAP_SLACK=0):  # any entry at all: compact
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


def test_a_ticket_fact_still_to_come_counts_nowhere_until_its_instant() -> None:
    # An urgent ticket at 10:00 UTC, never answered: its 10-minute first-response clock runs out at 10:10.
    created = 1795341600  # 2026-11-24 10:00:00 UTC
    events = [event_from_dict({"event_id": "t", "type": "ticket.created", "ts": created, "ticket_id": "t1",
                               "queue": "support", "channel": "email", "priority": "urgent"})]
    run_out = (created + 600) * 1000
    for now, missed in ((created * 1000 + 5 * 60_000, 0), (run_out - 1, 0), (run_out, 1), (run_out + 60_000, 1)):
        for snap in (compute(events, CFG, now), stream(events, 1, [1], now, random.Random(0))):
            q = snap["queues"]["support"]
            assert [q[w]["frt_sla"] for w in ("15m", "1h", "today")] == [0.0 if missed else None] * 3, now


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
