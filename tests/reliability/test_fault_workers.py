"""Two workers, one SIGKILLed mid-stream: the survivor takes over its partitions, and nothing is lost or doubled."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from ccmon.services import python_cmd
from tests.integration.conftest import Env, wait_for, write_jsonl
from tests.integration.test_end_to_end import scrambled, snapshot_and_oracle, traffic
from tests.reliability.stack import record, sized

pytestmark = pytest.mark.integration


def partitions_held(base: str) -> int:
    """``ccmon_worker_partitions_assigned`` of one worker (``/metrics/worker``)."""
    with urllib.request.urlopen(base + "/metrics/worker", timeout=5) as r:
        m = re.search(r"^ccmon_worker_partitions_assigned (\S+)$", r.read().decode(), re.M)
    return int(float(m.group(1))) if m else 0


def test_survivor_takes_over_the_killed_workers_partitions(env: Env, tmp_path: Path) -> None:
    total = int(sized(12_000, 100_000))
    send_seconds = sized(8, 40)
    lines = scrambled(traffic(43, time.time() - 1, 60, rate=total * 3.3 / 60), random.Random(7))[:total]
    path = write_jsonl(tmp_path / "events.jsonl", lines)
    survivor, base_a = env.start_worker("a")
    everything = partitions_held(base_a)
    victim, base_b = env.start_worker("b")
    wait_for(lambda: 0 < partitions_held(base_b) < everything and partitions_held(base_a) < everything, 60,
             "the two workers to share the partitions")
    victim_held = partitions_held(base_b)
    sender = subprocess.Popen(python_cmd("send", str(path), "--rate", str(total / send_seconds), "--chunk", "500"),
                              env=env.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: env.stats().get("consumed", 0) >= total // 4, 120, "a quarter of the stream", 0.01)
        r = env.redis()
        at_kill = {k: int(v) for k, v in r.hgetall("ccmon:offsets").items()}
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        victim.wait(10)
        wait_for(lambda: partitions_held(base_a) == everything, 60, "the survivor to hold every partition", 0.05)
        takeover = time.monotonic() - killed
        # Every partition that had events committed before has more committed after: the victim's too.
        wait_for(lambda: all(int(r.hget("ccmon:offsets", k) or -1) > v for k, v in at_kill.items()), 60,
                 "commits on every partition after the kill", 0.05)
        resumed = time.monotonic() - killed
        assert sender.wait(120) == 0, sender.stderr.read().decode()  # type: ignore[union-attr]
        env.wait_consumed(total, timeout=120)
        caught_up = time.monotonic() - killed
    finally:
        if sender.poll() is None:
            sender.kill()
    snap, expected = snapshot_and_oracle(env, lines)
    assert snap == expected
    assert survivor.poll() is None
    record("two_workers_one_killed", events=total, partitions=everything, victim_held=victim_held,
           kill_to_takeover_seconds=round(takeover, 2), kill_to_commits_on_every_partition_seconds=round(resumed, 2),
           kill_to_all_committed_seconds=round(caught_up, 2), sender_seconds=send_seconds,
           kafka_session_timeout_seconds=float(env.environ()["CCMON_KAFKA_SESSION_TIMEOUT"]),
           events_lost=0, events_duplicated=0)
