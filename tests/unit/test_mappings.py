"""Webhook mappings: the shipped ones load and turn their recorded samples into exactly the expected events;
the engine's paths, conversions, conditions and error messages behave as docs/mappings.md says."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from agents.config import MetricsConfig
from agents.oracle import replay
from ccmon.adapters.mapping import (
    Condition,
    Emit,
    FieldSpec,
    Mapping,
    MappingError,
    Rule,
    load_mapping,
    load_mappings,
    map_payload,
    parse_body,
    parse_path,
)
from ccmon.errors import ConfigError
from streams.events import Event, decode_line

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "deploy" / "mappings"
SAMPLES = MAPPINGS / "samples"
DOC = (ROOT / "docs" / "mappings.md").read_text()
SHIPPED = sorted(p.stem for p in MAPPINGS.glob("*.yaml"))


def samples(name: str) -> list[Path]:
    return sorted(p for p in (SAMPLES / name).glob("*.json") if not p.name.endswith(".expected.json"))


ALL_SAMPLES = [(name, p) for name in SHIPPED for p in samples(name)]


def expected_of(sample: Path) -> list[dict[str, Any]]:
    return json.loads(sample.with_name(sample.stem + ".expected.json").read_text())


def mapping(text: str) -> Mapping:
    return load_mapping(text if "\n" in text else text + "\n")


# --------------------------------------------------------------- shipped


def test_the_shipped_mappings_are_there() -> None:
    assert {"zendesk", "twilio_taskrouter"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_mapping_loads(name: str) -> None:
    m = load_mapping(MAPPINGS / f"{name}.yaml")
    assert m.name == name and m.rules
    assert samples(name), f"{name} has no samples under {SAMPLES / name}"


def test_the_directory_loads_keyed_by_name() -> None:
    assert sorted(load_mappings(MAPPINGS)) == SHIPPED


@pytest.mark.parametrize("name, sample", ALL_SAMPLES, ids=[f"{n}/{p.stem}" for n, p in ALL_SAMPLES])
def test_every_sample_maps_to_exactly_its_expected_events(name: str, sample: Path) -> None:
    payload = json.loads(sample.read_text())
    before = copy.deepcopy(payload)
    events, problems = map_payload(load_mapping(MAPPINGS / f"{name}.yaml"), payload)
    assert problems == []
    assert events == expected_of(sample)
    assert payload == before, "mapping must not change the payload"
    for event in events:
        decoded = decode_line(json.dumps(event).encode())
        assert isinstance(decoded, Event), decoded
        assert decoded.type == event["type"] and decoded.event_id == event["event_id"]


@pytest.mark.parametrize("name, sample", ALL_SAMPLES, ids=[f"{n}/{p.stem}" for n, p in ALL_SAMPLES])
def test_a_retried_webhook_gives_identical_events(name: str, sample: Path) -> None:
    m = load_mapping(MAPPINGS / f"{name}.yaml")
    first, _ = map_payload(m, json.loads(sample.read_text()))
    again, _ = map_payload(load_mapping(MAPPINGS / f"{name}.yaml"), json.loads(sample.read_text()))
    assert [e["event_id"] for e in first] == [e["event_id"] for e in again]
    assert first == again


@pytest.mark.parametrize("name", SHIPPED)
def test_every_rule_that_emits_is_exercised_by_a_sample(name: str) -> None:
    m = load_mapping(MAPPINGS / f"{name}.yaml")
    used = {next(i for i, r in enumerate(m.rules) if r.matches(json.loads(p.read_text()))) for p in samples(name)}
    unexercised = [r.name for i, r in enumerate(m.rules) if r.emit and i not in used]
    assert unexercised == []


@pytest.mark.parametrize("name", SHIPPED)
def test_each_sample_sequence_is_a_valid_life_for_the_core(name: str) -> None:
    """The samples in order are one realistic history: nothing late, no invalid transition, ids dedupe."""
    m = load_mapping(MAPPINGS / f"{name}.yaml")
    events = [decode_line(json.dumps(e).encode()) for p in samples(name) for e in map_payload(m, json.loads(p.read_text()))[0]]
    _, _, outcome = replay(events, MetricsConfig(), 1)  # type: ignore[arg-type]
    assert (outcome.late, outcome.invalid, outcome.expired) == (0, 0, 0)
    # Twilio: task.wrapup and task.completed both end the talk under one event_id; the second is a duplicate.
    assert outcome.duplicates == (1 if name == "twilio_taskrouter" else 0)


def test_zendesk_ticket_life_in_contract_terms() -> None:
    m = load_mapping(MAPPINGS / "zendesk.yaml")
    events = [e for p in samples("zendesk") for e in map_payload(m, json.loads(p.read_text()))[0]]
    life = [(e["type"], e.get("status") or e.get("author") or e.get("level") or e.get("queue") or "")
            for e in events if e["ticket_id"] == "5158"]
    assert life == [
        ("ticket.created", "support"), ("ticket.replied", "customer"), ("ticket.assigned", ""),
        ("ticket.status_changed", "open"), ("ticket.replied", "agent"), ("ticket.replied", "agent"),
        ("ticket.status_changed", "pending"), ("ticket.escalated", "urgent"), ("ticket.assigned", "billing"),
        ("ticket.status_changed", "solved"), ("ticket.reopened", ""), ("ticket.status_changed", "open"),
        ("ticket.status_changed", "on_hold"), ("ticket.status_changed", "solved"), ("ticket.status_changed", "closed"),
    ]
    internal = next(e for e in events if e["event_id"] == "zd:e1a0b2c3-d4e5-4f60-8a1b-2c3d4e5f6a72")
    assert internal["public"] is False and internal["author"] == "agent"


def test_twilio_form_body_maps_like_the_parsed_sample() -> None:
    """TaskRouter posts form fields: the body parsed by parse_body maps exactly like the JSON sample."""
    m = load_mapping(MAPPINGS / "twilio_taskrouter.yaml")
    for sample in samples("twilio_taskrouter"):
        fields = json.loads(sample.read_text())
        body = urlencode(fields).encode()
        payload = parse_body(body, "application/x-www-form-urlencoded; charset=utf-8")
        assert payload == fields
        assert map_payload(m, payload) == (expected_of(sample), [])


def test_a_payload_of_another_product_is_refused_by_match() -> None:
    twilio = json.loads(samples("twilio_taskrouter")[0].read_text())
    events, problems = map_payload(load_mapping(MAPPINGS / "zendesk.yaml"), twilio)
    assert events == []
    assert problems == ["zendesk: this payload is not a zendesk webhook (`match` needs zendesk_event_version exists; "
                        "detail.id exists)"]


def test_an_unknown_zendesk_event_type_says_which_type() -> None:
    payload = json.loads(samples("zendesk")[0].read_text())
    payload["type"] = "zen:event-type:ticket.brand_new_thing"
    events, problems = map_payload(load_mapping(MAPPINGS / "zendesk.yaml"), payload)
    assert events == []
    assert len(problems) == 1
    assert "no rule matched" in problems[0] and "type = 'zen:event-type:ticket.brand_new_thing'" in problems[0]


# ------------------------------------------------------------ the engine


BASE = """
name: demo
rules:
  - name: created
    when: {path: kind, equals: created}
    emit:
      - type: ticket.created
        event_id: {template: "demo:{ticket.id}:created"}
        fields:
          ticket_id: {path: ticket.id, as: string}
          ts: ticket.at
          queue: {path: ticket.group, default: support}
          channel: {path: ticket.via, map: {web: web, Email: email, true: phone}, default: other}
          priority: {path: ticket.priority, map: {p1: urgent, p2: high}, optional: true}
          customer_id: {path: "people[0].id", as: string, optional: true}
        constants: {source: demo, tags: [imported]}
