"""The one decoder: valid events in every accepted shape, and a reason for every reject."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import DOMAINS, EVENT_TYPES, CallOffered, Event, Rejected, decode_line, decode_message, split_message

BASE = {"event_id": "e1", "type": "call.offered", "call_id": "c1", "queue": "sales"}


def enc(**over: object) -> bytes:
    return json.dumps({**BASE, "ts": 1795428000, **over}).encode()


@pytest.mark.parametrize(
    "ts, expected_ms",
    [
        ("2026-11-23T10:00:00Z", 1795428000000),
        ("2026-11-23T11:00:00+01:00", 1795428000000),
        ("2026-11-23T10:00:00.1234Z", 1795428000123),
        (1795428000, 1795428000000),
        (1795428000.25, 1795428000250),
    ],
)
def test_timestamps_accepted(ts: object, expected_ms: int) -> None:
    (ev,) = decode_message(enc(ts=ts))
    assert isinstance(ev, CallOffered) and ev.ts_ms == expected_ms


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"{nope", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"42", "not_an_object"),
        (b'"text"', "not_an_object"),
        (json.dumps({"event_id": "e", "type": "call.offered", "ts": 1795428000, "queue": "q"}).encode(), "missing_field"),
        (json.dumps({"event_id": "e", "ts": 1795428000, "call_id": "c"}).encode(), "missing_field"),
        (enc(type="call.teleported"), "unknown_type"),
        (enc(ts="2026-11-23T10:00:00"), "invalid_ts"),
        (enc(ts="yesterday"), "invalid_ts"),
        (enc(ts=True), "invalid_ts"),
        (enc(ts=1795428000000), "invalid_ts"),  # milliseconds sent as seconds
        (enc(ts=None), "invalid_ts"),
        (enc(event_id=""), "invalid_field"),
        (enc(call_id=5), "invalid_field"),
        (enc(type="call.blocked", reason="alien"), "invalid_field"),
        (json.dumps({"event_id": "s", "type": "survey.response", "ts": 1795428000, "survey_id": "s",
                     "kind": "csat", "score": 6, "queue": "q"}).encode(), "out_of_range"),
        (json.dumps({"event_id": "s", "type": "survey.response", "ts": 1795428000, "survey_id": "s",
                     "kind": "nps", "score": -1, "queue": "q"}).encode(), "out_of_range"),
        (enc(pad="x" * 70_000), "too_large"),
        (json.dumps({"event_id": "a", "type": "agent.state", "ts": 1795428000, "agent_id": "a", "state": "away",
                     "queues": [f"q{i}" for i in range(101)]}).encode(), "invalid_field"),  # at most 100 queues
        (enc(queue="q" * 129), "invalid_field"),  # names at most 128 characters
    ],
)
def test_rejects_carry_a_reason_and_the_original_bytes(raw: bytes, reason: str) -> None:
    (item,) = decode_message(raw)
    assert isinstance(item, Rejected), item
    assert item.reason == reason, item.detail
    assert item.detail and item.raw == raw


def test_unknown_fields_are_ignored_and_defaults_apply() -> None:
    (ev,) = decode_message(enc(extra={"deep": [1, 2]}, source="pbx"))
    assert isinstance(ev, CallOffered) and ev.channel == "voice" and ev.source == "pbx"
    assert ev.entity_id == "c1" and ev.domain == "calls" and ev.type == "call.offered"


def test_a_batch_keeps_order_and_rejects_only_its_bad_items() -> None:
    items = [json.loads(enc(event_id="a")), {"event_id": "b"}, json.loads(enc(event_id="c"))]
    raw = json.dumps(items).encode()
    out = decode_message(raw)
    assert [type(x).__name__ for x in out] == ["CallOffered", "Rejected", "CallOffered"]
    assert out[1].reason == "missing_field" and json.loads(out[1].raw) == {"event_id": "b"}  # type: ignore[union-attr]
    assert [json.loads(b) for b in split_message(raw)] == items


def test_every_type_has_a_domain_and_an_entity() -> None:
    for tag, cls in EVENT_TYPES.items():
        assert cls.domain in DOMAINS, tag
        assert cls.entity_field in cls.__struct_fields__, tag


def test_decode_line_strips_whitespace() -> None:
    assert isinstance(decode_line(b"  " + enc() + b"\r\n"), CallOffered)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_no_input_crashes_the_decoder(raw: bytes) -> None:
    for item in decode_message(raw):
        assert isinstance(item, (Event, Rejected))
        if isinstance(item, Rejected):
            assert item.reason and item.detail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=2000, deadline=None)
@given(st.dictionaries(st.sampled_from(["event_id", "type", "ts", "call_id", "queue", "score", "kind"]), json_values)
       | st.builds(lambda d: {**BASE, "ts": 1795428000, **d}, st.dictionaries(st.text(max_size=8), json_values)))
def test_structured_garbage_is_rejected_with_a_reason_or_valid(obj: dict) -> None:
    for item in decode_message(json.dumps(obj).encode()):
        assert isinstance(item, (Event, Rejected))
        if isinstance(item, Rejected):
            assert item.reason in {"invalid_json", "not_an_object", "missing_field", "unknown_type", "invalid_ts",
                                   "invalid_field", "out_of_range", "too_large"}
