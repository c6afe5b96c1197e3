"""The Prometheus alert rules are valid, tested, documented, and match ccmon's built-in defaults.

``promtool check rules`` and ``promtool test rules`` run when promtool is on PATH;
with ``CI=true`` a missing promtool is a failure, elsewhere a skip.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml

from alerts.config import builtin_rules
from alerts.defaults import (
    DEFAULT_RULES,
    PROMQL_OPERATORS,
    RUNBOOK_BASE,
    TARGET,
    DefaultRule,
    Guard,
)
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "ccmon.rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules-tests" / "ccmon.rules.test.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"

# Names in an expression that are not metrics (PromQL keywords and aggregations;
# functions are recognised by the "(" that follows them).
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "inf", "nan", "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "start", "end",
}
PROMETHEUS_OWN = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)\s*(?:bool\s*)?(?:(?:on|ignoring)\s*\([^)]*\)\s*)?([0-9][0-9.eE+-]*)?")


# ---------------------------------------------------------------- helpers




def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as ``5m``, ``30s`` or ``1h30m``."""
    text = str(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (before de-duplication)."""
    text = heading.strip().lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def markdown_anchors(text: str) -> set[str]:
    """Every heading anchor in a Markdown document, with GitHub's -1, -2 suffixes for repeats."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not m:
            continue
        slug = github_slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: not labels, strings, durations, keywords or functions."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r" \1 ", expr)  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", expr):
        name = m.group(0)
        if name.lower() in PROMQL_WORDS or re.match(r"\s*\(", expr[m.end():]):
            continue
        names.add(name)
    return names


def comparisons(expr: str) -> set[tuple[str, float | None]]:
    """(operator, number) of each comparison; the number is None when the right side is not a literal."""
    out = set()
    for m in _COMPARISON.finditer(expr):
        out.add((m.group(1), float(m.group(2)) if m.group(2) else None))
    return out


def has_selector(expr: str, metric: str, labels: dict[str, str]) -> bool:
    """Whether ``expr`` selects ``metric`` with (at least) these equality matchers."""
    for m in re.finditer(rf"(?<![\w:]){re.escape(metric)}(?![\w:])\s*(\{{[^}}]*\}})?", expr):
        matchers = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', m.group(1) or ""))
        if all(matchers.get(k) == v for k, v in labels.items()):
            return True
    return False


def aggregated(expr: str, aggregation: str, metric: str) -> bool:
    """Whether ``metric`` appears inside an ``aggregation`` such as ``sum`` or ``max by (queue)``."""
    head = re.compile(rf"(?<![\w:]){aggregation}\s*\(")
    for m in head.finditer(expr):
        depth, end = 1, m.end()
        while depth and end < len(expr):
            depth += {"(": 1, ")": -1}.get(expr[end], 0)
            end += 1
        if re.search(rf"(?<![\w:]){re.escape(metric)}(?![\w:])", expr[m.end():end]):
            return True
    return False


def wanted_labels(rule: DefaultRule | Guard) -> dict[str, str]:
    labels = dict(rule.labels)
    if rule.window is not None:
        labels["window"] = rule.window
    return labels


def squash(expr: str) -> str:
    return re.sub(r"\s+", " ", expr).strip()


@pytest.fixture(scope="module")
def rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    out: dict[str, dict[str, Any]] = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] not in out, f"alert {rule['alert']} is defined twice"
                out[rule["alert"]] = rule
    assert out, f"{RULES} has no alerting rules"
    return out


