"""The Prometheus exposition of a snapshot, and the histogram and self-metric helpers behind it."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents import selfstats
from agents.config import MetricsConfig, QueueConfig, bucket_bound, hist_fields
from agents.oracle import compute
from agents.snapshot import histogram
from ccmon.exposition import SnapshotCollector, render, render_worker
from prometheus_client.exposition import choose_encoder
from streams.events import event_from_dict

T0 = 1795400000


def ev(n: int, type_: str, ts: float, **fields: object) -> object:
    return event_from_dict({"event_id": str(n), "type": type_, "ts": T0 + ts, **fields})


def call(n: int, queue: str, wait: float, outcome: str = "call.answered", at: float = 0) -> list:
    extra = {"agent_id": "a"} if outcome == "call.answered" else {}
    return [ev(n * 10, "call.offered", at, call_id=f"c{n}", queue=queue),
            ev(n * 10 + 1, outcome, at + wait, call_id=f"c{n}", queue=queue, **extra)]


CFG = MetricsConfig(queues={"vip": QueueConfig(sl_threshold_seconds=25, short_abandon_seconds=3)})


def scrape(events: list, now_s: float = 300, status: dict | None = None) -> dict[tuple[str, frozenset], float]:
    """The parsed text exposition of the oracle's snapshot."""
    snap = compute(events, CFG, (T0 + now_s) * 1000)
    body, content_type = render(snap, status or {"stats": {}, "lag": {}}, None)
    assert content_type.startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


