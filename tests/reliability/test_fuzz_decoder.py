"""Fuzzing the one event decoder and the HTTP ingest validator: hypothesis here, atheris in a subprocess.

No input may raise; every rejection carries a known reason, a sentence and its exact bytes; every accepted
event satisfies the contract and round-trips; a batch decodes exactly as its items one by one. The checks
live in ``fuzz_decoder.py`` and are shared with the atheris harness. ``CCMON_FUZZ_SCALE`` multiplies the
number of inputs (README, "Development"); the counts land in ``test-artifacts/fuzz.json``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.config import MetricsConfig
from agents.core import CORES, PartitionState, apply_batch, decode_state, encode_state
from streams.events import Event, Rejected, decode_line, split_message
from tests.reliability.fuzz_decoder import (
    T0,
    check_body,
    check_message,
    counted_inputs,
    examples,
    record,
    rfc3339,
    scale,
    seed_events,
    seed_messages,
)

CFG = MetricsConfig()
SEEDS = seed_events()
SEED_BYTES = seed_messages()
# inputs and seconds per test, recorded as "hypothesis_decoder" (atheris records its own run)
tried, spent, _record_inputs, _time_test = counted_inputs("hypothesis_decoder", lambda test: "atheris" not in test)


# ----------------------------------------------------------------- strategies

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
                | st.sampled_from(["", "x" * 256, "x" * 257, "q" * 128, "q" * 129, "\x00", "\u2028", "😀"]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=12)
ts_values = (st.integers(min_value=-2**63, max_value=2**64) | st.floats()
             | st.floats(min_value=T0 - 10**9, max_value=T0 + 10**9)
             | st.builds(lambda ms, off: rfc3339(ms / 1000, off), st.integers(946_684_800_000, 4_102_444_799_999),
                         st.integers(-1439, 1439))
             | st.sampled_from(["2026-11-23T10:00:00", "2026-11-23 10:00:00Z", "yesterday", "", "1795428000",
                                "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59", "2026-02-30T10:00:00Z"]))
extremes = st.sampled_from([0, -0.0, 5e-324, 1e15, 9.3e15, 1e20, 1e300, 1.7976931348623157e308, 2**53 + 1, 2**63 - 1,
                            2**63, 2**64, -2**63 - 1, 10**30, 4_102_444_799.999, 946_684_800])
keys = st.sampled_from(sorted({k for e in SEEDS for k in e} | {"score", "kind", "value", "name"})) | st.text(max_size=8)


@st.composite
def mutated_event(draw: st.DrawFn, seeds: list[dict[str, Any]] = SEEDS) -> dict[str, Any]:
    """A valid event with a few JSON-level mutations: keys removed, replaced, added, ``ts`` and ``type`` changed."""
    event = dict(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["drop", "set", "ts", "type", "deep", "extreme"]))
        if op == "drop" and event:
            event.pop(draw(st.sampled_from(sorted(event))))
        elif op == "set":
            event[draw(keys)] = draw(json_values)
        elif op == "ts":
            event["ts"] = draw(ts_values)
        elif op == "extreme":  # the numbers the core does arithmetic on, at the edges of float and int64
            event[draw(st.sampled_from(["hold_seconds", "score", "value", "level", "ts"]))] = draw(extremes)
        elif op == "type":
            event["type"] = draw(st.sampled_from(sorted({e["type"] for e in SEEDS} | {"kpi.sample", "call.x", ""})))
        else:
            # Arrays nested that deep, spliced in by to_json: shallow, or far past the recursion limit (near the
            # limit, ~900 levels, the outcome depends on how deep the caller's own stack is).
            event[draw(keys)] = f"{DEEP}{draw(st.integers(1, 200) | st.integers(3000, 20000))}"
    return event


DEEP = "\x00deep:"


def to_json(obj: Any) -> bytes:
    """JSON as a sender might write it (NaN/Infinity tokens included, which are not JSON); DEEP markers become
    arrays nested that deep (too deep for Python's own json to build)."""
    text = json.dumps(obj, allow_nan=True)
    text = re.sub(r'"\\u0000deep:(\d+)"', lambda m: "[" * int(m.group(1)) + "]" * int(m.group(1)), text)
    return text.encode()


def strict_json(raw: bytes) -> bool:
    """Whether ``raw`` is RFC 8259 JSON that a decoder can nest into (no NaN tokens, no absurd depth)."""
    try:
        msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


@st.composite
def byte_mutation(draw: st.DrawFn) -> bytes:
    """A seed message with bytes flipped, inserted, deleted or cut off."""
    data = bytearray(draw(st.sampled_from(SEED_BYTES)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b"{", b"[", b'"', b",", b"\\u"]))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            del data[at:]
    return bytes(data)


# ---------------------------------------------------------------------- tests


