"""Deltas sum per minute and spread once per batch; that must equal spreading every entity's counters exactly."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.config import HIST, MetricsConfig, QueueConfig, bucket_start, day_of
from agents.core import AGENT_BUCKET, AGENT_DAY, BLOCKED_REASON, BY_AGENT, TOTAL, TOTAL_FIELDS, Contribution, Deltas

BASE_MS = 1_795_400_000_000
QUEUES = {
    "kathmandu": QueueConfig(timezone="Asia/Kathmandu", daily_reset="06:30"),  # +05:45
    "newyork": QueueConfig(timezone="America/New_York"),
}
FIELDS = ("offered", "answered", "answer_wait_ms", "blocked:queue_full", "agent_ms:on_call", HIST + "wait:answered:20000",
          BY_AGENT + "a1:survey:csat")


def exact(pairs: list[tuple[Contribution, Contribution]], cfg: MetricsConfig) -> dict:
    """The spreading as it was before pre-aggregation: every key at its own exact time."""
    out: dict = defaultdict(lambda: defaultdict(int))
    for before, after in pairs:
        for key in before.counters.keys() | after.counters.keys():
            d = after.counters.get(key, 0) - before.counters.get(key, 0)
            if not d:
                continue
            queue, ts, name = key
            if ts is None:
                out[("n", queue, "")][name] += d
            elif name.startswith(HIST):
                out[(TOTAL, queue, "")][name] += d
            elif name.startswith(BY_AGENT):  # an agent's own field: the agents' bucket and day hashes
                out[(AGENT_BUCKET, queue, bucket_start(ts, cfg.bucket_seconds))][name] += d
                out[(AGENT_DAY, queue, day_of(ts, cfg.queue(queue)))][name] += d
            else:
                out[("b", queue, bucket_start(ts, cfg.bucket_seconds))][name] += d
                out[("d", queue, day_of(ts, cfg.queue(queue)))][name] += d
                if name in TOTAL_FIELDS or name.startswith(BLOCKED_REASON):
                    out[(TOTAL, queue, "")][name] += d
    return out


def nonzero(d: dict) -> dict:
    return {k: {f: v for f, v in fs.items() if v} for k, fs in d.items() if any(fs.values())}


key = st.tuples(st.sampled_from(sorted(QUEUES) + ["default"]),
                # around local midnights and resets of both zones, to the millisecond
                st.one_of(st.none(), st.integers(0, 3 * 86_400_000).map(lambda x: BASE_MS + x)),
                st.sampled_from(FIELDS))
contribution = st.dictionaries(key, st.integers(-5, 5), max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([20, 30, 60, 300, 3600]), st.lists(st.tuples(contribution, contribution), max_size=12))
def test_per_minute_aggregation_equals_exact_spreading(width: int, raw: list) -> None:
    cfg = MetricsConfig(bucket_seconds=width, queues=QUEUES)
    pairs = []
    for b, a in raw:
        before, after = Contribution(), Contribution()
        before.counters.update(b)
        after.counters.update(a)
        pairs.append((before, after))
    deltas = Deltas()
    for before, after in pairs:
        deltas.add(before, after, cfg)
    assert nonzero(deltas.counters) == nonzero(exact(pairs, cfg))
