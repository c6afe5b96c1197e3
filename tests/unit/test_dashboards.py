"""The Grafana dashboards load, use the provisioned datasource, and query only documented metrics.

Grafana itself is not run: the dashboard JSON is parsed and cross-checked against
the datasource provisioning and docs/metrics.md. When ``promtool`` is on PATH
every query is also parsed by the real PromQL parser; with ``CI=true`` a missing
promtool is a failure, elsewhere a skip.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import dashboard_queries, iter_panels, metric_names
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCES_YML = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"

DASHBOARD_FILES = sorted(DASHBOARD_DIR.glob("*.json"))
EXPECTED_UIDS = {"ccmon-queues", "ccmon-helpdesk"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
WINDOWS = ["15m", "30m", "1h", "today"]

_HEADING = re.compile(r"(#{1,6})\s+(.*)")
# `name` or `name{labels}`: a backticked metric name, with or without its labels.
_BACKTICKED_NAME = re.compile(r"`([A-Za-z_:][A-Za-z0-9_:]*)(?:\{[^`]*\})?`")


def load(path: Path) -> dict[str, Any]:
    """The dashboard JSON at path."""
    return json.loads(path.read_text())


def provisioned_datasource_uid() -> str:
    """The uid of the Prometheus datasource Grafana is provisioned with."""
    sources = yaml.safe_load(DATASOURCES_YML.read_text())["datasources"]
    (uid,) = [s["uid"] for s in sources if s["type"] == "prometheus"]
    return uid


def documented_metric_names(markdown: str) -> set[str]:
    """Backticked names in the markdown's section(s) whose heading starts with "Prometheus"."""
    names: set[str] = set()
    level = 0  # heading level of the Prometheus section being read; 0 when outside one
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        # "# HELP ..." in a fenced exposition sample is not a heading.
        heading = None if fenced else _HEADING.match(line)
        if heading:
            depth = len(heading.group(1))
            if level and depth <= level:
                level = 0
            if not level and heading.group(2).strip().lower().startswith("prometheus"):
                level = depth
            continue
        if level and not fenced:
            names.update(_BACKTICKED_NAME.findall(line))
    return names


def is_documented(name: str, documented: set[str]) -> bool:
    """Whether name is documented, a histogram's x_bucket/x_sum/x_count counting as x."""
    if name in documented:
        return True
    return any(name.endswith(s) and name[: -len(s)] in documented for s in HISTOGRAM_SUFFIXES)




def variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    """The template variable called name."""
    found = [v for v in dashboard.get("templating", {}).get("list", []) if v.get("name") == name]
    assert len(found) == 1, f"{dashboard.get('uid')}: expected one template variable {name!r}, found {len(found)}"
    return found[0]


def substitute_variables(expr: str, dashboard: dict[str, Any]) -> str:
    """expr with Grafana's variables replaced by sample values, as Grafana would before sending it."""
    current: dict[str, str] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        value = var.get("current", {}).get("value")
        # "All" and multi-value selections become a regex; any plain word stands in for them.
        current[var["name"]] = value if isinstance(value, str) and not value.startswith("$") else "x"

    def value_of(m: re.Match[str]) -> str:
        name = (m.group(1) or m.group(2)).split(":")[0]
        return "1m" if name.startswith("__") else current.get(name, "x")

    return re.sub(r"\$\{([^}]*)\}|\$(\w+)", value_of, expr)


dashboards = pytest.mark.parametrize("path", DASHBOARD_FILES, ids=[p.name for p in DASHBOARD_FILES])


# ---------------------------------------------------------------- the set of dashboards


def test_the_ccmon_dashboards_exist() -> None:
    uids = {load(p).get("uid") for p in DASHBOARD_FILES}
    assert len(DASHBOARD_FILES) >= 2
    assert EXPECTED_UIDS <= uids, f"missing dashboards {EXPECTED_UIDS - uids}"


def test_dashboard_uids_are_unique() -> None:
    uids = [load(p).get("uid") for p in DASHBOARD_FILES]
    assert all(uids), "every dashboard needs a uid, or Grafana makes a new one on each provisioning"
    assert len(uids) == len(set(uids)), f"duplicate dashboard uids: {uids}"


def test_placeholder_is_gone() -> None:
    assert not (DASHBOARD_DIR / ".gitkeep").exists()


# ---------------------------------------------------------------- each dashboard