def one(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.mark.parametrize(("bounds", "value", "expected"), [
    ((5, 10, 20), 0, 5), ((5, 10, 20), 5, 5), ((5, 10, 20), 6, 10), ((5, 10, 20), 20, 20), ((5, 10, 20), 21, None),
])
def test_bucket_bound_is_le(bounds: tuple[int, ...], value: int, expected: int | None) -> None:
    assert bucket_bound(bounds, value) == expected


def test_histogram_is_cumulative_and_folds_retired_bounds_upward() -> None:
    t: Counter[str] = Counter()
    for v in (1000, 5000, 7000, 20000, 999_000):
        bucket, total = hist_fields("w", (5000, 10000, 20000), v)
        t[bucket] += 1
        t[total] += v
    t["h:w:15000"] += 2  # counted while 15 s was a bound; it is no longer
    h = histogram(t, "w", (5000, 10000, 20000))
    assert h["buckets"] == {"5.0": 2, "10.0": 3, "20.0": 6, "+Inf": 7}
    assert h["count"] == 7 and h["sum"] == (1000 + 5000 + 7000 + 20000 + 999_000) / 1000


def test_queue_bounds_include_its_thresholds_and_ticket_targets() -> None:
    q = QueueConfig(sl_threshold_seconds=25, short_abandon_seconds=3,
                    ticket_sla=(("normal", 7 * 60_000, 3600_000),))
    assert {25_000, 3_000} <= set(q.wait_bounds_ms) and list(q.wait_bounds_ms) == sorted(q.wait_bounds_ms)
    assert 7 * 60_000 in q.frt_bounds_ms


def test_wait_histogram_matches_the_sl_counts() -> None:
    events = call(1, "vip", 25) + call(2, "vip", 25.001) + call(3, "vip", 3, "call.abandoned") + \
        call(4, "vip", 4, "call.abandoned") + call(6, "sales", 20) + call(5, "vip", 700, "call.timed_out")
    s = scrape(events, now_s=900)
    assert one(s, "ccmon_call_wait_seconds_bucket", queue="vip", outcome="answered", le="25.0") == 1
    assert one(s, "ccmon_calls_answered_in_sl_total", queue="vip") == 1
    assert one(s, "ccmon_call_wait_seconds_bucket", queue="vip", outcome="abandoned", le="3.0") == 1
    assert one(s, "ccmon_calls_short_abandoned_total", queue="vip") == 1
    assert one(s, "ccmon_call_wait_seconds_count", queue="vip", outcome="timed_out") == 1
    assert one(s, "ccmon_call_wait_seconds_bucket", queue="vip", outcome="timed_out", le="600.0") == 0
    assert one(s, "ccmon_call_wait_seconds_sum", queue="vip", outcome="answered") == 50.001
    assert one(s, "ccmon_call_wait_seconds_bucket", queue="sales", outcome="answered", le="20.0") == 1
    assert ("ccmon_call_wait_seconds_bucket", frozenset({"queue": "sales", "outcome": "answered", "le": "25.0"}.items())) \
        not in s  # bounds are per queue
    assert one(s, "ccmon_service_level_threshold_seconds", queue="vip") == 25


def test_an_empty_denominator_has_no_sample() -> None:
    s = scrape(call(1, "q", 10, "call.abandoned"), now_s=60)
    assert one(s, "ccmon_abandon_ratio", queue="q", window="15m") == 1.0
    assert one(s, "ccmon_service_level_ratio", queue="q", window="15m") == 0.0  # the abandon counts against
    names = {name for name, labels in s if dict(labels).get("queue") == "q"}
    for absent in ("ccmon_asa_seconds", "ccmon_aht_seconds", "ccmon_csat_ratio", "ccmon_ticket_fcr_ratio",
                   "ccmon_longest_wait_seconds", "ccmon_asa_target_seconds", "ccmon_ticket_first_response_seconds_count"):
        assert absent not in names, absent
    assert one(s, "ccmon_window_calls", queue="q", window="15m", outcome="answered") == 0  # counts are always there


def test_window_label_only_on_windowed_gauges() -> None:
    events = call(1, "q", 10) + [ev(99, "agent.state", 0, agent_id="a", state="available", queues=["q"])]
    s = scrape(events)
    for name, labels in s:
        has_window = "window" in dict(labels)
        windowed = name.startswith("ccmon_window_") or name in {
            "ccmon_service_level_ratio", "ccmon_abandon_ratio", "ccmon_blocking_ratio", "ccmon_asa_seconds",
            "ccmon_max_wait_seconds", "ccmon_aht_seconds", "ccmon_talk_average_seconds", "ccmon_occupancy_ratio",
            "ccmon_hold_average_seconds", "ccmon_after_call_work_average_seconds", "ccmon_custom_count",
            "ccmon_custom_ratio"} or name.startswith(("ccmon_ticket_", "ccmon_csat", "ccmon_nps", "ccmon_ces",
                                                     "ccmon_agent_c", "ccmon_agent_n")) and "seconds_b" not in name
        if name.startswith("ccmon_ticket_first_response_seconds"):
            windowed = False
        assert has_window == windowed, name
        assert not name.endswith("_total") or not has_window, name


def test_lifetime_counters_and_rates() -> None:
    events = call(1, "q", 10, at=-7200) + call(2, "q", 30) + [
        ev(50, "call.blocked", 5, call_id="b1", queue="q", reason="queue_full"),
        ev(60, "call.offered", 6, call_id="w", queue="q"),
    ]
    s = scrape(events, now_s=60)
    assert one(s, "ccmon_calls_offered_total", queue="q") == 3  # includes the call two hours ago
    assert one(s, "ccmon_window_calls", queue="q", window="15m", outcome="offered") == 2
    assert one(s, "ccmon_calls_blocked_total", queue="q", reason="queue_full") == 1
    assert one(s, "ccmon_arrival_rate_per_second", queue="q") == 2 * 4 / 3600
    assert one(s, "ccmon_oldest_waiting_timestamp_seconds", queue="q") == T0 + 6
    assert one(s, "ccmon_longest_wait_seconds", queue="q") == 54


def test_self_metrics_histograms_come_from_the_stats_hash() -> None:
    stats: Counter[str] = Counter({"consumed": 7, "batches": 2, "rejected:late": 1, "applied:calls": 6})
    selfstats.observe(stats, selfstats.BATCH, 5)
    selfstats.observe(stats, selfstats.BATCH, 2)
    selfstats.observe(stats, selfstats.COMMIT, 1200)
    selfstats.observe_latencies(stats, 10_000, [9_990, 9_000, 20_000])
    s = scrape([], status={"stats": dict(stats), "lag": {"cc.calls:0": 3}})
    assert one(s, "ccmon_batch_events_count") == 2 and one(s, "ccmon_batch_events_bucket", le="10.0") == 2
    assert one(s, "ccmon_batch_events_sum") == 7
    assert one(s, "ccmon_redis_commit_duration_seconds_bucket", le="0.001") == 0
    assert one(s, "ccmon_redis_commit_duration_seconds_bucket", le="0.0025") == 1
    assert one(s, "ccmon_redis_commit_duration_seconds_sum") == 0.0012
    assert one(s, "ccmon_end_to_end_latency_seconds_bucket", le="0.005") == 1  # the future event counts as 0
    assert one(s, "ccmon_end_to_end_latency_seconds_bucket", le="0.01") == 2
    assert one(s, "ccmon_end_to_end_latency_seconds_count") == 3
    assert one(s, "ccmon_events_late_total") == 1 and one(s, "ccmon_events_rejected_total", reason="late") == 1
    assert one(s, "ccmon_consumer_lag_messages", topic="cc.calls", partition="0") == 3
    assert one(s, "ccmon_queues") == 0


def test_openmetrics_is_negotiated() -> None:
    snap = compute(call(1, "q", 10), CFG, (T0 + 60) * 1000)
    body, content_type = render(snap, {"stats": {}, "lag": {}}, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    body, content_type = render_worker(True, 4, None)
    assert b"ccmon_worker_partitions_assigned 4.0" in body and b"process_resident_memory_bytes" in body
    assert b"ccmon_worker_metrics_scrapes" not in body  # only where the worker serves /metrics
    assert b"ccmon_worker_wallboard_updates" not in body
    body, _ = render_worker(True, 4, None, True, 0, {"helpers": 3, "worker": 1}, 2, {"helpers": 7, "worker": 5},
                            {"helpers": 9, "worker": 4})
    assert b'ccmon_worker_snapshot_reads_total{by="helpers"} 9.0' in body
    assert b'ccmon_worker_snapshot_reads_total{by="worker"} 4.0' in body
    assert b'ccmon_worker_wallboard_updates_total{by="helpers"} 7.0' in body
    assert b'ccmon_worker_wallboard_updates_total{by="worker"} 5.0' in body
    assert b'ccmon_worker_metrics_scrapes_total{by="helpers"} 3.0' in body
    assert b'ccmon_worker_metrics_scrapes_total{by="worker"} 1.0' in body
    assert b"ccmon_worker_metrics_helper_failures_total 2.0" in body


def test_labels_are_escaped() -> None:
    queue = 'odd "queue"\\name\n'
    s = scrape(call(1, queue, 10), now_s=60)
    assert one(s, "ccmon_calls_offered_total", queue=queue) == 1


def test_collector_yields_each_family_once() -> None:
    snap = compute(call(1, "q", 10), CFG, (T0 + 60) * 1000)
    names = [f.name for f in SnapshotCollector(snap, {"stats": {}, "lag": {}}).collect()]
    assert len(names) == len(set(names))


def test_the_fast_text_format_is_byte_for_byte_prometheus_clients() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from ccmon.exposition import text_format

    events = call(1, 'odd "q"\\x\n', 10) + call(2, "vip", 30, "call.abandoned") + [
        ev(90, "survey.response", 1, survey_id="s", kind="csat", score=5, queue="vip", agent_id="a\"1"),
        ev(91, "kpi.sample", 1, name="churn", value=0.25),
        ev(92, "ticket.created", 2, ticket_id="t", queue="vip", channel="web"),
    ]
    snap = compute(events, CFG, (T0 + 120) * 1000)
    status = {"stats": {"consumed": 9, "rejected:late": 1, "last_commit_ms": 1795400000123}, "lag": {"cc.calls:0": 2}}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap, status))  # type: ignore[arg-type]
    assert text_format(SnapshotCollector(snap, status).collect()) == generate_latest(registry)


