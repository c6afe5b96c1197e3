"""Bad input reaches the dead-letter topic with its reason, is counted, and the worker keeps running."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams import deadletter
from streams.partitioning import partition_for
from tests.integration.conftest import Env, wait_for

pytestmark = pytest.mark.integration
NOW = time.time()


def offered(eid: str, cid: str, **over: object) -> dict:
    """A valid call.offered event."""
    return {"event_id": eid, "type": "call.offered", "ts": NOW - 60, "call_id": cid, "queue": "q1", **over}


def read_dead_letters(env: Env, n: int, timeout: float = 30) -> list[deadletter.DeadLetter]:
    """Every record on the test's dead-letter topic (an assign-mode consumer: no group needed)."""
    consumer = KafkaConsumer(bootstrap_servers=env.services.kafka_bootstrap, enable_auto_commit=False)
    topic = env.settings.deadletter_topic
    tps = [TopicPartition(topic, p) for p in range(env.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    found: list[deadletter.DeadLetter] = []
    deadline = time.monotonic() + timeout
    while len(found) < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            found += [deadletter.decode(r.value) for r in records]
    consumer.close()
    assert len(found) == n, f"expected {n} dead letters, found {len(found)}: {found}"
    return found


def test_worker_dead_letters_every_bad_message_and_keeps_running(env: Env) -> None:
    worker, base = env.start_worker()
    producer = KafkaProducer(bootstrap_servers=env.services.kafka_bootstrap)
    calls, surveys = env.settings.topic("calls"), env.settings.topic("surveys")
    # a call id that does NOT live on partition 0, sent to partition 0 on purpose
    stray = next(f"stray{i}" for i in range(100) if partition_for(f"stray{i}", env.partitions) != 0)
    bad: list[tuple[str, bytes | None, str, dict]] = [
        (calls, b"{not json", "invalid_json", {}),
        (calls, json.dumps({"event_id": "m1", "type": "call.offered", "ts": NOW, "call_id": "c"}).encode(), "missing_field", {}),
        (calls, json.dumps(offered("u1", "c", type="call.teleported")).encode(), "unknown_type", {}),
        (calls, json.dumps(offered("t1", "c", ts="yesterday at noon")).encode(), "invalid_ts", {}),
        (calls, json.dumps(offered("t2", "c", ts="2026-11-23T10:00:00")).encode(), "invalid_ts", {}),  # no offset
        (surveys, json.dumps({"event_id": "s1", "type": "survey.response", "ts": NOW, "survey_id": "s1",
                              "kind": "nps", "score": 11, "queue": "q1"}).encode(), "out_of_range", {}),
        (calls, json.dumps({"event_id": "k1", "type": "ticket.reopened", "ts": NOW, "ticket_id": "t"}).encode(),
         "wrong_topic", {}),
        (calls, json.dumps(offered("p1", stray)).encode(), "wrong_partition", {"partition": 0}),
        (calls, None, "empty_message", {"key": b"tombstone"}),
        (calls, b"\xff\xfe\x00garbage", "invalid_json", {}),
    ]
    for topic, value, _reason, kw in bad:
        producer.send(topic, value, **kw).get(10)
    # a batch message with one good and one bad event: only the bad one is rejected
    good = offered("g1", "good-call")
    part = partition_for("good-call", env.partitions)
    bad_item = {"event_id": "g2", "type": "call.offered", "ts": NOW, "queue": "q1", "call_id": 7}
    producer.send(calls, json.dumps([good, bad_item]).encode(), partition=part).get(10)
    producer.send(calls, json.dumps(offered("g3", "after-call")).encode(), key=b"after-call").get(10)
    producer.close()

    expected_rejects = len(bad) + 1
    wait_for(lambda: env.stats().get("applied:calls", 0) >= 2, 60, "the valid events after the bad ones")
    wait_for(lambda: sum(v for k, v in env.stats().items() if k.startswith("rejected:")) >= expected_rejects,
             30, "every reject to be counted")
    assert worker.poll() is None, "the worker died on bad input"

    letters = read_dead_letters(env, expected_rejects)
    by_original = {deadletter.original_bytes(d): d for d in letters}
    for topic, value, reason, _ in bad:
        d = by_original[value or b""]
        assert d.reason == reason, (value, d)
        assert d.detail and d.stage == "worker"
        assert d.source_topic == topic and d.partition is not None and d.offset is not None
    batch_reject = by_original[json.dumps(bad_item).encode()]
    assert batch_reject.reason == "invalid_field" and batch_reject.index == 1
    assert "call_id" in batch_reject.detail

    stats = env.stats()
    assert stats["rejected:invalid_json"] == 2
    assert stats["rejected:invalid_ts"] == 2
    assert stats["rejected:wrong_partition"] == 1
    assert stats["applied:calls"] == 2
    snap = json.loads(env.ccmon("metrics", "--json").stdout)
    assert snap["queues"]["q1"]["15m"]["offered"] == 2
    # the rejects are also visible to Prometheus
    import urllib.request

    body = urllib.request.urlopen(base + "/metrics").read().decode()
    assert 'ccmon_events_rejected_total{reason="wrong_partition"} 1.0' in body


def test_late_and_impossible_events_are_dead_lettered(env: Env, tmp_path: Path) -> None:
    lines = [
        offered("o1", "late-test"),
        {"event_id": "a1", "type": "call.answered", "ts": NOW - 50, "call_id": "late-test", "queue": "q1",
         "agent_id": "x"},
        {"event_id": "b1", "type": "call.abandoned", "ts": NOW - 49, "call_id": "late-test", "queue": "q1"},
        offered("o2", "late-test-2", ts=NOW),
        offered("o3", "late-test-3", ts=NOW - 3600),  # an hour behind the stream: late
        offered("o4", "skewed-clock", ts=time.time() + 3600),  # an hour ahead of the clock: refused, not counted
    ]
    env.partitions = 1  # one partition, so one stream time decides lateness for all three calls
    path = tmp_path / "e.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    env.start_worker()
    assert env.ccmon("send", str(path)).returncode == 0
    env.wait_consumed(len(lines))
    letters = read_dead_letters(env, 3)
    assert sorted(d.reason for d in letters) == ["future_ts", "invalid_transition", "late"]
    by_reason = {d.reason: d for d in letters}
    assert json.loads(deadletter.original_bytes(by_reason["future_ts"]))["event_id"] == "o4"
    assert "ahead of this worker's clock" in by_reason["future_ts"].detail
    assert "CCMON_MAX_FUTURE_SECONDS" in by_reason["future_ts"].detail
    assert json.loads(deadletter.original_bytes(by_reason["late"]))["event_id"] == "o3"
    assert json.loads(deadletter.original_bytes(by_reason["invalid_transition"]))["event_id"] == "b1"
    stats = env.stats()
    assert stats["rejected:late"] == 1 and stats["rejected:invalid_transition"] == 1
    assert stats["rejected:future_ts"] == 1
    snap = json.loads(env.ccmon("metrics", "--json").stdout)
    w = snap["queues"]["q1"]["15m"]
    assert (w["offered"], w["answered"], w["abandoned"]) == (2, 1, 0)


def test_send_reports_rejects_and_dead_letters_them(env: Env, tmp_path: Path) -> None:
    lines = [
        json.dumps(offered("a", "c1")),
        "{broken",
        json.dumps({"event_id": "b", "type": "call.offered", "ts": "soon", "call_id": "c2", "queue": "q1"}),
        json.dumps(offered("c", "c3")),
        json.dumps({"event_id": "d", "type": "survey.response", "ts": NOW, "survey_id": "s", "kind": "csat",
                    "score": 0, "queue": "q1"}),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    env.start_worker()
    res = env.ccmon("send", str(path))
    stdout = res.stdout.decode()
    assert res.returncode == 1, stdout
    assert "sent 2 events" in stdout and "rejected 3" in stdout
    for reason in ("invalid_json", "invalid_ts", "out_of_range"):
        assert reason in stdout
    assert "line 2:" in stdout and "line 3:" in stdout and "line 5:" in stdout
    letters = read_dead_letters(env, 3)
    assert sorted((d.line, d.reason, d.stage) for d in letters) == [
        (2, "invalid_json", "send"), (3, "invalid_ts", "send"), (5, "out_of_range", "send"),
    ]
    assert {deadletter.original_bytes(d).decode() for d in letters} == {lines[1], lines[2], lines[4]}
    env.wait_consumed(2)


def test_send_explains_a_missing_file(env: Env) -> None:
    res = env.ccmon("send", "/nonexistent/events.jsonl")
    assert res.returncode == 2
    assert "does not exist" in res.stderr.decode()
