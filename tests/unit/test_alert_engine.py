"""The alert lifecycle with an injected clock: for, flapping, hysteresis, repeat, resolve, restarts."""

from __future__ import annotations

from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.config import AlertConfigError, builtin_rules, parse
from alerts.engine import AlertState, Condition, Evaluation, Notification, Rule, change_value, evaluate, render, step

S = 1000  # ms
WAITING = Rule(name="Waiting", condition=Condition("calls_waiting", "now", "above", 3), for_s=30, clear=1,
               repeat_s=300, summary="{value:.0f} waiting in {queue}", description="above {threshold:g}",
               receivers=("hook",))


def run(rule: Rule, values: list[Optional[float]], every_s: int = 10, restart: bool = False,
        threshold: float = 3) -> list[tuple[int, str]]:
    """Step one alert through values sampled every ``every_s``; (second, kind) of each notification."""
    state = AlertState(rule.name, "sales")
    out = []
    for i, v in enumerate(values):
        if restart:
            state = AlertState.decode(state.encode())
        state, notes = step(rule, state, Evaluation(v, threshold), i * every_s * S)
        out += [(i * every_s, n.kind) for n in notes]
    return out


def test_for_waits_before_firing_and_fires_once() -> None:
    assert run(WAITING, [5, 5, 5, 5, 5, 5]) == [(30, "firing")]


def test_flapping_shorter_than_for_never_fires() -> None:
    assert run(WAITING, [5, 5, 0, 5, 5, 0, 5, 5, 0, 5]) == []


def test_hysteresis_holds_until_the_clear_threshold() -> None:
    # Fires at 30 s; 3, 2 are not above 3 but not yet down to the clear value 1: still firing.
    assert run(WAITING, [5, 5, 5, 5, 3, 2, 2, 1, 0]) == [(30, "firing"), (70, "resolved")]


def test_without_clear_it_resolves_when_the_condition_is_false() -> None:
    rule = Rule(name="R", condition=Condition("x", "now", "above", 3))
    assert run(rule, [5, 4, 3, 5]) == [(0, "firing"), (20, "resolved"), (30, "firing")]


def test_repeat_interval_renotifies_only_while_firing() -> None:
    kinds = run(WAITING, [5] * 70)  # 690 s of breach
    assert kinds == [(30, "firing"), (330, "repeat"), (630, "repeat")]


def test_resolve_carries_the_duration() -> None:
    state = AlertState("Waiting", "sales")
    notes: list[Notification] = []
    for i, v in enumerate([5, 5, 5, 5, 5, 0]):
        state, out = step(WAITING, state, Evaluation(v, 3), i * 10 * S)
        notes += out
    assert [n.kind for n in notes] == ["firing", "resolved"]
    assert notes[1].duration_s == 20 and notes[1].started_ms == 30 * S and notes[0].key == "ccmon/Waiting/sales"
    assert notes[0].summary == "5 waiting in sales" and notes[0].receivers == ("hook",)


def test_no_data_resolves_a_firing_alert_and_never_fires() -> None:
    assert run(WAITING, [None, None, 5, 5, 5, 5, None]) == [(50, "firing"), (60, "resolved")]


def test_below_rule_with_a_metric_threshold_and_clear_by() -> None:
    rule = Rule(name="SL", condition=Condition("service_level", "15m", "below", "sl_target"), clear_by=0.02)
    kinds = run(rule, [0.79, 0.80, 0.81, 0.82, 0.5], threshold=0.8)
    assert kinds == [(0, "firing"), (30, "resolved"), (40, "firing")]


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.integers(0, 6).map(float)), max_size=120),
       for_s=st.sampled_from([0, 10, 30]), repeat=st.sampled_from([None, 60]), clear=st.sampled_from([None, 1.0, 2.0]))