def test_the_direct_text_format_is_the_collectors_byte_for_byte() -> None:
    """``render`` writes the text format straight from the snapshot; it must be what prometheus_client writes for the
    collector's families (the OpenMetrics path still goes through them)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from agents.config import CustomCounter, CustomRatio, Filter
    from ccmon.exposition import snapshot_text

    cfg = MetricsConfig(queues={"vip": QueueConfig(sl_threshold_seconds=25, short_abandon_seconds=3)},
                        custom_counters=(CustomCounter("complaints", "ticket.created",
                                                       (Filter("tags", "contains", "complaint"),)),),
                        custom_ratios=(CustomRatio("complaint_rate", "complaints", "tickets_created"),))
    events = call(1, 'odd "q"\\x\n', 10) + call(2, "vip", 30, "call.abandoned") + call(3, "vip", 4_000_000) + [
        ev(90, "survey.response", 1, survey_id="s", kind="csat", score=5, queue="vip", agent_id="a\"1"),
        ev(93, "survey.response", 2, survey_id="s2", kind="nps", score=3, queue="vip", agent_id="b"),
        ev(91, "kpi.sample", 1, name="churn", value=0.25),
        ev(94, "kpi.sample", 1, name="q_kpi", value=-2.5, queue="vip"),
        ev(97, "kpi.sample", 1, name="big", value=2_500_000.5),  # Go's exponent form above 1e6
        ev(92, "ticket.created", 2, ticket_id="t", queue="vip", channel="web", tags=["complaint"]),
        ev(95, "call.blocked", 3, call_id="b1", queue="vip", reason="queue_full"),
        ev(96, "agent.state", -600, agent_id="a\"1", state="on_call", queues=["vip"]),
    ]
    for now_s in (120, 5000):
        snap = compute(events, cfg, (T0 + now_s) * 1000)
        status = {"stats": {"consumed": 9, "rejected:late": 1, "last_commit_ms": 1795400000123, "applied:calls": 3},
                  "lag": {"cc.calls:0": 2}}
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(snap, status))  # type: ignore[arg-type]
        assert snapshot_text(snap, status) == generate_latest(registry)
        assert render(snap, status, None)[0] == generate_latest(registry)
        # /metrics builds no roll-up but its custom metrics, the only all-queues samples: the same exposition.
        partial = {**snap, "all": {w: {"custom": v["custom"]} for w, v in snap["all"].items() if w != "now"}}
        assert render(partial, status, None)[0] == generate_latest(registry)
        for accept in ACCEPTS:  # and in every format a scraper may ask for, as prometheus_client writes it
            encoder, content_type = choose_encoder(accept)
            assert render(partial, status, accept) == (encoder(registry), content_type), accept


# What scrapers send: Prometheus 2.x by default (OpenMetrics first), other versions and escaping schemes, plain text.
ACCEPTS = [
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=values",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=0.0.1,text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=0.0.4",
    "*/*",
    "",
]


def test_scrapes_in_openmetrics_take_the_direct_path() -> None:
    """Prometheus asks for OpenMetrics by default: that scrape must not fall back to prometheus_client's per-sample
    families (four times slower at 500 queues)."""
    from ccmon import exposition

    snap = compute(call(1, "q", 10), CFG, (T0 + 60) * 1000)
    direct = []
    original = exposition.snapshot_text

    def spy(*args: object) -> bytes:
        direct.append(args)
        return original(*args)  # type: ignore[arg-type]

    exposition.snapshot_text = spy  # type: ignore[assignment]
    try:
        for accept in ACCEPTS:
            direct.clear()
            body, content_type = render(snap, {"stats": {}, "lag": {}}, accept)
            takes_direct = "dots" not in accept and "values" not in accept
            assert bool(direct) is takes_direct, accept
            assert body.endswith(b"# EOF\n") is content_type.startswith("application/openmetrics-text"), accept
    finally:
        exposition.snapshot_text = original  # type: ignore[assignment]


def test_the_direct_text_format_matches_on_random_traffic() -> None:
    from hypothesis import HealthCheck, given, settings

    from prometheus_client import CollectorRegistry
    from prometheus_client.openmetrics import exposition as openmetrics

    from ccmon.exposition import snapshot_sections, snapshot_text, stitch, text_format
    from tests.unit.test_core_vs_oracle import BASE_MS, CFG as ORACLE_CFG, traffic

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(raw=traffic())
    def check(raw: list) -> None:  # type: ignore[type-arg]
        events = [event_from_dict(d) for d in raw]
        snap = compute(events, ORACLE_CFG, BASE_MS + 3 * 3600_000)
        status = {"stats": {}, "lag": {}}
        assert snapshot_text(snap, status) == text_format(SnapshotCollector(snap, status).collect())
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(snap, status))  # type: ignore[arg-type]
        assert snapshot_text(snap, status, True) == openmetrics.generate_latest(registry)
        # Helper processes render slices of the queues; stitched, they are the whole (ccmon/scrape_pool.py).
        names = sorted(snap["queues"])
        for om in (False, True):
            halves = (names[:len(names) // 2], names[len(names) // 2:])
            slices = [{"queues": {q: snap["queues"][q] for q in half}} for half in halves]
            rest = {"queues": {}, "all": snap["all"], "kpis": snap["kpis"]}
            parts = [snapshot_sections(x, om, whole=False) for x in slices] + [snapshot_sections(rest, om)]
            assert stitch(parts, status, om, len(names)) == snapshot_text(snap, status, om)

    check()