"""

TICKET = {"kind": "created", "ticket": {"id": 42, "at": "2026-11-23T10:00:00Z", "via": "web"}}


def run(payload: dict[str, Any], text: str = BASE) -> tuple[list[dict[str, Any]], list[str]]:
    return map_payload(mapping(text), payload)


def with_ticket(**over: Any) -> dict[str, Any]:
    return {"kind": "created", "ticket": {**TICKET["ticket"], **over}}


def test_fields_defaults_constants_and_id_template() -> None:
    (event,), problems = run(TICKET)
    assert problems == []
    assert event == {"event_id": "demo:42:created", "type": "ticket.created", "ticket_id": "42",
                     "ts": "2026-11-23T10:00:00Z", "queue": "support", "channel": "web", "source": "demo",
                     "tags": ["imported"]}


def test_missing_path_with_default_without_default_and_optional() -> None:
    assert run(with_ticket(group="vip"))[0][0]["queue"] == "vip"
    assert run(with_ticket(group=None))[0][0]["queue"] == "support"  # null is missing
    assert "priority" not in run(TICKET)[0][0]  # optional and missing: left out
    events, problems = run({"kind": "created", "ticket": {"id": 42, "via": "web"}})
    assert events == []
    assert problems == ["demo: rule 1 (created): ticket.created: `ts`: `ticket.at` is missing, and there is no `default`"]


def test_a_missing_intermediate_object_is_named() -> None:
    _, problems = run({"kind": "created"})
    assert "demo: rule 1 (created): ticket.created: `ticket_id`: `ticket` is missing, and there is no `default`" in problems
    _, problems = run({"kind": "created", "ticket": "plain text"})
    assert any("`ticket_id`: `ticket` is not an object, so `ticket.id` cannot be read" in p for p in problems)


def test_index_paths() -> None:
    payload = {**with_ticket(), "people": [{"id": 7}, {"id": 8}]}
    assert run(payload)[0][0]["customer_id"] == "7"
    assert "customer_id" not in run({**with_ticket(), "people": []})[0][0]  # out of range: missing, optional
    spec = FieldSpec(path="people[1].id")
    assert spec.value({"people": [{"id": 7}]}) == (None, "`people` has 1 item(s), so `people[1]` is missing, and there is no `default`")
    assert spec.value({"people": {"id": 7}})[1] == "`people` is not a list, so `people[1].id` cannot be read, and there is no `default`"
    assert FieldSpec(path="a[0][1]").value({"a": [[1, 2]]}) == (2, None)


def test_a_path_goes_into_json_text() -> None:
    payload = {"WorkerAttributes": json.dumps({"skills": ["support"], "routing": {"levels": [3]}})}
    assert FieldSpec(path="WorkerAttributes.skills").value(payload) == (["support"], None)
    assert FieldSpec(path="WorkerAttributes.routing.levels[0]").value(payload) == (3, None)
    assert "is text that is not valid JSON" in FieldSpec(path="a.b").value({"a": "{broken"})[1]  # type: ignore[operator]


@pytest.mark.parametrize(
    "raw, kind, value",
    [
        (5158, "string", "5158"), (5158.0, "string", "5158"), (True, "string", "true"), ("x", "string", "x"),
        ("42", "int", 42), (" 42 ", "int", 42), (42.0, "int", 42), ("1.5", "float", 1.5), (3, "float", 3.0),
        ("yes", "bool", True), ("0", "bool", False), ("TRUE", "bool", True), (False, "bool", False),
        ("1795424711875", "epoch_ms", 1795424711.875), (1795424711000, "epoch_ms", 1795424711.0),
    ],
)
def test_conversions(raw: Any, kind: str, value: Any) -> None:
    got, problem = FieldSpec.model_validate({"path": "v", "as": kind}).value({"v": raw})
    assert problem is None and got == value and type(got) is type(value)


@pytest.mark.parametrize(
    "raw, kind, message",
    [
        ("abc", "int", "'abc' is not a whole number"),
        (1.5, "int", "1.5 is not a whole number"),
        (True, "int", "True is a boolean, not a number"),
        ("maybe", "bool", "'maybe' is not a boolean (true/false, 1/0, yes/no)"),
        ("nan", "float", "'nan' is not a finite number"),
        ("soon", "epoch_ms", "'soon' is not a number"),
        ({"a": 1}, "string", "is an object, not a single value"),
        ([1], "int", "is a list, not a single value"),
    ],
)
def test_conversion_errors_are_clear(raw: Any, kind: str, message: str) -> None:
    got, problem = FieldSpec.model_validate({"path": "v", "as": kind}).value({"v": raw})
    assert got is None and problem == f"`v` cannot be read as {kind}: {message}"


def test_a_conversion_error_drops_only_that_event() -> None:
    text = """