@examples(1500)
@given(st.binary(max_size=2000) | byte_mutation())
def test_arbitrary_bytes_never_crash_and_every_reject_has_a_reason(raw: bytes) -> None:
    tried["bytes"] += 1
    check_message(raw)
    check_body(raw, "application/json")
    check_body(raw, "application/x-ndjson")


@examples(1500)
@given(mutated_event())
def test_mutated_events_are_valid_or_rejected_with_a_reason(event: dict[str, Any]) -> None:
    tried["mutated"] += 1
    raw = to_json(event)
    check_message(raw)
    check_body(raw, "application/json")


@examples(400)
@given(st.lists(st.sampled_from(SEEDS) | mutated_event(), max_size=12), st.sampled_from(["", " ", "\n\t"]))
def test_a_batch_decodes_exactly_as_its_items_one_by_one(events: list[dict[str, Any]], pad: str) -> None:
    tried["batch"] += 1
    raw = (pad + ("[" + ("," + pad).join(to_json(e).decode() for e in events) + "]") + pad).encode()
    items = check_message(raw)
    if any(isinstance(i, Rejected) and i.raw == raw for i in items):
        # Only an item that is not JSON at all (NaN, nested past the limit) makes the array unsplittable:
        # then the whole message is one reject, carrying every byte to the dead-letter topic.
        assert len(items) == 1 and items[0].reason in ("invalid_json", "too_deep"), items
        assert not all(strict_json(to_json(e)) for e in events), events
        return
    one_by_one = [decode_line(part) for part in split_message(raw)]
    assert len(one_by_one) == len(items)
    for batched, alone in zip(items, one_by_one):
        if isinstance(alone, Rejected):
            assert isinstance(batched, Rejected) and batched.reason == alone.reason, (batched, alone)
        else:
            assert batched == alone


@examples(600)
@given(mutated_event(), st.integers(946_684_800_000, 4_102_444_799_999), st.integers(-1439, 1439))
def test_rfc3339_ts_decodes_exactly_as_the_same_instant_in_epoch_seconds(event: dict[str, Any], ms: int,
                                                                         offset: int) -> None:
    tried["text_ts"] += 1
    as_number = decode_line(to_json({**event, "ts": ms / 1000}))
    as_text = decode_line(to_json({**event, "ts": rfc3339(ms / 1000, offset)}))
    if isinstance(as_number, Rejected):
        assert isinstance(as_text, Rejected), (as_number, as_text)
        # With several defects each path reports the first it meets; a text ts makes the decoder skip the
        # rest of the object once more, where nesting past the limit is met before a bad field after it.
        assert as_text.reason == as_number.reason or "too_deep" in (as_text.reason, as_number.reason)
    else:
        assert isinstance(as_number, Event) and as_text == as_number


def apply_to_core(events: list[Event]) -> None:
    """What the worker does with accepted events: the pure core applies them and their states are stored."""
    for domain in {ev.domain for ev in events}:
        res = apply_batch(CORES[domain], PartitionState(), [ev for ev in events if ev.domain == domain], CFG)
        for state in res.changed.values():
            if state is not None:
                assert decode_state(domain, encode_state(state)) == state


@examples(600)
@given(st.lists(mutated_event() | mutated_event([e for e in SEEDS if e["type"] == "call.ended"]), min_size=1,
                max_size=15))
def test_accepted_events_never_crash_the_core(events: list[dict[str, Any]]) -> None:
    """An event the validator accepts must never crash the worker's core: it would stall its partition."""
    tried["core"] += 1
    accepted = [ev for ev in (decode_line(to_json(e)) for e in events) if isinstance(ev, Event)]
    apply_to_core(accepted)


ATHERIS_RUNS = int(100_000 * scale())


@pytest.mark.timeout(300 + ATHERIS_RUNS // 500)
def test_atheris_decoder_harness(tmp_path: Path) -> None:
    """libFuzzer drives the same checks from the seed corpus; the run must end with no crashing input."""
    runs = ATHERIS_RUNS
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("fuzz_decoder.py")), f"-runs={runs}", "-seed=1",
         "-print_final_stats=1"], cwd=tmp_path, capture_output=True, text=True, timeout=240 + runs / 500,
    )
    seconds = time.monotonic() - start
    done = re.search(r"Done (\d+) runs in (\d+) second", proc.stderr)
    assert proc.returncode == 0 and done, f"atheris found a crash or did not finish:\n{proc.stderr[-4000:]}"
    edges = re.findall(r"cov: (\d+)", proc.stderr)  # coverage counters libFuzzer reached, last report
    record("atheris_decoder", int(done.group(1)), seconds, edges=int(edges[-1]) if edges else None)
    print(f"atheris: {done.group(1)} inputs in {seconds:.1f}s")
    assert int(done.group(1)) == runs
