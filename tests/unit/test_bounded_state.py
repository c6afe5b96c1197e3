"""State stays bounded over a long run: finished calls leave, unfinished ones expire, history compacts."""

from __future__ import annotations

from agents.config import MetricsConfig
from agents.core import CORES, AgentStateRecord, BatchResult, PartitionState, apply_batch
from streams.events import Event, event_from_dict
from streams.simulator import SimConfig, generate


def test_live_entities_and_heap_stay_bounded_over_thirty_simulated_hours() -> None:
    cfg = MetricsConfig()
    sim = SimConfig(seed=2, queues=("a", "b"), arrival_rate_per_hour=600, agents_per_queue=40)
    parts = {"calls": PartitionState(), "agents": PartitionState()}
    pending: dict[str, list[Event]] = {"calls": [], "agents": []}
    peak_calls = peak_heap = 0
    expired = 0
    for raw in generate(sim, 1_795_000_000.0, 30 * 3600):
        ev = event_from_dict(raw)
        assert isinstance(ev, Event)
        if ev.domain not in parts:
            continue
        pending[ev.domain].append(ev)
        if len(pending[ev.domain]) >= 500:
            res = apply_batch(CORES[ev.domain], parts[ev.domain], pending[ev.domain], cfg, BatchResult())
            expired += res.expired
            pending[ev.domain] = []
            peak_calls = max(peak_calls, len(parts["calls"].states))
            peak_heap = max(peak_heap, len(parts["calls"].heap))
    # ~1200 calls an hour; a finished call stays for the lateness (10 min) after its last event.
    assert 0 < peak_calls < 1200
    assert peak_heap <= 2 * peak_calls + 1024  # compacted past 2x the live entities (HEAP_STALE_FACTOR)
    assert expired == 0  # the simulator finishes every call
    for record in parts["agents"].states.values():
        assert isinstance(record, AgentStateRecord)
        assert len(record.changes) < 60 and len(record.seen) < 60  # compacted to the lateness horizon


def test_a_call_that_never_finishes_expires() -> None:
    cfg = MetricsConfig(call_max_age_seconds=3600)
    part = PartitionState()
    offers = [event_from_dict({"event_id": f"o{i}", "type": "call.offered", "ts": 1795400000 + i * 60,
                               "call_id": f"c{i}", "queue": "q"}) for i in range(200)]
    expired = sum(apply_batch(CORES["calls"], part, offers[i:i + 10], cfg).expired for i in range(0, len(offers), 10))
    assert expired > 100 and len(part.states) <= 62


def test_a_ticket_never_created_leaves_after_the_lateness() -> None:
    # Its creation was before ccmon, or it was forgotten and then closed: nothing counts, and it must not stay.
    cfg = MetricsConfig(lateness_seconds=600)
    part = PartitionState()
    orphan = event_from_dict({"event_id": "x1", "type": "ticket.status_changed", "ts": 1795400000, "ticket_id": "old",
                              "status": "closed"})
    res = apply_batch(CORES["tickets"], part, [orphan], cfg)
    assert res.applied == 1 and "old" in part.states and not res.deltas.counters
    later = [event_from_dict({"event_id": f"n{i}", "type": "ticket.created", "ts": 1795400000 + 300 * i,
                              "ticket_id": f"new{i}", "queue": "q", "channel": "email"}) for i in range(1, 4)]
    res = apply_batch(CORES["tickets"], part, later, cfg)
    assert res.evicted == 1 and "old" not in part.states and res.changed["old"] is None
