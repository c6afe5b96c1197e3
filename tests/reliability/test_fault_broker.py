"""Broker outages on a private memory-only broker: down at start-up, and restarted (with an empty log) mid-run."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from ccmon.services import free_port, python_cmd, spawn
from tests.integration.conftest import Env, wait_for, write_jsonl
from tests.integration.test_end_to_end import snapshot_and_oracle, traffic
from tests.reliability.stack import Stack, record

pytestmark = pytest.mark.integration


def consuming(base: str) -> bool:
    """Whether the worker says it consumes (``/health``)."""
    try:
        with urllib.request.urlopen(base + "/health", timeout=2) as r:
            return bool(json.load(r).get("consuming"))
    except OSError:
        return False


def calls_only(seed: int, minutes: float) -> list[dict]:
    """Simulated call events (ids unique to the seed) ending now."""
    return [e for e in traffic(seed, time.time() - 1, minutes, rate=3000) if e["type"].startswith("call.")]


def test_worker_waits_for_the_broker_and_survives_its_reset(stack: Stack, stack_env: Env, tmp_path: Path) -> None:
    env = stack_env
    stack.stop_broker()
    port = free_port()
    log = tmp_path / "worker.log"
    worker = spawn(python_cmd("worker"), log, env.environ(http_port=str(port)))
    env.workers.append(worker)
    base = f"http://127.0.0.1:{port}"

    # Start-up without a broker: the worker says what it waits for and keeps waiting (no exit, no crash loop).
    waiting = f"waiting for the Kafka broker at {stack.kafka_bootstrap}"
    wait_for(lambda: log.read_text().count(waiting) >= 2, 60, "the worker to retry its broker connection")
    assert worker.poll() is None, log.read_text()[-3000:]
    assert "CCMON_KAFKA_BOOTSTRAP" in log.read_text()
    stack.start_broker()
    up = time.monotonic()
    wait_for(lambda: consuming(base), 90, f"the worker to consume once the broker is up ({log})", 0.1)
    startup = time.monotonic() - up
    assert "is up after" in log.read_text()

    # Mid-run: many small messages, so each partition's stored offset is well into the log.
    before = calls_only(61, 10)
    res = env.ccmon("send", "--chunk", "20", str(write_jsonl(tmp_path / "before.jsonl", before)))
    assert res.returncode == 0, res.stderr.decode()
    env.wait_consumed(len(before))
    offsets_before = {k.decode(): int(v) for k, v in env.redis().hgetall("ccmon:offsets").items()}

    # The memory-only broker restarts: every topic comes back empty, with a new id.
    stack.stop_broker(kill=True)
    stack.start_broker()
    restarted = time.monotonic()
    wait_for(lambda: "was recreated" in log.read_text(), 60, f"the worker to detect the reset ({log})", 0.1)
    detected = time.monotonic() - restarted
    assert worker.poll() is None
    # More messages per partition than before the reset: offsets alone could not tell the new log from the old.
    after = calls_only(62, 20)
    res = env.ccmon("send", "--chunk", "10", str(write_jsonl(tmp_path / "after.jsonl", after)))
    assert res.returncode == 0, res.stderr.decode()
    env.wait_consumed(len(before) + len(after))
    caught_up = time.monotonic() - restarted
    offsets_after = {k.decode(): int(v) for k, v in env.redis().hgetall("ccmon:offsets").items()}
    calls = [f"{env.settings.topic('calls')}:{p}" for p in range(env.partitions)]
    assert all(offsets_after[k] > offsets_before[k] for k in calls), (offsets_before, offsets_after)
    # Counters from before the reset are kept, and every event after it counts once.
    snap, expected = snapshot_and_oracle(env, before + after)
    assert snap == expected
    assert worker.poll() is None
    record("broker_outage", startup_broker_up_to_consuming_seconds=round(startup, 2),
           reset_detected_after_seconds=round(detected, 2), restart_to_new_events_committed_seconds=round(caught_up, 2),
           events_before_reset=len(before), events_after_reset=len(after), events_lost=0, events_duplicated=0)
