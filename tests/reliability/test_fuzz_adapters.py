"""Fuzzing the Asterisk queue_log adapter and the webhook mappings (hypothesis).

No line or payload may raise. Every line the Asterisk mapper cannot read says why (``last_problem``),
every event it maps reaches the shared validator and comes out valid or rejected with a reason, and its
saved state (JSON) continues exactly like the live mapper. Every webhook body is parsed or refused with a
ValueError (HTTP 400), every payload maps to events that the ingest path accepts as they are sent, or to
problem sentences. ``CCMON_FUZZ_SCALE`` multiplies the inputs; counts land in ``test-artifacts/fuzz.json``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from ccmon.adapters.asterisk import MAPPED_VERBS, AsteriskMapper
from ccmon.adapters.mapping import Mapping, _parse_template, load_mapping, map_payload, parse_body, parse_path
from streams.events import Rejected, decode_line
from tests.reliability.fuzz_decoder import check_event, check_rejected, counted_inputs, examples

ROOT = Path(__file__).resolve().parents[2]
QUEUE_LOG = (ROOT / "tests" / "data" / "asterisk" / "queue_log").read_text().splitlines()
MAPPINGS = {p.stem: load_mapping(p) for p in sorted((ROOT / "deploy" / "mappings").glob("*.yaml"))}
SAMPLES = {name: [json.loads(p.read_text()) for p in sorted((ROOT / "deploy" / "mappings" / "samples" / name)
                                                           .glob("*.json")) if not p.name.endswith(".expected.json")]
           for name in MAPPINGS}
MALFORMED = {"too_few_fields", "invalid_epoch", "missing_call_id", "missing_queue", "missing_agent"}
# inputs and seconds per test, recorded as "hypothesis_adapters" (the fixtures are found by pytest here)
tried, spent, _record_inputs, _time_test = counted_inputs("hypothesis_adapters")


def validated(event: dict[str, Any]) -> None:
    """An adapter's event goes through the shared validator: valid, or rejected with a known reason."""
    raw = msgspec.json.encode(event)
    item = decode_line(raw)
    if isinstance(item, Rejected):
        check_rejected(item, raw)
    else:
        check_event(item)


# ------------------------------------------------------------------ Asterisk

# Each field mostly plausible (so lines reach deep into the mapper), sometimes hostile.
good_epochs = st.integers(1_795_428_000, 1_795_431_600).map(str)
epochs = st.one_of(good_epochs, good_epochs, st.floats().map(repr),
                   st.sampled_from(["", "nan", "inf", "-inf", "1e308", "1.7976931348623157e+308", "1e305", "0", "-5",
                                    "1795428000000", "946684799", " 1795428000 ", "0x10", "1_795_428_000", "yesterday"]))
good_names = st.sampled_from(["sales", "support", "1795428500.26", "1795428540.28", "PJSIP/1001", "Agent/2001"])
names = st.one_of(good_names, good_names,
                  st.sampled_from(["", "NONE", "MANAGER", "REALTIME", " sales ", "x" * 129, "y" * 300, "😀", "a\tb"]),
                  st.text(max_size=20).filter(lambda s: "|" not in s and "\n" not in s and "\r" not in s))
mapped_verbs = st.sampled_from(sorted(MAPPED_VERBS))
verbs = st.one_of(mapped_verbs, mapped_verbs, mapped_verbs, st.sampled_from(["RINGNOANSWER", "DID", "", " CONNECT "]),
                  st.text(max_size=12))
datas = st.lists(st.text(max_size=12).filter(lambda s: "|" not in s), max_size=5)


@st.composite
def queue_log_line(draw: st.DrawFn) -> str:
    """A queue_log line: well-formed fields with hostile values, a mutated real line, or arbitrary bytes."""
    kind = draw(st.sampled_from(["fields", "real", "bytes"]))
    if kind == "fields":
        parts = [draw(epochs), draw(names), draw(names), draw(names), draw(verbs), *draw(datas)]
        return "|".join(parts[:draw(st.integers(1, len(parts)))] if draw(st.booleans()) else parts)
    if kind == "real":
        parts = draw(st.sampled_from(QUEUE_LOG)).split("|")
        i = draw(st.integers(0, len(parts) - 1))
        parts[i] = draw(st.one_of(epochs, names, verbs))
        return "|".join(parts)
    # What `ccmon ingest asterisk` hands the mapper: any bytes, decoded with errors="replace".
    return draw(st.binary(max_size=200)).decode("utf-8", "replace")


@examples(500)
@given(st.lists(queue_log_line(), min_size=1, max_size=25), st.data())
def test_asterisk_lines_map_to_valid_events_or_say_why(lines: list[str], data: st.DataObject) -> None:
    tried["asterisk_lines"] += len(lines)
    mapper = AsteriskMapper()
    cut = data.draw(st.integers(0, len(lines)), label="restart after line")
    restored = None
    for n, line in enumerate(lines):
        if n == cut:  # a follower restarts here from its saved position file
            restored = AsteriskMapper.from_state(json.loads(json.dumps(mapper.state())))
        events = mapper.map_line(line)
        if restored is not None:
            assert restored.map_line(line) == events, "a restored mapper must continue exactly like the live one"
        if mapper.last_problem is not None:
            reason, detail = mapper.last_problem
            assert events == [] and reason in MALFORMED and detail.strip()
        for event in events:
            validated(event)
    assert sum(mapper.malformed.values()) + sum(mapper.skipped.values()) <= mapper.lines