def test_restarts_change_nothing_and_notifications_alternate(values: list[Optional[float]], for_s: int,
                                                              repeat: Optional[int], clear: Optional[float]) -> None:
    rule = Rule(name="R", condition=Condition("x", "now", "above", 3), for_s=for_s, repeat_s=repeat, clear=clear)
    straight = run(rule, values)
    assert run(rule, values, restart=True) == straight
    kinds = [k for _, k in straight if k != "repeat"]
    assert kinds == ["firing", "resolved"] * (len(kinds) // 2) + ["firing"] * (len(kinds) % 2)
    # A firing needs `for` seconds of unbroken breach before it.
    for at, kind in straight:
        if kind == "firing":
            first = at // 10 - for_s // 10
            assert all(v is not None and v > 3 for v in values[first: at // 10 + 1])


def test_guard_must_hold_to_fire_and_to_stay_firing() -> None:
    rule = Rule(name="G", condition=Condition("calls_waiting", "now", "above", 0),
                guard=Condition("agents_available", "now", "equal", 0))

    def snap(waiting: int, available: int) -> dict:
        return {"queues": {"q": {"now": {"calls_waiting": waiting, "agents_available": available}}}}

    state = AlertState("G", "q")
    kinds = []
    for i, (w, a) in enumerate([(2, 1), (2, 0), (2, 0), (2, 1)]):
        state, notes = evaluate(rule, state, snap(w, a), {}, i * S)
        kinds += [n.kind for n in notes]
    assert kinds == ["firing", "resolved"]


def test_change_needs_a_full_period_of_history() -> None:
    hist: tuple = ()
    results = []
    for minute, backlog in enumerate([10, 12, 15, 25, 30]):
        value, hist = change_value(hist, backlog, 120, minute * 60 * S)
        results.append(value)
    assert results == [None, None, 5, 13, 15]
    assert all(h[0] >= 4 * 60 * S - 240 * S for h in hist)  # bounded history


def test_system_rules_read_the_worker_status() -> None:
    lag = Rule(name="Lag", condition=Condition("consumer_lag", "system", "above", 100))
    state, notes = evaluate(lag, AlertState("Lag", ""), {"queues": {}}, {"lag": {"cc.calls:0": 150, "cc.calls:1": 1}},
                            0)
    assert [n.kind for n in notes] == ["firing"] and state.value == 151


def test_templates_format_and_leave_unknown_fields() -> None:
    assert render("{value:.1%} in {queue} {nope} {missing:.2f}", {"value": 0.753, "queue": "q", "missing": None}) \
        == "75.3% in q {nope} n/a"


def test_the_predictive_message_says_how_many_agents_are_missing() -> None:
    short = next(r for r in builtin_rules() if r.name == "CcmonAgentsShort")
    snap = {"queues": {"q": {"now": {"agents_required": 9, "agents_staffed": 6, "sl_target": 0.8}}}}
    state = AlertState(short.name, "q")
    state, _ = evaluate(short, state, snap, {}, 0)
    state, notes = evaluate(short, state, snap, {}, 121 * S)
    assert notes[0].summary == "Queue q is 3 agents short" and "Add 3 agents" in notes[0].description


def test_a_99_percent_target_clears_at_100_percent() -> None:
    rule = Rule(name="SL", condition=Condition("service_level", "15m", "below", "sl_target"), clear_by=0.02)
    assert run(rule, [0.5, 1.0], threshold=0.99) == [(0, "firing"), (10, "resolved")]


def test_the_resolve_says_it_is_resolved_and_how_long_it_lasted() -> None:
    state = AlertState("Waiting", "sales")
    notes: list[Notification] = []
    for i, v in enumerate([5, 5, 5, 5, 7, 2, 0]):
        state, out = step(WAITING, state, Evaluation(v, 3), i * 10 * S)
        notes += out
    resolved = notes[-1]
    assert resolved.summary == "Resolved: 7 waiting in sales"  # the last firing text, not the current value
    assert "back to normal after 30s" in resolved.description and "now 0" in resolved.description


def test_builtins_read_snapshot_fields() -> None:
    by = {r.name: r for r in builtin_rules()}
    assert by["CcmonServiceLevelBelowTarget"].condition == Condition("service_level", "15m", "below", "sl_target")
    assert by["CcmonAbandonRateHigh"].guard == Condition("offered", "15m", "at_least", 10)
    assert by["CcmonWorkerStalled"].condition.window == "system"
    assert "CcmonWorkerDown" not in by  # only Prometheus can see a scrape fail


def test_config_overrides_and_receivers() -> None:
    cfg = parse("""
default_receivers: [hook]
receivers:
  - {name: hook, type: webhook, url: "http://127.0.0.1:9/x", bearer_token_env: TOKEN}
  - {name: pd, type: pagerduty, routing_key_env: PD_KEY}
overrides:
  CcmonLongestWaitHigh: {threshold: 90, for: 1m, receivers: [pd]}
  CcmonCallsBlocked: {enabled: false}
rules:
  - {name: Vip, metric: service_level, window: 1h, queues: vip, below: 0.9, for: 2m, repeat_interval: 30m}
""", {"TOKEN": "s3cret", "PD_KEY": "k"})
    by = {r.name: r for r in cfg.rules}
    assert by["CcmonLongestWaitHigh"].condition.threshold == 90 and by["CcmonLongestWaitHigh"].for_s == 60
    assert by["CcmonLongestWaitHigh"].receivers == ("pd",) and by["CcmonAbandonRateHigh"].receivers == ("hook",)
    assert "CcmonCallsBlocked" not in by
    assert by["Vip"].queues == ("vip",) and by["Vip"].repeat_s == 1800 and by["Vip"].receivers == ("hook",)
    assert cfg.receivers["hook"].bearer_token == "s3cret" and "s3cret" not in str(cfg.receivers["hook"].redacted())
    assert cfg.receivers["pd"].url.startswith("https://events.pagerduty.com")


@pytest.mark.parametrize(("text", "problem"), [
    ("rules:\n  - name: A\n    metric: x\n    above: 1\n    for: 5x\n", "alerts:5: rules.0.for"),
    ("rules:\n  - name: A\n    metric: x\n", "alerts:2: rules.0: Value error, give exactly one of"),
    ("receivers:\n  - name: h\n    type: webhook\n", "alerts:2: receivers.0: Value error, a webhook receiver needs url"),
    ("rules:\n  - {name: A, metric: x, above: 1, receivers: [nope]}\n", "alerts:2: unknown receiver 'nope'"),
    ("receivers:\n  - {name: s, type: slack, url_env: HOOK}\n", "alerts:2: receiver s: url comes from $HOOK"),
    ("overrides:\n  Nope: {threshold: 1}\n", "alerts:2: no built-in rule 'Nope'"),
    ("rules: [\n", "alerts:2: not valid YAML"),
    ("rules:\n  - {name: CcmonCallsBlocked, metric: x, above: 1}\n", "alerts:2: rule CcmonCallsBlocked is defined twice"),
    ("rules:\n  - {name: A, metric: lag, window: system, above: 1}\n", "alerts:2: window system has the metrics"),
    ("rules:\n  - {name: A, metric: x, above: 5, clear: 6}\n", "alerts:2: rules.0: Value error, clear 6 is on the"),
    ("rules:\n  - {name: A, metric: x, below: 5, clear: 6, clear_by: 1}\n", "alerts:2: rules.0: Value error, give clear"),
    ("rules:\n  - {name: A, metric: x, equal: 0, clear_by: 1}\n", "alerts:2: rules.0: Value error, an equal rule"),
    ("rules:\n  - {name: A, metric: x, above: 1, repeat_interval: 0s}\n", "alerts:2: rules.0: Value error, repeat"),
    ("evaluation_interval: 0s\n", "alerts:1: evaluation_interval: Value error"),
])
def test_config_errors_name_their_line(text: str, problem: str) -> None:
    with pytest.raises(AlertConfigError) as info:
        parse(text, {})
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems
