"""Events in through ``ccmon send``, the real worker, and a snapshot equal to the oracle."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import pytest

from agents.oracle import compute
from ccmon.services import python_cmd
from streams.events import Event, decode_line
from streams.simulator import SimConfig, generate
from tests.integration.conftest import Env, wait_for, write_jsonl

pytestmark = pytest.mark.integration

QUEUE_YAML = """
windows: [15m, 1h]
defaults: {sl_threshold_seconds: 20, short_abandon_seconds: 5}
queues:
  sales: {sl_threshold_seconds: 30, timezone: Europe/Berlin}
  billing: {short_abandon_seconds: 10, timezone: America/New_York, daily_reset: "06:00"}
"""


def scrambled(events: list[dict], rng: random.Random, dup_share: float = 0.05) -> list[dict]:
    """Shuffle each call's events among its own positions, then add duplicate deliveries anywhere."""
    positions: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(events):
        if e["type"].startswith("call."):
            positions[e["call_id"]].append(i)
    out = list(events)
    for idxs in positions.values():
        perm = idxs[:]
        rng.shuffle(perm)
        for dst, src in zip(idxs, perm):
            out[dst] = events[src]
    for e in rng.sample(events, int(len(events) * dup_share)):
        out.insert(rng.randrange(len(out) + 1), e)
    return out


def traffic(seed: int, now: float, minutes: float, rate: float = 900.0) -> list[dict]:
    """Simulated traffic ending at ``now``: calls, agents, tickets and surveys."""
    agents = int(rate * 210 / 3600 * 1.1) + 2
    cfg = SimConfig(seed=seed, arrival_rate_per_hour=rate, agents_per_queue=agents)
    return list(generate(cfg, now - minutes * 60, minutes * 60))


def snapshot_and_oracle(env: Env, lines: list[dict]) -> tuple[dict, dict]:
    """``ccmon metrics --json`` and the oracle's snapshot at the same instant."""
    res = env.ccmon("metrics", "--json")
    assert res.returncode == 0, res.stderr.decode()
    snap = json.loads(res.stdout)
    now_ms = round(datetime.fromisoformat(snap["generated_at"].replace("Z", "+00:00")).timestamp() * 1000)
    events: list[Event] = []
    for e in lines:
        item = decode_line(json.dumps(e).encode())
        assert isinstance(item, Event), item
        events.append(item)
    return snap, compute(events, env.settings.metrics_config(), now_ms, env.partitions)


def test_send_then_snapshot_equals_oracle_with_duplicates_and_shuffles(env: Env, tmp_path: Path) -> None:
    env.config = tmp_path / "queues.yaml"
    env.config.write_text(QUEUE_YAML)
    now = time.time()
    rng = random.Random(11)
    # 40 minutes up to now, plus an hour from yesterday that only `today`/`1h` boundaries may see.
    lines = scrambled(traffic(5, now, 40) + traffic(6, now - 86400 + 3600, 60), rng)
    path = write_jsonl(tmp_path / "events.jsonl", lines)
    env.start_worker()

    res = env.ccmon("send", str(path))
    assert res.returncode == 0, res.stderr.decode() + res.stdout.decode()
    assert f"sent {len(lines)} events" in res.stdout.decode()
    env.wait_consumed(len(lines))

    snap, expected = snapshot_and_oracle(env, lines)
    assert snap["queues"], "no queue in the snapshot"
    assert snap == expected
    sales = snap["queues"]["sales"]["15m"]
    assert sales["offered"] > 50 and sales["answered"] > 0
    # duplicates were seen and ignored, not counted
    assert env.stats().get("duplicates:calls", 0) > 0


def test_worker_killed_mid_stream_restarts_exactly_once(env: Env, tmp_path: Path) -> None:
    now = time.time()
    lines = scrambled(traffic(21, now, 55, rate=3000.0), random.Random(3))
    path = write_jsonl(tmp_path / "events.jsonl", lines)
    first, _ = env.start_worker()
    sender = subprocess.Popen(python_cmd("send", str(path), "--chunk", "2000"), env=env.environ(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: env.stats().get("consumed", 0) > len(lines) // 5, 120, "a fifth of the stream to commit", 0.01)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = env.stats().get("consumed", 0)
    assert sender.wait(120) == 0, sender.stderr.read().decode()  # type: ignore[union-attr]
    env.start_worker("restarted")
    env.wait_consumed(len(lines), timeout=180)
    assert 0 < killed_at < len(lines)
    snap, expected = snapshot_and_oracle(env, lines)
    assert snap == expected