@dashboards
def test_dashboard_is_valid_json(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert isinstance(dashboard, dict)
    assert dashboard.get("title")
    assert isinstance(dashboard.get("schemaVersion"), int)
    assert isinstance(dashboard.get("panels"), list) and dashboard["panels"]


@dashboards
def test_panel_ids_are_unique(path: Path) -> None:
    ids = [p.get("id") for p in iter_panels(load(path))]
    assert None not in ids
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"


@dashboards
def test_every_panel_and_target_uses_the_provisioned_datasource(path: Path) -> None:
    uid = provisioned_datasource_uid()
    wrong = []
    for panel in iter_panels(load(path)):
        title = panel.get("title", "")
        if (panel.get("datasource") or {}).get("uid") != uid:
            wrong.append(f"panel {title!r}: {panel.get('datasource')!r}")
        for target in panel.get("targets", []):
            if (target.get("datasource") or {}).get("uid") != uid:
                wrong.append(f"panel {title!r} target {target.get('refId')}: {target.get('datasource')!r}")
    for var in load(path).get("templating", {}).get("list", []):
        if var.get("type") == "query" and (var.get("datasource") or {}).get("uid") != uid:
            wrong.append(f"variable {var.get('name')!r}: {var.get('datasource')!r}")
    assert not wrong, f"{path.name}: not on datasource uid {uid!r}:\n" + "\n".join(wrong)


@dashboards
def test_every_panel_but_rows_queries_something(path: Path) -> None:
    empty = [p.get("title") for p in iter_panels(load(path))
             if p.get("type") != "row" and not any(t.get("expr") for t in p.get("targets", []))]
    assert not empty, f"{path.name}: panels without a query: {empty}"


@dashboards
def test_queue_and_window_variables(path: Path) -> None:
    dashboard = load(path)
    queue = variable(dashboard, "queue")
    assert queue["type"] == "query"
    assert queue["multi"] and queue["includeAll"]
    query = queue["query"]["query"] if isinstance(queue["query"], dict) else queue["query"]
    assert re.fullmatch(r"label_values\(\s*ccmon_\w+\s*,\s*queue\s*\)", query), query
    window = variable(dashboard, "window")
    assert window["type"] == "custom"
    assert [o["value"] for o in window["options"]] == WINDOWS
    assert window["current"]["value"] == "15m"


@dashboards
def test_nothing_is_summed_across_replicas(path: Path) -> None:
    # Every ccmon replica serves the same global values, so sum by/sum() would
    # multiply them by the replica count; sum without (...) keeps the instance
    # label and is always wrapped in a max by.
    summed = [(title, expr) for title, expr in dashboard_queries(load(path))
              if re.search(r"\bsum\s*(\(|by\b)", expr, re.I)]
    assert not summed, f"{path.name}: aggregate with max by (queue), not sum: {summed}"


@dashboards
def test_every_queried_metric_is_documented(path: Path) -> None:
    documented = documented_metric_names(METRICS_DOC.read_text())
    assert documented, "docs/metrics.md has no Prometheus section listing metric names in backticks"
    missing: dict[str, list[str]] = {}
    for title, expr in dashboard_queries(load(path)):
        for name in sorted(metric_names(expr)):
            if not is_documented(name, documented):
                missing.setdefault(name, []).append(title)
    assert not missing, (
        f"{path.name} queries metrics not in the Prometheus section of docs/metrics.md:\n"
        + "\n".join(f"  {name} (in {sorted(set(titles))})" for name, titles in sorted(missing.items()))
    )


@dashboards
def test_queries_parse_with_promtool(path: Path, tmp_path: Path) -> None:
    promtool = require_tool("promtool", "Debian package `prometheus`")
    dashboard = load(path)
    rules = [{"record": f"dashboard_query_{i}", "expr": substitute_variables(expr, dashboard)}
             for i, (_, expr) in enumerate(dashboard_queries(dashboard))]
    rules_file = tmp_path / "dashboard.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}, sort_keys=False))
    res = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"promtool rejects a query of {path.name}:\n{res.stdout}\n{res.stderr}"


# ---------------------------------------------------------------- the helpers themselves


@pytest.mark.parametrize(("expr", "names"), [
    ('histogram_quantile(0.9, sum by (queue, le) (rate(ccmon_call_wait_seconds_bucket{queue=~"$queue"}[5m])))',
     {"ccmon_call_wait_seconds_bucket"}),
    ("max by (queue) (a) < on(queue) max by (queue) (b)", {"a", "b"}),
    ("a * on (queue) group_left (state, agent) b", {"a", "b"}),
    ("a * on(queue) group_left b", {"a", "b"}),
    ("a / ignoring(outcome) group_right() b", {"a", "b"}),
    ("sum without (instance, job) (x)", {"x"}),
    ("sum(x) by (queue)", {"x"}),
    ("SUM BY (queue) (x) OR y unless z AND w", {"x", "y", "z", "w"}),
    ('label_replace(ccmon_x{queue="by sum offset"}, "dst", "$1 rate(foo) bar", "src", "(.*)")', {"ccmon_x"}),
    ('a{q="say \\"by\\" or not"} + b{q=\'single quoted c\'} + d{q=`raw \\d+ e`}', {"a", "b", "d"}),
    ('x{a="}", b="{"} + y', {"x", "y"}),
    ("rate(x_total[5m] offset 1h)", {"x_total"}),
    ("x offset -1h30m", {"x"}),
    ('rate(x_total{queue=~"$queue"}[$__rate_interval]) * 60', {"x_total"}),
    ("x > ${threshold:raw} and y < $limit", {"x", "y"}),
    ("x > bool 0.5", {"x"}),
    ("max_over_time(rate(x[5m])[1h:1m]) @ end()", {"x"}),
    ("x @ 1609746000", {"x"}),
    ('{__name__="x", queue="q"} + {__name__=~"y.*"} + {"z"}', {"x", "z"}),
    ("ccmon:calls:rate5m", {"ccmon:calls:rate5m"}),
    ('x_sum / x_count + x_bucket{le="+Inf"}', {"x_sum", "x_count", "x_bucket"}),
    ("1e3 * 0x1F * .5 + Inf - NaN + vector(1) + time()", set()),
    ('count_values("version", ccmon_build_info) + topk(5, x) + quantile(0.9, y)', {"ccmon_build_info", "x", "y"}),
    ("a # a comment naming ccmon_fake\n  + b", {"a", "b"}),
    ("max by (queue) (\n  a\n)\n/\n(\n  b > 0\n)", {"a", "b"}),
])
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize("expr", ['x{a="unterminated}', "sum(x", "x{a='b'"])
def test_metric_names_rejects_malformed_queries(expr: str) -> None:
    with pytest.raises(ValueError):
        metric_names(expr)


def test_dashboard_queries_reads_nested_rows_and_variables() -> None:
    dashboard = {
        "panels": [
            {"type": "timeseries", "title": "top", "targets": [{"expr": "a", "refId": "A"}, {"refId": "B"}]},
            {"type": "row", "title": "open row", "collapsed": False, "panels": []},
            {"type": "stat", "title": "after the open row", "targets": [{"expr": "b"}]},
            {"type": "row", "title": "collapsed row", "collapsed": True,
             "panels": [{"type": "stat", "title": "nested", "targets": [{"expr": "c"}]}]},
        ],
        "templating": {"list": [
            {"type": "query", "name": "queue", "query": 'label_values(d_total{x="1,2"}, queue)'},
            {"type": "query", "name": "object", "query": {"query": "label_values(e, queue)", "refId": "V"}},
            {"type": "query", "name": "result", "query": "query_result(topk(3, f))"},
            {"type": "query", "name": "any_series", "query": "label_values(queue)"},
            {"type": "custom", "name": "window", "query": "15m,30m"},
        ]},
    }
    assert dashboard_queries(dashboard) == [
        ("top", "a"),
        ("after the open row", "b"),
        ("nested", "c"),
        ("variable queue", 'd_total{x="1,2"}'),
        ("variable object", "e"),
        ("variable result", "topk(3, f)"),
    ]
    assert set().union(*(metric_names(e) for _, e in dashboard_queries(dashboard))) == {
        "a", "b", "c", "d_total", "e", "f"}


def test_documented_metric_names_reads_only_the_prometheus_section() -> None:
    markdown = "\n".join([
        "# Metrics",
        "`ccmon_elsewhere` is mentioned before the section.",
        "## Prometheus",
        "| metric | type |",
        "|---|---|",
        "| `ccmon_calls_offered_total` | counter |",
        "| `ccmon_call_wait_seconds` | histogram |",
        "| `ccmon_agents{queue,state}` | gauge |",
        "```text",
        "# HELP ccmon_in_a_sample not a heading",
        "```",
        "### Self-metrics",
        "- `ccmon_events_late_total`",
        "## Next section",
        "`ccmon_after` is not in it.",
    ])
    documented = documented_metric_names(markdown)
    assert {"ccmon_calls_offered_total", "ccmon_call_wait_seconds", "ccmon_agents",
            "ccmon_events_late_total"} <= documented
    assert not {"ccmon_elsewhere", "ccmon_after", "ccmon_in_a_sample"} & documented
    assert is_documented("ccmon_call_wait_seconds_bucket", documented)
    assert is_documented("ccmon_call_wait_seconds_count", documented)
    assert not is_documented("ccmon_call_wait_seconds_created", documented)
    assert not is_documented("ccmon_calls_offered", documented)
