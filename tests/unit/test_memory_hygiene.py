"""What keeps a long-running worker's pauses short and its RSS from creeping (docs/performance.md)."""

from __future__ import annotations

import gc

from agents.config import MetricsConfig
from agents.core import CORES, BatchResult, PartitionState, apply_batch
from ccmon.worker import tune_malloc
from streams.events import Event, event_from_dict
from streams.simulator import SimConfig, generate


def test_held_entity_states_and_the_ticket_memo_are_invisible_to_the_cyclic_gc() -> None:
    cfg = MetricsConfig()
    sim = SimConfig(seed=5, queues=("a", "b"), arrival_rate_per_hour=600, agents_per_queue=10,
                    ticket_rate_per_hour=300)
    parts = {d: PartitionState() for d in ("calls", "tickets", "surveys")}
    pending: dict[str, list[Event]] = {d: [] for d in parts}
    for raw in generate(sim, 1_795_000_000.0, 2 * 3600):
        ev = event_from_dict(raw)
        assert isinstance(ev, Event)
        if ev.domain in parts:
            pending[ev.domain].append(ev)
    for domain, events in pending.items():
        for i in range(0, len(events), 300):
            apply_batch(CORES[domain], parts[domain], events[i:i + 300], cfg, BatchResult())
    gc.collect()  # what the collector untracks by itself (tuples, dicts of atoms) is untracked after a full pass
    for domain, part in parts.items():
        assert part.states, domain
        for state in part.states.values():
            assert not gc.is_tracked(state), (domain, state)
            seen = getattr(state, "seen", ())
            assert not gc.is_tracked(seen), (domain, seen)  # a tuple of ids; a list would stay tracked forever
    memo = parts["tickets"].memo
    assert memo
    for contribution in memo.values():
        assert not gc.is_tracked(contribution)
        assert type(contribution.counters) is dict  # a defaultdict is never untracked
        assert not gc.is_tracked(contribution.counters)


def test_glibc_keeps_a_fixed_mmap_threshold_in_the_worker() -> None:
    assert tune_malloc()  # this machine is Debian: glibc's mallopt takes both parameters


def test_a_read_without_agent_views_caches_no_agent_field() -> None:
    """The alert evaluator's read (``agents=False``) passes over every agent's fields; caching the kind of each would
    grow the cache by one entry per agent and field (~300 bytes each) for nothing, once its windows hold data."""
    from agents.snapshot import _field_kinds, scan_flat

    fields = {"offered": 3, "blocked:queue_full": 1, "tickets_created:channel:email": 2}
    agent_fields = {f"by_agent:hygiene-{i}:survey:csat": i for i in range(50)}
    flat = [x for k, v in {**fields, **agent_fields}.items() for x in (k, str(v))]
    lean = scan_flat(flat, agents=False)
    assert not any(k.startswith("by_agent:hygiene-") for k in _field_kinds)
    assert lean.plain == fields and lean.agents == {}
    full = scan_flat(flat)  # a full read (the wallboard, /metrics) sorts them out, and caches them
    assert full.plain == lean.plain and len(full.agents) == 50
    assert sum(k.startswith("by_agent:hygiene-") for k in _field_kinds) == 50
    assert scan_flat(flat, agents=False) == lean  # and a lean read after it finds them cached