# ------------------------------------------------------------------ webhooks

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-10**40, max_value=10**40)
                | st.integers(min_value=10**308, max_value=10**400) | st.floats() | st.text(max_size=30)
                | st.sampled_from(["", "NONE", "1795424711875", "1e999", "2026-11-23T09:12:07Z", "x" * 300,
                                   "{\"call_sid\": 5}", "[1, 2", "{\"skills\": null}", "true", "NaN"]))
hostile = st.sampled_from([10**350, -10**350, float("nan"), float("inf"), 2**64, -1, 0, 0.5, "", " ", "x" * 300, None,
                           True, [], {}, [1], {"id": 1}, "1e999", "-1", "NONE", "\x00", "😀" * 100]).map(copy.deepcopy)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=10)


def paths(obj: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path to a value inside a JSON document."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


def read_paths(mapping: Mapping) -> list[tuple]:
    """The payload paths a mapping reads: its conditions, its fields' paths and its templates' paths."""
    found: list[str] = [c.path for c in mapping.match]
    for rule in mapping.rules:
        found += [c.path for c in rule.when]
        for emit in rule.emit:
            for spec in (emit.event_id, *emit.fields.values()):
                found += [spec.path] if spec.path else [t for is_path, t in _parse_template(spec.template or "")
                                                        if is_path]
    return sorted({parse_path(p) for p in found}, key=str)


READ_PATHS = {name: read_paths(m) for name, m in MAPPINGS.items()}


def put(payload: dict, where: tuple, value: Any) -> None:
    """Set ``payload`` at ``where``, making (or replacing) the containers on the way."""
    cur: Any = payload
    for part, nxt in zip(where, where[1:]):
        child = cur[part] if isinstance(cur, dict) and part in cur or (
            isinstance(cur, list) and isinstance(part, int) and part < len(cur)) else None
        if not isinstance(child, (dict, list)) or isinstance(nxt, int) != isinstance(child, list):
            child = [None] * (nxt + 1) if isinstance(nxt, int) else {}
        elif isinstance(child, list) and nxt >= len(child):
            child.extend([None] * (nxt + 1 - len(child)))
        cur[part] = child
        cur = child
    cur[where[-1]] = value


@st.composite
def webhook_payload(draw: st.DrawFn) -> tuple[str, Any]:
    """A recorded sample of a shipped mapping with values it reads (or any values) replaced or removed."""
    name = draw(st.sampled_from(sorted(MAPPINGS)))
    if draw(st.integers(0, 9)) == 0:
        return name, draw(json_values)
    payload = json.loads(json.dumps(draw(st.sampled_from(SAMPLES[name]))))
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            put(payload, draw(st.sampled_from(READ_PATHS[name])), draw(hostile | json_values))
            continue
        where = draw(st.sampled_from(list(paths(payload))[1:] or [()]))
        if not where:
            break
        parent = payload
        for part in where[:-1]:
            parent = parent[part]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[where[-1]]
        else:
            parent[where[-1]] = draw(json_values)
    return name, payload


@examples(600)
@given(webhook_payload(), st.sampled_from(["application/json", "application/x-www-form-urlencoded"]))
def test_webhook_payloads_map_to_accepted_events_or_problems(case: tuple[str, Any], content_type: str) -> None:
    tried["webhook_payloads"] += 1
    name, payload = case
    if content_type == "application/json":
        body = json.dumps(payload, allow_nan=True).encode()  # NaN/Infinity tokens: a sender's non-JSON
    else:  # Twilio's form posts: flat string fields
        flat = payload if isinstance(payload, dict) else {"value": payload}
        body = urlencode({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in flat.items()}).encode()
    try:
        parsed = parse_body(body, content_type)
    except ValueError as exc:
        assert str(exc).strip()  # web.py answers 400 with this sentence
        return
    events, problems = map_payload(MAPPINGS[name], parsed)
    assert all(isinstance(p, str) and p.strip() for p in problems)
    for event in events:
        # Exactly what POST /api/webhooks/<name> hands the ingest validator.
        item = decode_line(json.dumps(event).encode())
        assert not isinstance(item, Rejected), f"{name} produced an event the validator refuses: {item}"
        check_event(item)


@examples(600)
@given(st.binary(max_size=400) | st.sampled_from([b"[" * 5000, b'{"a": NaN}', b'{"a": ' + b"9" * 5000 + b"}"]),
       st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain",
                        "application/vnd.api+json; charset=utf-8", "", "APPLICATION/JSON"]))
def test_webhook_bodies_parse_or_are_refused_with_a_reason(body: bytes, content_type: str) -> None:
    tried["webhook_bodies"] += 1
    try:
        parsed = parse_body(body, content_type)
    except ValueError as exc:
        assert str(exc).strip()
        return
    assert isinstance(parsed, dict)
    for mapping in MAPPINGS.values():
        events, problems = map_payload(mapping, parsed)
        assert all(p.strip() for p in problems)
        for event in events:
            item = decode_line(json.dumps(event).encode())  # as POST /api/webhooks/<name> sends it on
            assert not isinstance(item, Rejected), item
            check_event(item)
