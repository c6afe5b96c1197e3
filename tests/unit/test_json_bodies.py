"""The large JSON bodies (``/api/snapshot``, the wallboard stream) are encoded by msgspec, ~8x faster than the json
module. They must hold the values ``json.dumps`` wrote before. The bytes differ only in spelling: msgspec writes
non-ASCII text as UTF-8 where ``json.dumps`` writes ``\\u`` escapes, and a few floats without the exponent's plus
sign (``1e16``, not ``1e+16``); a real snapshot and wallboard payload come out byte for byte the same."""

from __future__ import annotations

import json
import time

import msgspec
from hypothesis import given, settings, strategies as st

from agents.config import MetricsConfig
from agents.oracle import compute
from alerts.config import AlertsConfig
from ccmon.wallboard import build_payload, message
from ccmon.scrape_pool import snapshot_json
from streams.events import Event, event_from_dict
from streams.simulator import SimConfig, generate


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def test_a_snapshot_and_a_wallboard_payload_encode_as_the_json_module_did() -> None:
    sim = SimConfig(seed=5, queues=("sales", "billing"), arrival_rate_per_hour=600, agents_per_queue=5,
                    ticket_rate_per_hour=60)
    start = time.time() - 3600
    events = [ev for ev in (event_from_dict(raw) for raw in generate(sim, start, 3600)) if isinstance(ev, Event)]
    snap = compute(events, MetricsConfig(), int(time.time() * 1000))
    agents = [{"agent_id": "sales-a01", "state": "available", "since": 1_700_000_000_000, "queues": ["sales"]}]
    payload = build_payload(snap, {"stats": {}, "lag": {}}, [], agents, AlertsConfig(), True, time.time())
    for doc in (snap, payload):
        assert msgspec.json.encode(doc) == _compact(doc)
    assert snapshot_json(snap) == _compact(snap)
    assert message(payload) == b"event: snapshot\ndata: " + _compact(payload) + b"\n\n"


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_json_value_encodes_to_the_same_document(value: object) -> None:
    assert json.loads(msgspec.json.encode(value)) == json.loads(_compact(value)) == value
