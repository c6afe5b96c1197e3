"""Exactly once into Redis: fenced commits, a log that lost events, and two workers sharing partitions."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from pathlib import Path

import pytest

from agents.oracle import compute
from agents.pipeline import Message, Pipeline
from ccmon.store import Store
from streams.events import Event, decode_line
from streams.partitioning import partition_for
from tests.integration.conftest import Env, wait_for, write_jsonl
from tests.integration.test_end_to_end import scrambled, snapshot_and_oracle, traffic

pytestmark = pytest.mark.integration


def call_events(n_calls: int, partition: int, partitions: int, now: float) -> list[bytes]:
    """Single-event messages for calls that live on ``partition``."""
    ids = [c for c in (f"call{i}" for i in range(10 * n_calls)) if partition_for(c, partitions) == partition]
    out = []
    for k, cid in enumerate(ids[:n_calls]):
        t = now - 600 + k
        out.append({"event_id": f"{cid}-o", "type": "call.offered", "ts": t, "call_id": cid, "queue": "q"})
        out.append({"event_id": f"{cid}-a", "type": "call.answered", "ts": t + k % 40, "call_id": cid,
                    "queue": "q", "agent_id": "x"})
    return [json.dumps(e).encode() for e in out]


def test_two_writers_on_one_partition_never_double_count(env: Env) -> None:
    cfg = env.settings.metrics_config()
    topic = env.prefix + "calls"
    values = call_events(20, 1, env.partitions, time.time())
    msgs = [Message(topic, 1, i, v) for i, v in enumerate(values)]

    async def no_dead_letters(records: list[bytes]) -> None:
        raise AssertionError(f"unexpected dead letters {records}")

    async def scenario() -> dict:
        a_store, b_store = Store(env.redis_url, cfg), Store(env.redis_url, cfg)
        a = Pipeline("calls", topic, env.partitions, a_store, cfg, no_dead_letters)
        b = Pipeline("calls", topic, env.partitions, b_store, cfg, no_dead_letters)
        await a._load(1)
        await b._load(1)  # both believe nothing is applied yet
        await a.process(msgs[:25])
        await b.process(msgs[:32])  # fenced: reloads, skips 0..24, applies 25..31
        await a.process(msgs[20:])  # fenced again: reloads, applies 32..39
        snap = await a_store.snapshot()
        for s in (a_store, b_store):
            await s.close()
        return snap

    snap = asyncio.run(scenario())
    events = [decode_line(v) for v in values]
    assert all(isinstance(e, Event) for e in events)
    now_ms = round(time.time() * 1000)
    expected = compute(events, cfg, now_ms)  # type: ignore[arg-type]
    assert snap["queues"]["q"]["1h"] == expected["queues"]["q"]["1h"]
    assert snap["queues"]["q"]["1h"]["offered"] == 20 and snap["queues"]["q"]["1h"]["answered"] == 20
    assert env.stats()["applied:calls"] == 40


def test_offsets_ahead_of_the_log_are_reset_not_skipped(env: Env, tmp_path: Path) -> None:
    # Redis claims far more was applied than the (fresh) log holds: as after a memory-only broker restart.
    r = env.redis()
    for p in range(env.partitions):
        r.hset("ccmon:offsets", f"{env.prefix}calls:{p}", 100_000)
    lines = traffic(8, time.time(), 10, rate=600)
    calls = [e for e in lines if e["type"].startswith("call.")]
    env.start_worker()
    assert env.ccmon("send", str(write_jsonl(tmp_path / "e.jsonl", lines))).returncode == 0
    env.wait_consumed(len(lines))
    snap, expected = snapshot_and_oracle(env, lines)
    assert snap == expected and calls
    assert all(int(v) < 100_000 for v in r.hgetall("ccmon:offsets").values())


def test_two_workers_share_the_partitions_and_match_the_oracle(env: Env, tmp_path: Path) -> None:
    env.partitions = 6
    lines = scrambled(traffic(31, time.time(), 45, rate=2400), random.Random(5))
    path = write_jsonl(tmp_path / "events.jsonl", lines)
    env.start_worker("a")
    env.start_worker("b")  # joins the group: the partitions are split between the two
    split = re.compile(re.escape(env.prefix) + r"calls\s+\|\s+\{(0-2|3-5|[0-5](, ?[0-5])*)\}")
    for log in (tmp_path / "a-0.log", tmp_path / "b-1.log"):
        wait_for(lambda log=log: split.search(log.read_text()), 30, f"a share of the partitions in {log.name}")
    assert env.ccmon("send", str(path)).returncode == 0
    env.wait_consumed(len(lines), timeout=180)
    snap, expected = snapshot_and_oracle(env, lines)
    assert snap == expected
    assert all(w.poll() is None for w in env.workers)
