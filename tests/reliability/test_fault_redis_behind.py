"""Redis restored behind Kafka: an older AOF comes back while the group's committed offsets are past it.

Redis is the one truth of where each partition resumes. A worker that finds Kafka's committed offset ahead of the
offset Redis holds seeks back and reads the difference again (agents.workers.rewind), so nothing is lost; an empty
Redis (total loss, no backfill) holds nothing, so every log is read again from its start.
"""

from __future__ import annotations

import shutil
import time

import pytest
from kafka import KafkaAdminClient

from ccmon.services import stop
from tests.integration.conftest import Env, wait_for, write_jsonl
from tests.integration.test_end_to_end import snapshot_and_oracle, traffic
from tests.reliability.stack import Stack, record, sized
from tests.reliability.test_fault_redis import send

pytestmark = pytest.mark.integration


def committed(env: Env) -> dict[str, int]:
    """Kafka's committed offset of the test's group, per ``topic:partition`` field as Redis names them."""
    admin = KafkaAdminClient(bootstrap_servers=env.services.kafka_bootstrap, client_id="ccmon-test")
    try:
        offsets = admin.list_group_offsets(env.group)[env.group]
    finally:
        admin.close()
    return {f"{tp.topic}:{tp.partition}": meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


def test_redis_restored_behind_kafka_is_read_again(stack: Stack, stack_env: Env) -> None:
    env = stack_env
    now = time.time()
    events = traffic(53, now - 1, sized(10, 60), rate=1200)
    # Most events after the backup, so most partitions hold events Redis will not have.
    cut = len(events) // 4
    before, after, live = events[:cut], events[cut:3 * cut], events[3 * cut:]
    worker, _ = env.start_worker()
    send(env, before, "before")
    env.wait_consumed(len(before))
    held = {k.decode(): int(v) for k, v in env.redis().hgetall("ccmon:offsets").items()}
    backup = env.tmp / "redis-backup"
    shutil.copytree(stack.redis_dir, backup)  # the AOF as it was: every commit so far is written to it

    # In many messages per partition (ccmon send batches a chunk's events per partition into one message).
    res = env.ccmon("send", "--chunk", "100", str(write_jsonl(env.tmp / "after.jsonl", after)))
    assert res.returncode == 0, res.stderr.decode()
    env.wait_consumed(len(before) + len(after))
    # Kafka's committed offsets (Faust commits each second) pass the backup's on the partitions that got events.
    ends = {k.decode(): int(v) + 1 for k, v in env.redis().hgetall("ccmon:offsets").items()}  # every event is in
    wait_for(lambda: all(committed(env).get(f, 0) >= n for f, n in ends.items()), 30,
             "Kafka's committed offsets to reach the log ends")
    stop(worker, timeout=30)
    kafka = committed(env)
    behind = {f: n - held.get(f, -1) - 1 for f, n in kafka.items() if n > held.get(f, -1) + 1}
    assert behind, (kafka, held)

    # Redis comes back from the older files: it holds `before` only, Kafka's group is past it.
    stack.stop_redis(kill=True)
    shutil.rmtree(stack.redis_dir)
    shutil.copytree(backup, stack.redis_dir)
    stack.start_redis()
    assert env.stats().get("consumed") == len(before)

    started = time.monotonic()
    env.start_worker()
    env.wait_consumed(len(before) + len(after), timeout=60)
    recovery = time.monotonic() - started
    stats = env.stats()
    assert stats.get("rewound_messages") == sum(behind.values()), (stats, behind)
    assert stats.get("rewound_partitions") == len(behind)
    snap, expected = snapshot_and_oracle(env, before + after)
    assert snap == expected
    logs = "".join(p.read_text() for p in env.tmp.glob("worker-*.log"))
    assert "but Kafka's committed offset is" in logs and "re-reading" in logs, logs[-3000:]

    # The re-read messages are acknowledged in order: Kafka's committed offsets move on to the log ends again.
    wait_for(lambda: all(committed(env).get(f, 0) >= n for f, n in ends.items()), 30,
             "Kafka's committed offsets to reach the log ends after the rewind")

    # Under a running worker: Redis restarts from an older AOF. The next batch of each partition finds Redis behind
    # what it had confirmed to the worker, which reads the lost messages again from Kafka before it.
    backup2 = env.tmp / "redis-backup-2"
    shutil.copytree(stack.redis_dir, backup2)
    res = env.ccmon("send", "--chunk", "100", str(write_jsonl(env.tmp / "live1.jsonl", live[: len(live) // 2])))
    assert res.returncode == 0, res.stderr.decode()
    env.wait_consumed(len(before) + len(after) + len(live) // 2)
    stack.stop_redis(kill=True)
    shutil.rmtree(stack.redis_dir)
    shutil.copytree(backup2, stack.redis_dir)
    stack.start_redis()
    rewound = env.stats()["rewound_messages"]
    started = time.monotonic()
    send(env, live[len(live) // 2:], "live2")
    env.wait_consumed(len(events), timeout=60)
    live_recovery = time.monotonic() - started
    live_reread = env.stats()["rewound_messages"] - rewound
    assert live_reread > 0
    snap, expected = snapshot_and_oracle(env, events)
    assert snap == expected
    ends = {k.decode(): int(v) + 1 for k, v in env.redis().hgetall("ccmon:offsets").items()}

    # Total loss, and no backfill: an empty Redis holds nothing of any partition, so the worker reads every log
    # from its start.
    for proc in env.workers:
        stop(proc, timeout=30)
    stack.stop_redis(kill=True)
    stack.wipe_redis()
    stack.start_redis()
    started = time.monotonic()
    env.start_worker()
    env.wait_consumed(len(events), timeout=60)
    rebuilt = time.monotonic() - started
    assert env.stats().get("rewound_messages") == sum(ends.values())
    snap, expected = snapshot_and_oracle(env, events)
    assert snap == expected
    record("redis_behind_kafka", events=len(events), events_in_backup=len(before),
           partitions_rewound=len(behind), messages_read_again=sum(behind.values()),
           worker_start_to_caught_up_seconds=round(recovery, 2), events_lost=0, events_duplicated=0,
           running_worker_messages_read_again=live_reread, running_worker_send_to_caught_up_seconds=round(
               live_recovery, 2),
           empty_redis_messages_read_again=sum(ends.values()), empty_redis_worker_start_to_rebuilt_seconds=round(
               rebuilt, 2))
