"""Coverage-guided fuzzing (atheris / libFuzzer) of the event decoder and the HTTP ingest validator.

Run as a script for a long local session (the CI test runs it as a subprocess with fewer runs)::

    .venv/bin/python tests/reliability/fuzz_decoder.py -runs=1000000

Every input goes through ``decode_message``, ``decode_line`` and ``ccmon.ingest.validate`` (JSON and
NDJSON bodies), and ``check_message`` / ``check_body`` fail the run on any exception other than an
assertion they make themselves: no input may crash the decoder, every rejection carries a known reason
and a sentence, and every accepted event satisfies the contract and round-trips. libFuzzer starts from a
corpus of valid events (all event types, single and batched, ``ts`` as epoch seconds and RFC 3339) and a
dictionary of the contract's tokens, and prints ``Done N runs in S second(s)`` at the end.

The same checks back the hypothesis tests in ``test_fuzz_decoder.py``; ``record`` merges the number of
inputs each fuzzer tried into ``test-artifacts/fuzz.json``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

ARTIFACT = REPO / "test-artifacts" / "fuzz.json"

#: Reject codes the shared decoder gives (docs/events.md), plus ``line_too_long`` from HTTP ingest.
DECODER_REASONS = frozenset({"invalid_json", "not_an_object", "missing_field", "unknown_type", "invalid_ts",
                             "invalid_field", "out_of_range", "too_large", "too_deep"})
INGEST_REASONS = DECODER_REASONS | {"line_too_long"}

T0 = 1_795_428_000  # 2026-11-23T10:00:00Z


def scale() -> float:
    """``CCMON_FUZZ_SCALE``: multiplies every fuzzer's number of inputs (1, the CI size, by default; 10 under
    ``CCMON_RELIABILITY_SCALE=full``, which gives the atheris harness the issue's 1,000,000 inputs)."""
    default = "10" if os.environ.get("CCMON_RELIABILITY_SCALE") == "full" else "1"
    text = os.environ.get("CCMON_FUZZ_SCALE", default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"CCMON_FUZZ_SCALE={text!r}: give a positive number (1 is the CI size, 10 the issue's)")
    return value



