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
