"""The README and docs stay true: every setting, command and event type is documented."""

from __future__ import annotations

from pathlib import Path

from ccmon.cli import app
from ccmon.exposition import SnapshotCollector
from ccmon.settings import Settings
from streams.events import EVENT_TYPES

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
EVENTS_DOC = (ROOT / "docs" / "events.md").read_text()


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
    snapshot = {"queues": {"q": {"now": {"calls_waiting": 1}, "15m": {
        "offered": 1, "answered": 1, "answered_in_sl": 1, "abandoned": 0, "short_abandoned": 0, "timed_out": 0,
        "blocked": 0, "asa_seconds": 1.0, "service_level": 1.0}}}}
    status = {"stats": {"applied:calls": 1, "duplicates:calls": 1, "rejected:invalid_json": 1, "last_commit_ms": 1},
              "lag": {"cc.calls:0": 0}}
    for family in SnapshotCollector(snapshot, status).collect():
        name = family.name + ("_total" if family.type == "counter" else "_info" if family.type == "info" else "")
        assert f"`{name}`" in README, name


def test_the_ci_script_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in README
