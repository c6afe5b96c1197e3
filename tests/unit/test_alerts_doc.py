"""docs/alerts.md stays true to the alert code it documents.

Names are read from the code, never copied: the file models' fields, the
built-in rules, the receiver types, and the notification bodies, which are
regenerated from the documented sample and compared with the page.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from alerts.config import (
    RECEIVER_TYPES,
    AlertsConfig,
    AlertsFileModel,
    OverrideModel,
    Receiver,
    ReceiverModel,
    RuleModel,
    builtin_rules,
    parse,
)
from alerts.engine import AlertState, Notification, evaluate
from ccmon.notify import (
    alertmanager_body,
    email_message,
    generic_body,
    pagerduty_body,
    slack_body,
)

ROOT = Path(__file__).resolve().parents[2]
DOC_PATH = ROOT / "docs" / "alerts.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)
ROUTING_KEY = "<routing key from $PAGERDUTY_ROUTING_KEY>"


@pytest.fixture(scope="module")
def doc() -> str:
    assert DOC_PATH.is_file(), "docs/alerts.md is missing"
    return DOC_PATH.read_text()


def section(doc: str, title: str) -> str:
    """The text under the first heading that contains ``title``, up to the next heading of the same or higher level."""
    lines = doc.splitlines(keepends=True)
    in_code, start, level = False, None, 0
    out: list[str] = []
    for line in lines:
        if line.startswith("```"):
            in_code = not in_code
        heading = None if in_code else re.match(r"^(#+) (.*)", line)
        if start is None:
            if heading and title in heading.group(2):
                start, level = len(out), len(heading.group(1))
            continue
        if heading and len(heading.group(1)) <= level:
            break
        out.append(line)
    assert start is not None, f"docs/alerts.md has no heading containing {title!r}"
    return "".join(out)


def blocks(text: str, lang: str) -> list[str]:
    """The fenced code blocks of one language, in order."""
    return [body for tag, body in FENCE.findall(text) if tag == lang]


def aliases(model: type[BaseModel]) -> list[str]:
    """A model's keys as written in YAML (``for``, ``from``)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def github_slug(heading: str) -> str:
    text = unicodedata.normalize("NFKD", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


# ------------------------------------------------------------- the sample


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


@pytest.fixture(scope="module")
def sample() -> tuple[Notification, Notification]:
    """The documented sample: CcmonServiceLevelBelowTarget in sales, 74% -> 71.2% (fires) -> 83.4% (resolves)."""
    rule = next(r for r in builtin_rules() if r.name == "CcmonServiceLevelBelowTarget")
    state, notes = AlertState(rule.name, "sales"), []
    for at, sl in (("2026-11-23T10:00:00Z", 0.74), ("2026-11-23T10:05:00Z", 0.712), ("2026-11-23T10:17:42Z", 0.834)):
        snap = {"queues": {"sales": {"now": {"sl_target": 0.8}, "15m": {"service_level": sl}}}}
        state, out = evaluate(rule, state, snap, {}, _ms(at))
        notes += out
    assert [n.kind for n in notes] == ["firing", "resolved"]
    return notes[0], notes[1]


# ------------------------------------------------------------------ tests


def test_the_file_format_example_parses(doc: str) -> None:
    example = blocks(section(doc, "File format"), "yaml")
    assert example, "no ```yaml block under the file format section"
    text = example[0]
    names = re.findall(r"^\s*(?:-\s+)?\w+_env:\s*([A-Za-z_][A-Za-z0-9_]*)", text, re.MULTILINE)
    assert names, "the example names no secret variable"
    cfg = parse(text, {n: f"value-of-{n}" for n in names}, "docs/alerts.md")
    assert isinstance(cfg, AlertsConfig)
    assert cfg.rules and cfg.receivers
    assert {r.type for r in cfg.receivers.values()} == set(RECEIVER_TYPES), "the example should show every type"
    user = [r for r in cfg.rules if not r.builtin]
    assert any(isinstance(r.condition.threshold, str) for r in user), "show a metric as threshold"
    assert any(r.guard for r in user) and any(r.change_s for r in user) and any(r.system for r in user)
    # Without the variables, every one is reported by name.
    with pytest.raises(ValueError) as info:
        parse(text, {})
    for n in names:
        assert f"${n}" in str(info.value)


@pytest.mark.parametrize("model", [RuleModel, ReceiverModel, AlertsFileModel, OverrideModel])
def test_every_field_is_documented(doc: str, model: type[BaseModel]) -> None:
    missing = [key for key in aliases(model) if f"`{key}`" not in doc]
    assert not missing, f"{model.__name__}: not in docs/alerts.md: {missing}"


def test_the_yaml_keys_are_the_aliases() -> None:
    assert "for" in aliases(RuleModel) and "for" in aliases(OverrideModel) and "from" in aliases(ReceiverModel)


def test_every_builtin_rule_is_documented(doc: str) -> None:
    builtins = section(doc, "Built-in rules")
    for rule in builtin_rules():
        assert f"`{rule.name}`" in builtins, rule.name


def test_every_receiver_type_is_documented(doc: str) -> None:
    receivers = section(doc, "Receivers")
    for kind in RECEIVER_TYPES:
        assert f"`{kind}`" in doc, kind
        assert f"(`{kind}`)" in receivers, f"no subsection for receiver type {kind}"


def test_the_generic_webhook_body_has_exactly_the_keys_of_generic_body(
        doc: str, sample: tuple[Notification, Notification]) -> None:
    bodies = [json.loads(b) for b in blocks(section(doc, "Generic webhook"), "json")]
    assert bodies, "no JSON example under the generic webhook section"
    keys = list(generic_body(sample[0]))
    for body in bodies:
        assert list(body) == keys
    # And the field table documents each of them.
    rows = [line.split("|")[1] for line in section(doc, "Generic webhook").splitlines() if line.startswith("| `")]
    documented = {name for cell in rows for name in re.findall(r"`(\w+)`", cell)}
    assert set(keys) <= documented, f"not in the field table: {sorted(set(keys) - documented)}"


@pytest.mark.parametrize(("title", "make"), [
    ("Generic webhook", generic_body),
    ("Slack", slack_body),
    ("PagerDuty", lambda n: pagerduty_body(n, ROUTING_KEY)),
    ("Alertmanager", alertmanager_body),
])
def test_the_example_bodies_are_what_the_code_sends(doc: str, sample: tuple[Notification, Notification],
                                                    title: str, make: Any) -> None:
    shown = [json.loads(b) for b in blocks(section(doc, title), "json")]
    assert shown == [make(n) for n in sample]


def test_the_example_emails_are_what_the_code_sends(doc: str, sample: tuple[Notification, Notification]) -> None:
    receiver = Receiver(name="supervisors-mail", type="smtp", host="smtp.example.com", sender="ccmon@example.com",
                        to=("supervisors@example.com",))
    shown = blocks(section(doc, "Email"), "text")
    assert len(shown) == 2
    for text, n in zip(shown, sample):
        msg = email_message(n, receiver)
        head = "".join(f"{h}: {msg[h]}\n" for h in ("Subject", "From", "To"))
        assert text == head + "\n" + msg.get_content()


def test_internal_links_point_at_headings(doc: str) -> None:
    headings = set()
    in_code = False
    for line in doc.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            headings.add(github_slug(line.lstrip("#").strip()))
    targets = re.findall(r"\]\(#([^)]+)\)", doc)
    assert targets
    missing = sorted(set(targets) - headings)
    assert not missing, f"links to missing headings: {missing}"

