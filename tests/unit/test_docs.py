"""The README and docs stay true: every setting, command and event type is documented."""

from __future__ import annotations

from pathlib import Path

from agents.config import CustomCounter, CustomRatio, MetricsConfig
from agents.oracle import compute
from ccmon.cli import app
from ccmon.exposition import SnapshotCollector, WorkerCollector
from ccmon.settings import FileModel, QueueModel, Settings, load_metrics_config
from streams.events import EVENT_TYPES, event_from_dict

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
EVENTS_DOC = (ROOT / "docs" / "events.md").read_text()
METRICS_DOC = (ROOT / "docs" / "metrics.md").read_text() if (ROOT / "docs" / "metrics.md").exists() else ""


def test_every_environment_variable_is_in_the_readme() -> None:
    for name in Settings.model_fields:
        assert f"`CCMON_{name.upper()}`" in README, name


def test_every_cli_command_is_in_the_readme() -> None:
    for cmd in app.registered_commands:
        name = cmd.name or cmd.callback.__name__  # type: ignore[union-attr]
        assert f"`ccmon {name}" in README, name


def test_every_event_type_is_documented() -> None:
    for tag in EVENT_TYPES:
        assert f"`{tag}`" in EVENTS_DOC, tag
        assert f"`{tag}`" in README, tag


def test_every_prometheus_metric_is_in_the_readme() -> None:
    events = [event_from_dict(e) for e in (
        {"event_id": "1", "type": "call.offered", "ts": 1795400000, "call_id": "c", "queue": "q"},
        {"event_id": "2", "type": "call.answered", "ts": 1795400010, "call_id": "c", "queue": "q", "agent_id": "a"},
        {"event_id": "3", "type": "agent.state", "ts": 1795400000, "agent_id": "a", "state": "on_call", "queues": ["q"]},
        {"event_id": "4", "type": "ticket.created", "ts": 1795400000, "ticket_id": "t", "queue": "q", "channel": "web"},
        {"event_id": "5", "type": "ticket.replied", "ts": 1795400001, "ticket_id": "t", "author": "agent"},
        {"event_id": "6", "type": "ticket.status_changed", "ts": 1795400002, "ticket_id": "t", "status": "solved"},
        {"event_id": "7", "type": "ticket.created", "ts": 1795400000, "ticket_id": "u", "queue": "q", "channel": "web"},
        {"event_id": "8", "type": "ticket.escalated", "ts": 1795400003, "ticket_id": "u"},
        {"event_id": "9", "type": "survey.response", "ts": 1795400000, "survey_id": "s", "kind": "csat", "score": 5,
         "queue": "q", "agent_id": "a"},
        {"event_id": "10", "type": "kpi.sample", "ts": 1795400000, "name": "churn", "value": 0.1, "queue": "q"},
    )]
    cfg = MetricsConfig(custom_counters=(CustomCounter("webs", "ticket.created"),),
                        custom_ratios=(CustomRatio("web_share", "webs", "tickets_created"),))
    snapshot = compute(events, cfg, 1795400060_000 + 8 * 86400_000)
    status = {"stats": {"applied:calls": 1, "duplicates:calls": 1, "rejected:invalid_json": 1, "last_commit_ms": 1},
              "lag": {"cc.calls:0": 0}}
    families = list(SnapshotCollector(snapshot, status).collect())
    assert len({f.name for f in families}) == len(families), "a family is yielded twice"
    for family in families + list(WorkerCollector(True, 4).collect()):
        name = family.name + ("_total" if family.type == "counter" else "_info" if family.type == "info" else "")
        assert f"`{name}`" in README, name
        assert f"`{name}`" in METRICS_DOC, name


def test_the_ci_script_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in README


def test_the_configuration_example_loads(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    example = doc.split("## Full example", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    path = tmp_path / "ccmon.yaml"
    path.write_text(example)
    cfg = load_metrics_config(path)
    assert cfg.queue("support").sl_formula == "answered_only" and cfg.queue("other").sl_threshold_seconds == 20
    assert [c.name for c in cfg.custom_counters] == ["complaints", "vip_offers", "angry_customer_replies",
                                                    "detractor_surveys"]
    assert [r.name for r in cfg.custom_ratios] == ["complaint_rate", "vip_share"]
    for field in FileModel.model_fields:
        assert f"`{field}`" in doc, field
    for field in QueueModel.model_fields:
        assert f"`{field}`" in doc, field
