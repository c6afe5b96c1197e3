"""Poison and oversized messages: dead-lettered with a reason and counted, and their partition never stalls.

tests/integration/test_bad_input.py covers the ordinary rejects (bad JSON, non-UTF-8 bytes, missing fields, wrong
topic or partition, a bad event inside a batch, tombstones) and future timestamps (CCMON_MAX_FUTURE_SECONDS). Here:
messages far over the limits, deep nesting, and a burst of poison between good events on one partition.
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from kafka import KafkaProducer

from streams import deadletter
from streams.partitioning import partition_for
from tests.integration.conftest import Env, wait_for
from tests.integration.test_bad_input import offered, read_dead_letters
from tests.reliability.stack import record

pytestmark = pytest.mark.integration


def test_oversized_and_poison_messages_never_stall_their_partition(env: Env) -> None:
    worker, _ = env.start_worker()
    calls = env.settings.topic("calls")
    part = partition_for("before", env.partitions)
    ids = [c for c in (f"call{i}" for i in range(1000)) if partition_for(c, env.partitions) == part]
    producer = KafkaProducer(bootstrap_servers=env.services.kafka_bootstrap, max_request_size=8 << 20)
    big_event = offered("big", ids[0], agent_note="x" * 200_000)
    poison: list[tuple[bytes, str]] = [
        (b"\x00\xff" * 600_000, "too_large"),  # 1.2 MB of binary garbage: over the 1 MiB default fetch size
        (json.dumps(big_event).encode(), "too_large"),  # one event over MAX_EVENT_BYTES
        (b"[" * 200_000 + b"]" * 200_000, "too_deep"),
        (b'{"event_id": "n", "type": "call.offered", "ts": ' + b"9" * 100_000 + b"}", None),  # a 100k-digit number
        (json.dumps([offered("batch-good", ids[1]), {"event_id": "batch-bad"}, *["junk"] * 3]).encode(), None),
    ]
    good = [offered(f"g{i}", ids[2 + i]) for i in range(20)]
    started = time.monotonic()
    producer.send(calls, json.dumps(good[0]).encode(), partition=part).get(30)
    for value, _reason in poison:
        producer.send(calls, value, partition=part).get(30)
    for ev in good[1:]:
        producer.send(calls, json.dumps(ev).encode(), partition=part).get(30)
    producer.close()

    # Every good event, including those after the poison on the same partition, is applied.
    wait_for(lambda: env.stats().get("applied:calls", 0) >= len(good) + 1, 60, "the good events after the poison")
    through = time.monotonic() - started
    rejected = 1 + 1 + 1 + 1 + 4  # the number, and the batch's 4 bad items
    wait_for(lambda: sum(v for k, v in env.stats().items() if k.startswith("rejected:")) >= rejected, 30,
             "every reject to be counted")
    assert worker.poll() is None, "the worker died on poison"
    letters = read_dead_letters(env, rejected)
    assert all(d.reason and d.detail and d.source_topic == calls and d.partition == part for d in letters)
    by_offset: dict[int, list[deadletter.DeadLetter]] = {}
    for d in letters:
        by_offset.setdefault(d.offset, []).append(d)  # type: ignore[arg-type]
    for offset, (_value, reason) in enumerate(poison, start=1):
        if reason is not None:
            assert [d.reason for d in by_offset[offset]] == [reason], by_offset[offset]
    assert sorted(d.index for d in by_offset[len(poison)]) == [1, 2, 3, 4]  # type: ignore[type-var]
    garbage = by_offset[1][0]  # cut to what a producer may send, with the whole original's size and hash
    assert garbage.original_size == len(poison[0][0]) and len(deadletter.original_bytes(garbage)) < len(poison[0][0])
    assert garbage.original_sha256 == hashlib.sha256(poison[0][0]).hexdigest()
    stats = env.stats()
    assert stats["applied:calls"] == len(good) + 1
    snap = json.loads(env.ccmon("metrics", "--json").stdout)
    assert snap["queues"]["q1"]["15m"]["offered"] == len(good) + 1
    record("poison_and_oversized", poison_messages=len(poison), rejects=rejected,
           reasons=sorted({d.reason for d in letters}), seconds_until_the_events_after_them_applied=round(through, 2),
           events_lost=0, events_duplicated=0)