# ---------------------------------------------------------------- promtool


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool", "Debian package `prometheus`")
    res = subprocess.run(
        [promtool, "check", "rules", str(RULES)], check=False, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, f"promtool check rules failed:\n{res.stdout}\n{res.stderr}"


def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool", "Debian package `prometheus`")
    res = subprocess.run(
        [promtool, "test", "rules", str(RULES_TEST)], check=False, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, f"promtool test rules failed:\n{res.stdout}\n{res.stderr}"


def test_unit_tests_load_the_rules_file_and_stay_out_of_the_rules_dir() -> None:
    doc = yaml.safe_load(RULES_TEST.read_text())
    loaded = [(RULES_TEST.parent / p).resolve() for p in doc["rule_files"]]
    assert loaded == [RULES.resolve()]
    # prometheus.yml loads rules/*.yml: a test file there would be loaded as rules.
    assert RULES_TEST.parent != RULES.parent


def test_every_alert_has_a_firing_and_a_quiet_unit_test(rules: dict[str, dict[str, Any]]) -> None:
    doc = yaml.safe_load(RULES_TEST.read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test") or []:
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
            for alert in case.get("exp_alerts") or []:
                ann = alert.get("exp_annotations") or {}
                assert {"summary", "description", "runbook_url"} <= set(ann), (
                    f"{test['name']}: expected alerts must spell out their annotations"
                )
    assert not set(rules) - fires, f"alerts with no case that fires: {sorted(set(rules) - fires)}"
    assert not set(rules) - quiet, f"alerts with no case that must not fire: {sorted(set(rules) - quiet)}"


# ---------------------------------------------------------------- shape, runbooks


def test_every_rule_has_for_severity_and_annotations(rules: dict[str, dict[str, Any]]) -> None:
    for name, rule in rules.items():
        assert rule.get("expr"), f"{name} has no expr"
        assert rule.get("for"), f"{name} has no for"
        parse_duration(rule["for"])
        assert (rule.get("labels") or {}).get("severity") in ("critical", "warning", "info"), name
        ann = rule.get("annotations") or {}
        for key in ("summary", "description", "runbook_url"):
            assert ann.get(key), f"{name} has no annotations.{key}"
        assert ann["runbook_url"].startswith(RUNBOOK_BASE + "#"), f"{name}: runbook_url must start with {RUNBOOK_BASE}#"


def test_every_runbook_anchor_is_a_heading() -> None:
    anchors = markdown_anchors(RUNBOOKS.read_text())
    doc = yaml.safe_load(RULES.read_text())
    urls = [r["annotations"]["runbook_url"] for g in doc["groups"] for r in g["rules"] if "alert" in r]
    missing = sorted({u.split("#", 1)[1] for u in urls} - anchors)
    assert not missing, f"docs/runbooks.md has no heading for {missing}; its anchors: {sorted(anchors)}"


def test_github_slug_rules() -> None:
    assert github_slug("SL below target") == "sl-below-target"
    assert github_slug("Calls waiting, no agent available") == "calls-waiting-no-agent-available"
    assert github_slug("What `ccmon metrics` shows (v2)") == "what-ccmon-metrics-shows-v2"
    assert markdown_anchors("# A\n```\n# B\n```\n## A\n") == {"a", "a-1"}


# ---------------------------------------------------------------- defaults <-> rules


def test_defaults_and_rules_have_the_same_alerts(rules: dict[str, dict[str, Any]]) -> None:
    defaults = {d.name for d in DEFAULT_RULES}
    assert len(defaults) == len(DEFAULT_RULES), "DEFAULT_RULES has duplicate names"
    assert not defaults - set(rules), f"defaults with no Prometheus rule: {sorted(defaults - set(rules))}"
    assert not set(rules) - defaults, f"Prometheus rules with no default: {sorted(set(rules) - defaults)}"


def _check_condition(where: str, expr: str, cond: DefaultRule | Guard) -> None:
    labels = wanted_labels(cond)
    assert has_selector(expr, cond.metric, labels), f"{where}: expr does not select {cond.metric}{labels}"
    op = PROMQL_OPERATORS[cond.op]
    found = comparisons(expr)
    if cond.threshold == TARGET:
        assert has_selector(expr, "ccmon_service_level_target_ratio", {}), f"{where}: no target in expr"
        assert re.search(rf"(?<![<>=!]){re.escape(op)}(?!=)\s*on\s*\(\s*queue\s*\)", expr), (
            f"{where}: expected `{op} on(queue)` against the target"
        )
    else:
        assert (op, float(cond.threshold)) in found, f"{where}: expected `{op} {cond.threshold:g}`, found {found}"
    # Replicas serve the same global view: per-queue gauges are deduplicated with max.
    aggregation = {"max_by_queue": r"max\s+by\s*\(\s*queue\s*\)", "sum": "sum", "max": "max"}.get(cond.aggregate)
    if aggregation:
        assert aggregated(expr, aggregation, cond.metric), f"{where}: {cond.metric} must be inside {cond.aggregate}"


@pytest.mark.parametrize("default", DEFAULT_RULES, ids=lambda d: d.name)
def test_rule_mirrors_its_default(default: DefaultRule, rules: dict[str, dict[str, Any]]) -> None:
    rule = rules.get(default.name)
    assert rule is not None, f"no Prometheus rule named {default.name}"
    expr = squash(rule["expr"])
    _check_condition(default.name, expr, default)
    if default.guard is not None:
        _check_condition(f"{default.name} guard", expr, default.guard)
    if default.kind == "age":
        assert re.search(r"time\(\)\s*-", expr), f"{default.name}: an age rule compares time() - {default.metric}"
    if default.kind == "increase":
        offsets = [parse_duration(d) for d in re.findall(r"offset\s+(\w+)", expr)]
        ranges = [parse_duration(d) for d in re.findall(r"\[(\w+)\]", expr)]
        assert default.increase_seconds in offsets + ranges, (
            f"{default.name}: expected the increase over {default.increase_seconds} s (offset or range)"
        )
    assert parse_duration(rule["for"]) == default.for_seconds, (
        f"{default.name}: for {rule['for']} but the default says {default.for_seconds} s"
    )
    assert rule["labels"]["severity"] == default.severity, default.name
    assert rule["annotations"]["runbook_url"] == default.runbook_url, default.name


def test_default_templates_format() -> None:
    for d in DEFAULT_RULES:
        for text in (d.summary, d.description):
            text.format(queue="sales", value=0.5, instance="10.0.0.1:8640", target=0.8)


def test_default_hysteresis_as_ccmon_evaluates_it() -> None:
    # The defaults are data; ccmon's engine evaluates them (alerts.config.from_default), so check it there.
    from alerts.engine import AlertState, Evaluation, step

    by_name = {r.name: r for r in builtin_rules()}

    def kinds(name: str, values: list[float], threshold: float) -> list[str]:
        rule, state, out = by_name[name], AlertState(name, "q"), []
        for i, v in enumerate(values):
            state, notes = step(rule, state, Evaluation(v, threshold), i * 3600_000)
            out += [n.kind for n in notes]
        return out

    # Steps an hour apart: the second breaching step is past every default `for`.
    assert kinds("CcmonServiceLevelBelowTarget", [0.79, 0.79, 0.81, 0.82], 0.8) == ["firing", "resolved"]
    assert kinds("CcmonServiceLevelBelowTarget", [0.8, 0.8], 0.8) == []
    assert kinds("CcmonServiceLevelBelowTarget", [0.5, 0.5, 1.0], 0.99) == ["firing", "resolved"]  # clears at 100%
    assert kinds("CcmonLongestWaitHigh", [121, 121, 100, 90], 120) == ["firing", "resolved"]
    assert kinds("CcmonCallsBlocked", [1, 1, 0], 0) == ["firing", "resolved"]
    with pytest.raises(ValueError):
        DefaultRule("X", "m", None, "above", 10, 60, 20, "warning", "s", "d", "x")  # clear above threshold


# ---------------------------------------------------------------- metric names


def test_expression_helpers() -> None:
    expr = squash(
        'max by (queue) (ccmon_service_level_ratio{window="15m"}) < on(queue) '
        "max by (queue) (ccmon_service_level_target_ratio) and on() "
        "time() - max(ccmon_last_commit_timestamp_seconds offset 1h) > 60 "
        "or sum(rate(ccmon_call_wait_seconds_bucket[5m])) >= 1e3 or up == 0"
    )
    assert metric_names(expr) == {
        "ccmon_service_level_ratio", "ccmon_service_level_target_ratio", "ccmon_last_commit_timestamp_seconds",
        "ccmon_call_wait_seconds_bucket", "up",
    }
    assert comparisons(expr) == {("<", None), (">", 60.0), (">=", 1000.0), ("==", 0.0)}
    assert has_selector(expr, "ccmon_service_level_ratio", {"window": "15m"})
    assert not has_selector(expr, "ccmon_service_level_ratio", {"window": "1h"})
    assert aggregated(expr, r"max\s+by\s*\(\s*queue\s*\)", "ccmon_service_level_target_ratio")
    assert aggregated(expr, "sum", "ccmon_call_wait_seconds_bucket")
    assert not aggregated(expr, "sum", "ccmon_service_level_ratio")
    assert parse_duration("1h30m") == 5400 and parse_duration("30s") == 30
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_every_metric_in_the_rules_is_documented(rules: dict[str, dict[str, Any]]) -> None:
    documented = set(re.findall(r"`([a-zA-Z_:][\w:]*)`", METRICS_DOC.read_text()))

    def known(name: str) -> bool:
        if name in PROMETHEUS_OWN or name in documented:
            return True
        return any(name.endswith(s) and name[: -len(s)] in documented for s in HISTOGRAM_SUFFIXES)

    used = {name for rule in rules.values() for name in metric_names(rule["expr"])}
    missing = sorted(n for n in used if not known(n))
    assert not missing, f"metrics used by alert rules but not listed in docs/metrics.md: {missing}"
