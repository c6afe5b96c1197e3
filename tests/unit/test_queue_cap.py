"""The label caps: queue names (CCMON_MAX_QUEUES), survey agents (CCMON_MAX_AGENTS) and ticket channels
(CCMON_MAX_CHANNELS) beyond their cap count as ``other``, KPI names beyond CCMON_MAX_KPIS are refused, and the core
still equals the oracle given the admitted sets."""

from __future__ import annotations

import random
import zlib
from collections import Counter, defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.core import (CORES, OTHER, OTHER_QUEUE, AgentCap, ChannelCap, PartitionState, QueueCap,
                         apply_batch)
from agents.oracle import capped, compute
from agents.pipeline import Pipeline
from streams.events import Event, event_from_dict
from streams.partitioning import partition_for
from tests.unit.test_core_vs_oracle import BASE_MS, CFG, MemoryStore, traffic

T = 1_795_400_000


def ev(**fields: object) -> Event:
    e = event_from_dict({"event_id": f"e{zlib.crc32(repr(fields).encode())}", "ts": T, **fields})
    assert isinstance(e, Event)
    return e


def admit(admitted: set[str], names: list[str], limit: int) -> tuple[list[str], bool]:
    """The admission script of ``ccmon/store.py`` (its Lua), in Python: first come while fewer than ``limit``."""
    kept = []
    for name in names:
        if name in admitted:
            kept.append(name)
        elif len(admitted) < limit:
            admitted.add(name)
            kept.append(name)
    return (sorted(admitted), True) if len(admitted) >= limit else (kept, False)


def test_configured_queues_and_other_always_keep_their_name() -> None:
    cap = QueueCap(0, CFG.queues)
    events = [ev(type="call.offered", call_id="c", queue="sales"), ev(type="call.offered", call_id="c", queue="other"),
              ev(type="call.offered", call_id="d", queue="x")]
    assert cap.strangers(events) == ["x"]
    cap.learn(*admit(set(), ["x"], 0))
    out, n = cap.rewrite(events)
    assert [e.queue for e in out] == ["sales", "other", "other"] and n == 1  # type: ignore[attr-defined]
    assert out[2].event_id == events[2].event_id and out[:2] == events[:2]


def test_names_are_admitted_first_come_up_to_the_cap_and_refused_for_good() -> None:
    admitted: set[str] = set()
    a, b = QueueCap(2, ()), QueueCap(2, ())  # two workers, one admitted set
    first = [ev(type="call.offered", call_id="c1", queue="q1"), ev(type="ticket.created", ticket_id="t", queue="q2",
                                                                   channel="web")]
    assert a.strangers(first) == ["q1", "q2"]
    a.learn(*admit(admitted, a.strangers(first), a.limit))
    assert a.full and a.kept == {OTHER_QUEUE, "q1", "q2"}
    later = [ev(type="survey.response", survey_id="s", kind="csat", score=5, queue="q3"),
             ev(type="agent.state", agent_id="ag", state="available", queues=["q2", "q3", "q4", "q1"]),
             ev(type="kpi.sample", name="k", value=1.0), ev(type="ticket.assigned", ticket_id="t", agent_id="a")]
    b.learn(*admit(admitted, b.strangers(later), b.limit))
    assert b.full and b.kept == a.kept  # the full set comes back whole: nothing more to ask
    out, n = b.rewrite(later)
    assert n == 2 and out[0].queue == OTHER_QUEUE  # type: ignore[attr-defined]
    assert out[1].queues == ["q2", OTHER_QUEUE, "q1"]  # type: ignore[attr-defined]
    assert out[2:] == later[2:]
    assert capped(later, CFG, admitted) == out  # the oracle's rule, from the admitted set alone


def many_queues(raw: list[dict]) -> list[dict]:
    """The traffic with its unconfigured queue spread over several names (one per entity and queue)."""
    pool = ["u0", "u1", "u2", "u3", "u4", OTHER_QUEUE]

    def name(entity: str, q: str) -> str:
        return q if q in CFG.queues else pool[zlib.crc32(f"{entity}/{q}".encode()) % len(pool)]

    out = []
    for d in raw:
        entity = next(str(d[k]) for k in ("call_id", "agent_id", "ticket_id", "survey_id", "name") if k in d)
        d = dict(d)
        if d.get("queue"):
            d["queue"] = name(entity, d["queue"])
        if "queues" in d:
            d["queues"] = list(dict.fromkeys(name(entity, q) for q in d["queues"]))
        out.append(d)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=traffic(), limit=st.integers(0, 4), partitions=st.integers(1, 3),
       sizes=st.lists(st.integers(1, 9), max_size=40), seed=st.integers(0, 1000))
def test_capped_stream_equals_the_oracle_given_the_admitted_set(raw, limit, partitions, sizes, seed):  # type: ignore[no-untyped-def]
    events = [event_from_dict(d) for d in many_queues(raw)]
    rng = random.Random(seed)
    store, admitted = MemoryStore(), set()
    parts: dict[tuple[str, int], PartitionState] = defaultdict(PartitionState)
    caps: dict[tuple[str, int], QueueCap] = {}  # one per partition: as many workers, one admitted set
    pending: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for e in events:
        pending[(e.domain, partition_for(e.entity_id, partitions))].append(e)
    sizes_it, rewritten = iter(sizes), 0
    while any(pending.values()):
        key = rng.choice([k for k, v in pending.items() if v])
        n = max(1, next(sizes_it, 5))
        batch, pending[key] = pending[key][:n], pending[key][n:]
        cap = caps.setdefault(key, QueueCap(limit, CFG.queues))
        strangers = cap.strangers(batch)
        if strangers:
            if not cap.full:
                cap.learn(*admit(admitted, strangers, limit))
            batch, k = cap.rewrite(batch)
            rewritten += k
        store.apply(apply_batch(CORES[key[0]], parts[key], batch, CFG))
    now = BASE_MS + 3 * 3600_000
    assert len(admitted) <= limit
    assert store.queues <= {*CFG.queues, OTHER_QUEUE, *admitted}
    assert store.snapshot(now) == compute(events, CFG, now, partitions, admitted=admitted)
    keep = {*CFG.queues, OTHER_QUEUE, *admitted}
    assert rewritten == sum(1 for e in events if getattr(e, "queue", None) not in (None, *keep)
                            or any(q not in keep for q in getattr(e, "queues", None) or ()))


# ------------------------------------------------------------- every label cap


def test_survey_agents_and_ticket_channels_beyond_the_cap_count_as_other() -> None:
    agents, channels = AgentCap(1), ChannelCap(1)
    events = [ev(type="survey.response", survey_id="s1", kind="csat", score=5, queue="sales", agent_id="a1"),
              ev(type="survey.response", survey_id="s2", kind="nps", score=9, queue="x", agent_id="a2"),
              ev(type="survey.response", survey_id="s3", kind="ces", score=2, queue="x"),
              ev(type="ticket.created", ticket_id="t1", queue="sales", channel="email"),
              ev(type="ticket.created", ticket_id="t2", queue="sales", channel="carrier-pigeon"),
              ev(type="call.answered", call_id="c", queue="sales", agent_id="a9")]  # an entity id, not a label
    admitted: dict[str, set[str]] = {"agents": set(), "channels": set()}
    for cap in (agents, channels):
        assert cap.strangers(events) == {"agents": ["a1", "a2"], "channels": ["email", "carrier-pigeon"]}[cap.kind]
        cap.learn(*admit(admitted[cap.kind], cap.strangers(events), cap.limit))
        assert cap.full and not cap.strangers(events[:1] + events[3:4])
    out, n = agents.rewrite(events)
    assert n == 1 and [getattr(e, "agent_id", None) for e in out] == ["a1", OTHER, None, None, None, "a9"]
    out, n = channels.rewrite(out)
    assert n == 1 and [getattr(e, "channel", None) for e in out[3:5]] == ["email", OTHER]
    assert [e.event_id for e in out] == [e.event_id for e in events]
    assert capped(events, CFG, admitted) == out  # the oracle's rule, from the admitted sets alone


def run(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine that never waits (the admission below answers at once)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine waited")


class Admissions:
    """The store's admission (``Store.admit``) over in-memory sets, one per kind."""

    def __init__(self) -> None:
        self.sets: dict[str, set[str]] = defaultdict(set)

    async def admit(self, kind: str, names: list[str], limit: int) -> tuple[list[str], bool]:
        return admit(self.sets[kind], names, limit)


def pipeline(domain: str, store: Admissions, limits: dict[str, int]) -> Pipeline:
    async def no_dead_letters(_: list[bytes]) -> None:
        raise AssertionError("not used")
    return Pipeline(domain, "cc." + domain, 1, store, CFG, no_dead_letters, limits=limits)  # type: ignore[arg-type]


def test_kpi_names_beyond_the_cap_are_refused_with_a_reason() -> None:
    store = Admissions()
    p = pipeline("kpis", store, {"kpis": 2, "queues": 1})
    batch = [ev(type="kpi.sample", name="churn", value=1.0), ev(type="kpi.sample", name="other", value=2.0),
             ev(type="kpi.sample", name="aht_external", value=3.0, queue="q1"),
             ev(type="kpi.sample", name="spam1", value=4.0, queue="q2"),
             ev(type="kpi.sample", name="churn", value=5.0, queue="q3")]
    stats: Counter[str] = Counter()
    events, kept, refused = run(p._cap(batch, stats))
    assert store.sets["kpis"] == {"churn", "aht_external"}  # "other" is always kept and does not use up the cap
    assert kept == [0, 1, 2, 4] and [i for i, _, _ in refused] == [3]
    _, reason, detail = refused[0]
    assert reason == "too_many_kpis" and "'spam1'" in detail and "CCMON_MAX_KPIS" in detail
    assert store.sets["queues"] == {"q1"}  # the refused sample's queue was never asked for
    assert [getattr(e, "queue") for e in events] == [None, None, "q1", OTHER] and stats == {"queues_capped": 1}
    assert events == capped(batch, CFG, store.sets)


def spread(raw: list[dict]) -> list[dict]:
    """The traffic with its unconfigured queues, survey agents, ticket channels and KPI names each spread over
    several names (one per entity and value, ``other`` among them)."""
    def name(pool: str, entity: str, value: str) -> str:
        names = [f"{pool}{i}" for i in range(5)] + [OTHER]
        return names[zlib.crc32(f"{entity}/{value}".encode()) % len(names)]

    out = []
    for d in many_queues(raw):
        entity = next(str(d[k]) for k in ("call_id", "agent_id", "ticket_id", "survey_id", "name") if k in d)
        d = dict(d)
        if d["type"] == "survey.response" and d.get("agent_id"):
            d["agent_id"] = name("agent", entity, d["agent_id"])
        elif d["type"] == "ticket.created":
            d["channel"] = name("ch", entity, d["channel"])
        elif d["type"] == "kpi.sample":
            d["name"] = name("kpi", d["event_id"], d["name"])  # not by entity: the name *is* the entity
        out.append(d)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=traffic(), limits=st.fixed_dictionaries({k: st.integers(0, 4) for k in ("queues", "agents", "channels",
                                                                                     "kpis")}),
       partitions=st.integers(1, 3), sizes=st.lists(st.integers(1, 9), max_size=40), seed=st.integers(0, 1000))
def test_every_capped_label_equals_the_oracle_given_the_admitted_sets(raw, limits, partitions, sizes, seed):  # type: ignore[no-untyped-def]
    events = [event_from_dict(d) for d in spread(raw)]
    rng = random.Random(seed)
    store, admissions = MemoryStore(), Admissions()
    parts: dict[tuple[str, int], PartitionState] = defaultdict(PartitionState)
    pipes: dict[tuple[str, int], Pipeline] = {}  # one per partition: as many workers, one set per kind
    pending: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for e in events:
        pending[(e.domain, partition_for(e.entity_id, partitions))].append(e)
    sizes_it, stats, refused = iter(sizes), Counter[str](), 0
    while any(pending.values()):
        key = rng.choice([k for k, v in pending.items() if v])
        n = max(1, next(sizes_it, 5))
        batch, pending[key] = pending[key][:n], pending[key][n:]
        p = pipes.setdefault(key, pipeline(key[0], admissions, limits))
        batch, kept, out = run(p._cap(batch, stats))
        refused += len(out)
        store.apply(apply_batch(CORES[key[0]], parts[key], batch, CFG))
    now = BASE_MS + 3 * 3600_000
    sets = admissions.sets
    assert all(len(sets[k]) <= limits[k] for k in limits)
    assert store.queues <= {*CFG.queues, OTHER, *sets["queues"]}
    assert store.snapshot(now) == compute(events, CFG, now, partitions, admitted={k: sets[k] for k in limits})
    keep = {k: {OTHER, *sets[k], *(CFG.queues if k == "queues" else ())} for k in limits}
    assert stats["agents_capped"] == sum(1 for e in events if getattr(e, "agent_id", None) not in (None, *keep["agents"])
                                         and e.type == "survey.response")
    assert stats["channels_capped"] == sum(1 for e in events if e.type == "ticket.created"
                                           and e.channel not in keep["channels"])  # type: ignore[attr-defined]
    assert refused == sum(1 for e in events if e.type == "kpi.sample" and e.name not in keep["kpis"])  # type: ignore[attr-defined]