def examples(n: int) -> Any:
    """Hypothesis settings for ``n`` CI-size examples, times CCMON_FUZZ_SCALE (shared by the fuzz tests)."""
    from hypothesis import HealthCheck, settings

    return settings(max_examples=max(1, int(n * scale())), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

def seed_events() -> list[dict[str, Any]]:
    """Valid contract events: every type with its optional fields, then an hour of simulated traffic."""
    from streams.simulator import SimConfig, generate

    base = {"ts": T0, "source": "fuzz", "tags": ["vip"], "attributes": {"k": "v", "n": 1, "x": 1.5, "b": True}}
    call = {**base, "call_id": "c1", "queue": "sales"}
    ticket = {**base, "ticket_id": "t1"}
    hand = [
        {**call, "type": "call.offered", "channel": "chat"},
        {**call, "type": "call.blocked", "reason": "queue_full"},
        {**call, "type": "call.answered", "agent_id": "a1"},
        {**call, "type": "call.abandoned"},
        {**call, "type": "call.timed_out"},
        {**call, "type": "call.ended", "hold_seconds": 12.5},
        {**call, "type": "call.wrapup_completed", "agent_id": "a1"},
        {**base, "type": "agent.state", "agent_id": "a1", "state": "away", "queues": ["sales", "support"],
         "reason": "lunch"},
        {**ticket, "type": "ticket.created", "queue": "billing", "channel": "email", "priority": "urgent",
         "customer_id": "cu1"},
        {**ticket, "type": "ticket.replied", "author": "agent", "public": False},
        {**ticket, "type": "ticket.status_changed", "status": "on_hold"},
        {**ticket, "type": "ticket.assigned", "agent_id": "a1", "queue": "sales"},
        {**ticket, "type": "ticket.escalated", "level": 2},
        {**ticket, "type": "ticket.reopened"},
        {**base, "type": "survey.response", "survey_id": "s1", "kind": "nps", "score": 9, "queue": "sales",
         "agent_id": "a1", "ticket_id": "t1", "call_id": "c1"},
        {**base, "type": "kpi.sample", "name": "churn_rate", "value": 0.031, "queue": "sales"},
    ]
    hand = [{"event_id": f"h{i}", **e} for i, e in enumerate(hand)]
    sim = generate(SimConfig(seed=7, ticket_rate_per_hour=120.0), T0, 3600)
    seen: set[str] = set()
    first_of_type = []
    for e in sim:  # a few of each simulated type, not thousands of near-duplicates
        if sum(1 for s in first_of_type if s["type"] == e["type"]) < 3 and len(seen) < 200:
            first_of_type.append(e)
            seen.add(e["event_id"])
    return hand + first_of_type


def rfc3339(ts: float, offset_minutes: int = 0) -> str:
    """``ts`` (epoch seconds, ms precision) as RFC 3339 text with the given UTC offset."""
    tz = timezone(timedelta(minutes=offset_minutes))
    text = datetime.fromtimestamp(ts, tz).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if offset_minutes == 0 else text


def seed_messages() -> list[bytes]:
    """The fuzzers' starting corpus: single events, text timestamps, batches, NDJSON bodies."""
    events = seed_events()
    out = [json.dumps(e).encode() for e in events]
    out += [json.dumps({**e, "ts": rfc3339(e["ts"], 60)}).encode() for e in events[:16]]
    out.append(json.dumps(events[:5]).encode())
    out.append(json.dumps([events[0], {"event_id": "x"}, events[2], 7]).encode())
    out.append(b"\n".join(json.dumps(e).encode() for e in events[16:24]))
    out += [b"[]", b"{}", b" \n"]
    return out


DICTIONARY_TOKENS = sorted({
    *(f'"{t}"' for t in ("event_id", "type", "ts", "source", "tags", "attributes", "call_id", "queue", "agent_id",
                         "ticket_id", "survey_id", "name", "value", "state", "queues", "reason", "channel",
                         "hold_seconds", "priority", "status", "author", "public", "level", "kind", "score")),
    *(f'"{t}"' for t in ("call.offered", "call.blocked", "call.answered", "call.abandoned", "call.timed_out",
                         "call.ended", "call.wrapup_completed", "agent.state", "ticket.created", "ticket.replied",
                         "ticket.status_changed", "ticket.assigned", "ticket.escalated", "ticket.reopened",
                         "survey.response", "kpi.sample", "csat", "nps", "ces", "available", "on_call", "away",
                         "queue_full", "urgent", "solved", "agent", "customer")),
    '"2026-11-23T10:00:00Z"', '"2026-11-23T11:00:00.123+01:00"', "1795428000", "1795428000.5", "1795428000000",
    "1e999", "-0", "null", "true", "false", "{", "}", "[", "]", ":", ",", '"\\u0000"', '"\\ud800"',
})


def check_rejected(item: Any, raw: bytes, reasons: frozenset[str] = DECODER_REASONS) -> None:
    """A rejection names a known reason, says why in a sentence and keeps the input's exact bytes."""
    assert item.reason in reasons, f"unknown reject reason {item.reason!r}: {item.detail}"
    assert isinstance(item.detail, str) and item.detail.strip(), f"reject {item.reason} has no detail"
    assert item.raw == raw, "a rejection must carry the original bytes"


def check_event(ev: Any) -> None:
    """An accepted event satisfies the contract's invariants and survives encode -> decode unchanged."""
    import msgspec

    from streams.events import DOMAINS, EVENT_TYPES, SCORE_RANGES, TS_MAX_S, TS_MIN_S, decode_line, encode_event

    assert type(ev) in EVENT_TYPES.values(), type(ev)
    assert EVENT_TYPES[ev.type] is type(ev) and ev.domain in DOMAINS
    assert isinstance(ev.event_id, str) and 1 <= len(ev.event_id) <= 256
    assert isinstance(ev.entity_id, str) and 1 <= len(ev.entity_id) <= 256
    assert math.isfinite(ev.ts) and TS_MIN_S <= ev.ts < TS_MAX_S
    assert isinstance(ev.ts_ms, int) and abs(ev.ts_ms - ev.ts * 1000) <= 0.5 + 1e-3
    for value in [*msgspec.structs.astuple(ev), *ev.attributes.values()]:
        assert not isinstance(value, float) or math.isfinite(value), f"non-finite number in {ev!r}"
    if ev.type == "survey.response":
        lo, hi = SCORE_RANGES[ev.kind]
        assert lo <= ev.score <= hi
    again = decode_line(encode_event(ev))
    assert again == ev, f"round trip changed the event: {ev!r} -> {again!r}"


def check_message(raw: bytes) -> list[Any]:
    """Decode ``raw`` as a Kafka message and as a JSONL line; every item is a valid event or a reasoned reject."""
    from streams.events import Event, Rejected, decode_line, decode_message, split_message

    items = decode_message(raw)
    parts = split_message(raw)
    # The worker dead-letters item i with split_message(raw)[i]: both must see the same items.
    assert len(items) == len(parts), f"decode_message gave {len(items)} items, split_message {len(parts)}"
    for item, part in zip(items, parts):
        if isinstance(item, Rejected):
            check_rejected(item, part)
        else:
            assert isinstance(item, Event), type(item)
            check_event(item)
    line = decode_line(raw)
    if isinstance(line, Rejected):
        check_rejected(line, raw.strip())
    else:
        check_event(line)
    return items


def check_body(body: bytes, content_type: str, max_line: int = 65_536) -> None:
    """HTTP ingest's split and validation of a body: a result per line, a dead letter (with the input) per reject."""
    from ccmon.ingest import split_body, validate
    from streams.deadletter import decode as decode_dead_letter
    from streams.deadletter import original_bytes

    lines = split_body(body, content_type)
    out = validate(lines, "fuzz", max_line)
    assert len(out.results) == len(lines) and len(out.dead) + out.accepted == len(lines)
    dead = iter(out.dead)
    for n, (line, result) in enumerate(zip(lines, out.results), start=1):
        assert result["line"] == n
        if result["status"] == "rejected":
            assert result["reason"] in INGEST_REASONS and result["detail"].strip(), result
            letter = decode_dead_letter(next(dead))
            assert letter.reason == result["reason"] and letter.line == n
            assert original_bytes(letter) == line, "a dead letter must carry the whole rejected line"
        else:
            assert result["status"] == "accepted" and result["event_id"] and result["type"]


def counted_inputs(name: str, timed: Callable[[str], bool] = lambda test: True) -> tuple[Any, ...]:
    """For a fuzz test module: ``tried`` (inputs per test, counted by the tests), ``spent`` (seconds per test) and
    the two autouse fixtures that time every test and ``record`` the module's totals as ``name`` (the seconds of
    the tests ``timed`` accepts). Unpack all four into module globals so pytest finds the fixtures."""
    import pytest

    tried: Counter[str] = Counter()
    spent: Counter[str] = Counter()

    @pytest.fixture(scope="module", autouse=True)
    def _record_inputs() -> Iterator[None]:
        yield
        if tried:
            seconds = sum(t for test, t in spent.items() if timed(test))
            record(name, sum(tried.values()), seconds, by_test=dict(tried))

    @pytest.fixture(autouse=True)
    def _time_test(request: Any) -> Iterator[None]:
        start = time.monotonic()
        yield
        spent[request.node.name] += time.monotonic() - start

    return tried, spent, _record_inputs, _time_test


def record(name: str, inputs: int, seconds: float, **extra: Any) -> None:
    """Merge a fuzzer's inputs tried into ``test-artifacts/fuzz.json`` (``last`` run and ``largest`` run)."""
    from tests.tools import merge_json

    run = {"inputs": inputs, "seconds": round(seconds, 2), "scale": scale(),
           "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}

    def update(data: dict[str, Any]) -> None:
        entry = data.get(name) if isinstance(data.get(name), dict) else {}
        largest = entry.get("largest") if isinstance(entry.get("largest"), dict) else None
        data[name] = {"last": run, "largest": run if largest is None or inputs >= largest["inputs"] else largest}

    merge_json(ARTIFACT, update)


def _one_input(data: bytes) -> None:
    check_message(data)
    check_body(data, "application/json")
    check_body(data, "application/x-ndjson", max_line=512)  # exercise line_too_long too


def main(argv: list[str]) -> None:
    """libFuzzer's command line (``-runs=N``, ``-seed=S``, corpus directories); seeds a corpus when none is given."""
    import atheris

    with atheris.instrument_imports(include=["streams", "ccmon"]):
        import ccmon.ingest  # noqa: F401 - instrumented for coverage feedback
        import streams.deadletter  # noqa: F401
        import streams.events  # noqa: F401

    args = list(argv)
    work = Path(tempfile.mkdtemp(prefix="ccmon-fuzz-"))
    if not any(not a.startswith("-") for a in args[1:]):
        corpus = work / "corpus"
        corpus.mkdir()
        for i, seed in enumerate(seed_messages()):
            (corpus / f"seed-{i:03d}").write_bytes(seed)
        args.append(str(corpus))
    if not any(a.startswith("-dict=") for a in args):
        words = work / "events.dict"
        words.write_text("".join(f"{json.dumps(t)}\n" for t in DICTIONARY_TOKENS))
        args.insert(1, f"-dict={words}")
    if not any(a.startswith("-max_len=") for a in args):
        args.insert(1, "-max_len=8192")
    if not any(a.startswith("-artifact_prefix=") for a in args):  # a crashing input is kept here, not in the cwd
        args.insert(1, f"-artifact_prefix={work}/")
    print(f"fuzzing the decoder from {args[-1]}; a crashing input would be written under {work}", file=sys.stderr)
    atheris.Setup(args, _one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
