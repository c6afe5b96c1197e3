"""The snapshot views, rewritten for scrape speed, must equal the previous ones exactly (same keys, same floats).

``tests/unit/snapshot_reference.py`` keeps the previous implementation verbatim. The oracle test cannot catch a
mistake here on its own: the oracle and the streaming path both end in ``build_snapshot``.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.config import CustomCounter, CustomRatio, MetricsConfig, QueueConfig
from agents.snapshot import (QueueData, QueueRaw, _Scan, _scan, assemble, build_snapshot, scan_flat, segment_bounds,
                             totals_view, window_view)
from tests.unit import snapshot_reference as ref

CFG = MetricsConfig(
    queues={"vip": QueueConfig(sl_threshold_seconds=25, short_abandon_seconds=3, sl_formula="answered_only")},
    custom_counters=(CustomCounter("complaints", "ticket.created"), CustomCounter("offered", "call.offered")),
    custom_ratios=(CustomRatio("complaint_rate", "complaints", "tickets_created"),
                   CustomRatio("odd", "offered", "answered")),
)
PLAIN = ["offered", "answered", "answered_in_sl", "abandoned", "short_abandoned", "abandoned_in_sl", "timed_out",
         "blocked", "handled", "talk_ms", "hold_ms", "acw_ms", "wrapups", "answer_wait_ms", "tickets_created",
         "tickets_solved", "tickets_reopened", "tickets_escalated", "frt_count", "frt_ms", "frt_met", "frt_missed",
         "res_count", "res_ms", "res_met", "res_missed", "fcr_yes", "fcr_no", "csat_satisfied", "nps_promoters",
         "nps_detractors", "ces_sum", "survey:csat", "survey:nps", "survey:ces", "agent_ms:available",
         "agent_ms:on_call", "agent_ms:wrap_up", "custom:complaints", "custom:offered", "unknown:field"]
SPECIAL = ["blocked:queue_full", "blocked:closed", "tickets_created:channel:web", "tickets_created:channel:a:b",
           "tickets_created:priority:low", "by_agent:a1:survey:csat", "by_agent:a1:csat_satisfied",
           "by_agent:a2:survey:nps", "by_agent:a2:nps_promoters", "by_agent:a2:nps_detractors", "by_agent:a3",
           "by_agent:a3:survey:ces", "by_agent:a3:ces_sum", "by_agent:a:b:survey:csat", "by_agent::survey:nps"]
HIST_FIELDS = ["h:wait:answered:5000", "h:wait:answered:20000", "h:wait:answered:25000", "h:wait:answered:15000",
               "h:wait:answered:inf", "h:wait:answered:sum", "h:wait:abandoned:3000", "h:wait:abandoned:7000",
               "h:wait:abandoned:sum", "h:wait:timed_out:600000", "h:frt:300000", "h:frt:3600000", "h:frt:inf",
               "h:frt:sum", "h:frt:123"]
VALUES = st.one_of(st.integers(0, 5), st.integers(-3, 400), st.sampled_from([0, 1, 10**12]))

counters = st.dictionaries(st.sampled_from(PLAIN + SPECIAL), VALUES, max_size=40)
counts = st.dictionaries(st.sampled_from(PLAIN + SPECIAL), st.integers(0, 400), max_size=40)  # the forecast's input
totals = st.dictionaries(st.sampled_from(PLAIN + SPECIAL + HIST_FIELDS), VALUES, max_size=50)


@settings(max_examples=600)
@given(c=counters, max_wait=st.one_of(st.none(), st.integers(0, 10**6)),
       formula=st.sampled_from(["standard", "answered_only", "abandons_met_if_short"]))
def test_window_view_is_the_previous_one(c: dict, max_wait: int | None, formula: str) -> None:  # type: ignore[type-arg]
    assert window_view(c, max_wait, formula, CFG) == ref.window_view(c, max_wait, formula, CFG)


@settings(max_examples=400)
@given(t=totals, queue=st.sampled_from(["q", "vip"]))
def test_totals_view_is_the_previous_one(t: dict, queue: str) -> None:  # type: ignore[type-arg]
    assert totals_view(t, CFG.queue(queue)) == ref.totals_view(t, CFG.queue(queue))


@settings(max_examples=300)
@given(flat=st.lists(st.tuples(st.sampled_from(PLAIN + SPECIAL), st.integers(-5, 10**15)), max_size=30))
def test_a_hash_as_redis_returns_it_sorts_out_like_a_dict(flat: list) -> None:  # type: ignore[type-arg]
    as_dict = dict(flat)
    scan = scan_flat([x for k, v in as_dict.items() for x in (k, str(v))])
    assert scan == _scan(as_dict)
    lean = scan_flat([x for k, v in as_dict.items() for x in (k, str(v))], agents=False)
    assert lean == _Scan(scan.plain, scan.blocked, scan.created, {})


raws = st.builds(
    QueueRaw,
    windows=st.fixed_dictionaries({"15m": counters, "30m": counters, "1h": counters, "today": counters,
                                   "_arrival": counts, "_aht": counts}),
    max_wait_ms=st.fixed_dictionaries({w: st.one_of(st.none(), st.integers(0, 10**6))
                                       for w in ("15m", "30m", "1h", "today")}),
    gauges=st.dictionaries(st.sampled_from(["agents_available", "agents_on_call", "agents_wrap_up", "agents_away",
                                            "agents_staffed", "kpi:churn", "kpi:nps", "kpi_n:churn", "kpi_n:nps",
                                            "kpi_n:zero", "tickets_open",
                                            "tickets_open:status:open", "tickets_open:priority:low", "ztb", "zts",
                                            "ztd"]), st.integers(0, 40)),
    waiting=st.integers(0, 5),
    oldest_waiting_ms=st.one_of(st.none(), st.integers(1_795_399_000_000, 1_795_400_000_000)),
    open_since=st.fixed_dictionaries({s: st.lists(st.integers(1_795_396_000_000, 1_795_400_100_000), max_size=4)
                                      for s in ("available", "on_call", "wrap_up")}),
    totals=totals,
)


@settings(max_examples=200, deadline=None)
@given(queues=st.dictionaries(st.sampled_from(["q", "vip", 'odd "q"', ""]), raws, max_size=4))
def test_build_snapshot_is_the_previous_one(queues: dict) -> None:  # type: ignore[type-arg]
    now = 1_795_400_000_000
    expected = ref.build_snapshot(queues, CFG, now)
    assert build_snapshot(queues, CFG, now) == expected
    partial = build_snapshot(queues, CFG, now, rollup_all=False)
    assert partial["queues"] == expected["queues"] and partial["kpis"] == expected["kpis"]
    assert partial["all"] == {w: {"custom": expected["all"][w]["custom"]} for w in CFG.window_names}  # type: ignore[index]
    lean = build_snapshot(queues, CFG, now, rollup_all=False, agents=False)  # the alert evaluator's
    assert lean["queues"] == {q: {w: {k: v for k, v in view.items() if k != "surveys_by_agent"}  # type: ignore[union-attr]
                                  if w in CFG.window_names else view for w, view in qv.items()}  # type: ignore[union-attr]
                              for q, qv in expected["queues"].items()}  # type: ignore[union-attr]
    assert lean["all"] == partial["all"] and lean["kpis"] == expected["kpis"]


@settings(max_examples=200, deadline=None)
@given(segments=st.lists(counters, min_size=3, max_size=3), day=counters, totals_=totals)
def test_assembled_windows_are_the_sums_of_their_segments(segments: list, day: dict,  # type: ignore[type-arg]
                                                          totals_: dict) -> None:  # type: ignore[type-arg]
    now = 1_795_400_000_000
    data = {"q": QueueData(segments=segments, max_wait_ms=[None, 5, 9], day=day, totals=totals_)}
    got = assemble(["q"], data, CFG, now)
    windows: dict[str, dict[str, int]] = {}
    acc: dict[str, int] = {}
    for (name, _), seg in zip(sorted(CFG.windows, key=lambda w: w[1]), segments):
        for k, v in seg.items():
            acc[k] = acc.get(k, 0) + v
        windows[name] = dict(acc)
    raw = QueueRaw(windows={**windows, "today": day, "_arrival": windows["15m"], "_aht": windows["1h"]},
                   max_wait_ms={"15m": None, "30m": 5, "1h": 9, "today": None}, totals=totals_)
    assert got == ref.build_snapshot({"q": raw, "": QueueRaw()}, CFG, now)
    assert len(segment_bounds(CFG, now)[1]) == 3