name: two
rules:
  - emit:
      - type: kpi.sample
        event_id: {template: "k:{id}:a"}
        fields: {ts: at, name: {path: metric}, value: {path: good, as: float}}
      - type: kpi.sample
        event_id: {template: "k:{id}:b"}
        fields: {ts: at, name: {path: metric}, value: {path: bad, as: float}}
"""
    events, problems = run({"id": 1, "at": 1795424400, "metric": "churn", "good": "0.03", "bad": "n/a"}, text)
    assert [e["event_id"] for e in events] == ["k:1:a"]
    assert problems == ["two: rule 1: kpi.sample: `value`: `bad` cannot be read as float: 'n/a' is not a number"]


def test_map_matches_as_text_ignoring_case_then_default() -> None:
    assert run(with_ticket(via="EMAIL"))[0][0]["channel"] == "email"
    assert run(with_ticket(via=True))[0][0]["channel"] == "phone"  # YAML `true:` key matches JSON true
    assert run(with_ticket(via="fax"))[0][0]["channel"] == "other"
    assert run(with_ticket(priority="P1"))[0][0]["priority"] == "urgent"
    spec = FieldSpec.model_validate({"path": "s", "map": {"a": 1, "b": 2}})
    assert spec.value({"s": "c"}) == (None, "`s` is 'c', which `map` does not list (it lists a, b), and there is no `default`")


def test_templates() -> None:
    spec = FieldSpec(template="{{literal}}:{a.b}:{c[0]}")
    assert spec.value({"a": {"b": 1}, "c": [True]}) == ("{literal}:1:true", None)
    assert spec.value({"a": {"b": 1}}) == (None, "template '{{literal}}:{a.b}:{c[0]}': `c` is missing, and there is no `default`")


@pytest.mark.parametrize(
    "condition, payload, holds",
    [
        ({"equals": 1}, {"v": "1"}, True),
        ({"equals": "1"}, {"v": 1}, True),
        ({"equals": True}, {"v": "true"}, True),
        ({"equals": "open"}, {"v": "OPEN"}, True),
        ({"equals": "open"}, {}, False),
        ({"equals": "open"}, {"v": None}, False),
        ({"not_equals": "open"}, {}, True),
        ({"not_equals": "open"}, {"v": "open"}, False),
        ({"in": ["a", "b"]}, {"v": "B"}, True),
        ({"in": ["a", "b"]}, {}, False),
        ({"not_in": ["a", "b"]}, {}, True),
        ({"not_in": ["a", "b"]}, {"v": "c"}, True),
        ({"not_in": ["a", "b"]}, {"v": "a"}, False),
        ({"exists": True}, {"v": ""}, True),
        ({"exists": True}, {"v": None}, False),
        ({"exists": False}, {}, True),
    ],
)
def test_conditions(condition: dict[str, Any], payload: dict[str, Any], holds: bool) -> None:
    assert Condition.model_validate({"path": "v", **condition}).holds(payload) is holds


def test_first_matching_rule_wins_and_empty_emit_ignores() -> None:
    text = BASE + """
  - name: noise
    when: {path: kind, in: [viewed, tagged]}
    emit: []
  - name: never reached for created
    when: {path: ticket.id, exists: true}
    emit: []
"""
    assert len(run(TICKET, text)[0]) == 1
    assert run({"kind": "tagged"}, text) == ([], [])


def test_no_rule_matched_says_what_the_payload_was() -> None:
    events, problems = run({"kind": "merged", "ticket": {"id": 1}})
    assert events == []
    assert problems == ["demo: no rule matched this payload (kind = 'merged'); add a rule for it, "
                        "or a rule with `emit: []` to ignore it on purpose"]
    assert run({})[1] == ["demo: no rule matched this payload (kind is missing); add a rule for it, "
                          "or a rule with `emit: []` to ignore it on purpose"]


def test_a_payload_that_is_not_an_object() -> None:
    assert run([1, 2])[1] == ["demo: the payload must be a JSON object or form fields, not list"]  # type: ignore[arg-type]


def test_an_event_the_contract_refuses_is_a_problem_not_an_event() -> None:
    text = """
name: surveys
rules:
  - emit:
      - type: survey.response
        event_id: {template: "s:{id}"}
        fields: {survey_id: {path: id, as: string}, ts: at, score: {path: score, as: int}}
        constants: {kind: csat, queue: support}
"""
    events, problems = run({"id": 9, "at": "2026-11-23T10:00:00Z", "score": "9"}, text)
    assert events == []
    assert problems == ["surveys: rule 1: survey.response: the event is not valid contract v1 (out_of_range): "
                        "score 9 is out of range for csat (1-5)"]
    events, problems = run({"id": 9, "at": "2026-11-23T10:00:00", "score": "4"}, text)
    assert events == [] and "(invalid_ts)" in problems[0]


@pytest.mark.parametrize(
    "text, error",
    [
        ("a.b", ("a", "b")),
        ("data.items[0].id", ("data", "items", 0, "id")),
        ("a[0][12]", ("a", 0, 12)),
        ("Task Attributes.x", ("Task Attributes", "x")),
    ],
)
def test_parse_path(text: str, error: tuple[Any, ...]) -> None:
    assert parse_path(text) == error


@pytest.mark.parametrize("text", ["", "a..b", ".a", "a.", "[0]", "a[x]", "a[0]b", "a[-1]", "a]"])
def test_bad_paths_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid path"):
        parse_path(text)


# ------------------------------------------------------ malformed mappings


def broken(emit: str = "", rule: str = "", top: str = "") -> str:
    return f"""name: demo
{top}rules:
  - when: {{path: kind, equals: x}}
{rule}    emit:
      - type: ticket.reopened
        event_id: {{template: "d:{{id}}"}}
        fields: {{ticket_id: id, ts: at}}
{emit}"""


@pytest.mark.parametrize(
    "text, message",
    [
        (broken(emit="        colour: blue\n"),
         "mapping:5: rules[0].emit[0]: unknown key(s) colour; allowed here: type, event_id, fields, constants"),
        (broken().replace("ticket.reopened", "ticket.vanished"),
         "mapping:5: rules[0].emit[0]: unknown event type 'ticket.vanished'; use one of call.offered,"),
        (broken().replace("ticket_id: id, ", ""),
         "mapping:5: rules[0].emit[0]: ticket.reopened needs `ticket_id`; add it under fields or constants"),
        (broken(emit="        constants: {queue: support}\n"),
         "mapping:5: rules[0].emit[0]: ticket.reopened has no field `queue`; its fields are ticket_id, ts, source, "
         "tags, attributes"),
        (broken(emit="        constants: {ticket_id: x}\n"),
         "mapping:5: rules[0].emit[0]: `ticket_id` is under both fields and constants"),
        (broken().replace("ts: at", "ts: {path: at, optional: true}"),
         "mapping:5: rules[0].emit[0]: `ts` is required by ticket.reopened, so it cannot be optional"),
        (broken().replace("ts: at}", "at: at}") + "        constants: {ts: 1}\n",
         "`ts` must come from the payload (under fields), not constants"),
        (broken().replace('{template: "d:{id}"}', '"d:{id}"'),
         "mapping:6: rules[0].emit[0].event_id: write `event_id: {template: \"...\"}` (or `{path: ...}`) so the id "
         "is stable per source event; a retried webhook must produce the same id"),
        (broken().replace('{template: "d:{id}"}', '{template: "fixed"}'),
         "mapping:6: rules[0].emit[0].event_id.template: template 'fixed' has no {path}; use `constants` for a "
         "fixed value"),
        (broken().replace('{template: "d:{id}"}', '{template: "d:{id"}'),
         "template 'd:{id': unmatched '{' (write {{ or }} for a brace)"),
        (broken().replace("ticket_id: id", "ticket_id: {path: id, template: 'x{id}'}"),
         "mapping:7: rules[0].emit[0].fields.ticket_id: give exactly one of `path` or `template`"),
        (broken().replace("ticket_id: id", "ticket_id: {as: string}"),
         "rules[0].emit[0].fields.ticket_id: give exactly one of `path` or `template`"),
        (broken().replace("ticket_id: id", "ticket_id: {path: id, as: text}"),
         "rules[0].emit[0].fields.ticket_id.as: Input should be 'string', 'int', 'float', 'bool' or 'epoch_ms'"),
        (broken().replace("ticket_id: id", "ticket_id: {path: id, map: {a: x, A: y}}"),
         "map key 'A' is listed twice (keys ignore case)"),
        (broken().replace("ticket_id: id", "ticket_id: 'items[x]'"),
         "mapping:7: rules[0].emit[0].fields.ticket_id.path: invalid path 'items[x]': unexpected '[' at position 6"),
        (broken().replace("{path: kind, equals: x}", "{path: kind, equals: x, in: [y]}"),
         "mapping:3: rules[0].when[0]: a condition needs exactly one of equals, not_equals, in, not_in, exists "
         "(got equals, in)"),
        (broken().replace("{path: kind, equals: x}", "{path: kind}"),
         "(got none)"),
        (broken().replace("{path: kind, equals: x}", "{path: kind, is: x}"),
         "mapping:3: rules[0].when[0]: unknown key(s) is; allowed here: path, equals, not_equals, in, not_in, exists"),
        (broken(top="match: {path: 'a..b', exists: true}\n"),
         "mapping:2: match[0].path: invalid path 'a..b': expected a key at position 3"),
        (broken().replace("name: demo", "name: Demo Hooks"),
         "mapping:1: name: String should match pattern"),
        ("name: demo\nrules: []\n", "mapping:2: rules: List should have at least 1 item"),
        ("name: demo\n", "mapping:1: rules: Field required"),
        ("name: demo\nrules:\n  - when: {path: a, equals: b}\n", "mapping:3: rules[0].emit: Field required"),
        ("- just\n- a list\n", "mapping: a mapping file is a YAML object with `name` and `rules`"),
        ("name: demo\nrules: [\n", "mapping:3: not valid YAML"),
    ],
)
def test_malformed_mappings_say_where_and_what(text: str, message: str) -> None:
    with pytest.raises(MappingError) as info:
        load_mapping(text if "\n" in text else text + "\n")
    assert isinstance(info.value, ConfigError)
    assert any(message in p for p in info.value.problems), info.value.problems


def test_a_mapping_file_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read the mapping file"):
        load_mapping(tmp_path / "nope.yaml")
    with pytest.raises(MappingError, match="cannot read the mapping file"):
        load_mapping(str(tmp_path / "nope.yaml"))


def test_a_directory_whose_file_and_name_disagree(tmp_path: Path) -> None:
    (tmp_path / "helpdesk.yaml").write_text(BASE)
    (tmp_path / "broken.yml").write_text("name: broken\n")
    (tmp_path / "notes.txt").write_text("not a mapping")
    with pytest.raises(MappingError) as info:
        load_mappings(tmp_path)
    assert info.value.problems == [
        f"{tmp_path / 'broken.yml'}:1: rules: Field required",
        f"{tmp_path / 'helpdesk.yaml'}: name 'demo' must equal the file name 'helpdesk'",
    ]
    with pytest.raises(MappingError, match="does not exist"):
        load_mappings(tmp_path / "missing")


def test_models_are_usable_from_python() -> None:
    rule = Rule(when=[Condition(path="t", equals="x")],
                emit=[Emit(type="ticket.reopened", event_id=FieldSpec(template="r:{id}"),
                           fields={"ticket_id": FieldSpec(path="id", as_="string"), "ts": FieldSpec(path="at")})])
    m = Mapping(name="py", rules=[rule])
    assert map_payload(m, {"t": "x", "id": 3, "at": 1795424400}) == (
        [{"event_id": "r:3", "type": "ticket.reopened", "ticket_id": "3", "ts": 1795424400}], [])


# ------------------------------------------------------------- HTTP bodies


def test_parse_body() -> None:
    assert parse_body(b'{"a": 1}', "application/json") == {"a": 1}
    assert parse_body(b'{"a": 1}', None) == {"a": 1}
    assert parse_body(b'{"a": 1}', "application/vnd.api+json; charset=utf-8") == {"a": 1}
    assert parse_body(b"EventType=task.created&TaskAge=0&Empty=", "application/x-www-form-urlencoded") == {
        "EventType": "task.created", "TaskAge": "0", "Empty": ""}
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_body(b"{nope", "application/json")
    with pytest.raises(ValueError, match="must be an object"):
        parse_body(b"[1]", "application/json")
    with pytest.raises(ValueError, match="unsupported content type 'text/plain'"):
        parse_body(b"hi", "text/plain")
    with pytest.raises(ValueError, match="not UTF-8"):
        parse_body(b"\xff", "application/json")


# -------------------------------------------------------------------- docs


def test_the_doc_covers_every_key_and_shipped_mapping() -> None:
    for model in (Mapping, Rule, Condition, Emit, FieldSpec):
        for name, info in model.model_fields.items():
            assert f"`{info.alias or name}`" in DOC, (model.__name__, name)
    for name in SHIPPED:
        assert f"deploy/mappings/{name}.yaml" in DOC, name
        for rule in load_mapping(MAPPINGS / f"{name}.yaml").rules:
            if rule.emit:
                assert rule.name and rule.name in DOC, (name, rule.name)
    assert "POST /api/webhooks/<name>" in DOC and "configured mappings directory" in DOC
