"""Worker crashes: SIGKILL at random points of a stream, some right as a Redis commit arrives, restart each time.

The end state must equal the oracle and every event must be committed exactly once. Half of the kills are
triggered by Redis itself: a MONITOR connection sees the worker's commit script arrive and the worker is killed
at once, so Redis applies that commit while the worker never learns it did and never acknowledges the batch to
Kafka. The restarted worker must skip exactly what Redis holds (``replayed_skipped`` proves it had to).
"""

from __future__ import annotations

import random
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from ccmon.services import python_cmd
from tests.integration.conftest import Env, wait_for, write_jsonl
from tests.integration.test_end_to_end import scrambled, snapshot_and_oracle, traffic
from tests.reliability.stack import record, sized

pytestmark = pytest.mark.integration


class CommitTrap:
    """Watches Redis with MONITOR; once armed, SIGKILLs the worker the moment its next commit script arrives."""

    def __init__(self, redis_url: str):
        host_port, db = redis_url.split("://", 1)[1].rsplit("/", 1)
        host, port = host_port.rsplit(":", 1)
        self.db = int(db)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.reader = self.sock.makefile("rb")
        assert self.reader.readline().startswith(b"+OK"), "Redis refused MONITOR"
        self.sock.settimeout(None)
        self.victim: Optional[subprocess.Popen] = None
        self.sprung = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def arm(self, victim: subprocess.Popen) -> None:
        """Kill ``victim`` at its next commit."""
        with self.lock:
            self.sprung.clear()
            self.victim = victim

    def _watch(self) -> None:
        # A MONITOR line: +<ts> [<db> <addr>] "EVALSHA" "<sha>" "0" "<packed args: starts with ccmon:offsets>" ...
        # (the packed header before it is escaped by MONITOR, so its length varies).
        commit = re.compile(rb'^\+[\d.]+ \[' + str(self.db).encode() + rb' [^\]]*\] "(?i:evalsha)" "[0-9a-f]+" "0" "')
        try:
            for line in self.reader:
                if self.victim is not None and commit.match(line) and b"ccmon:offsets" in line[:300]:
                    with self.lock:
                        if self.victim is not None:
                            self.victim.send_signal(signal.SIGKILL)
                            self.victim = None
                            self.sprung.set()
        except (OSError, ValueError):
            pass  # closed

    def close(self) -> None:
        """Stop watching."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def test_worker_sigkilled_at_random_points_loses_and_doubles_nothing(env: Env, tmp_path: Path) -> None:
    kills, total = int(sized(3, 20)), int(sized(20_000, 200_000))
    send_seconds = 7 * kills + 4  # the stream outlasts the kills: each restart takes ~5 s (a group join)
    rng = random.Random(2020)
    lines = scrambled(traffic(41, time.time() - 1, 60, rate=total * 3.3 / 60), rng)[:total]
    assert len(lines) == total
    path = write_jsonl(tmp_path / "events.jsonl", lines)
    trap = CommitTrap(env.redis_url)
    started = time.monotonic()
    worker, _ = env.start_worker("w")
    sender = subprocess.Popen(python_cmd("send", str(path), "--rate", str(total / send_seconds), "--chunk", "500"),
                              env=env.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    restarts: list[float] = []
    mid_commit = 0
    try:
        for i in range(kills):
            # A random point after this worker has committed something of the stream.
            base = env.stats().get("consumed", 0)
            wait_for(lambda: env.stats().get("consumed", 0) > base, 120, f"a commit before kill {i + 1}", 0.01)
            time.sleep(rng.uniform(0.0, 1.5))
            assert sender.poll() is None, "the stream ended before the kills did; lengthen send_seconds"
            if i % 2 == 0:  # at the next commit script Redis receives from this worker
                trap.arm(worker)
                wait_for(trap.sprung.is_set, 60, f"a commit to trap (kill {i + 1})", 0.01)
                mid_commit += 1
            else:  # wherever the worker is now
                worker.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            assert worker.wait(10) == -signal.SIGKILL
            worker, _ = env.start_worker("w")
            restarts.append(time.monotonic() - killed)
        assert sender.wait(300) == 0, sender.stderr.read().decode()  # type: ignore[union-attr]
        env.wait_consumed(total, timeout=300)
    finally:
        trap.close()
        if sender.poll() is None:
            sender.kill()
    took = time.monotonic() - started
    snap, expected = snapshot_and_oracle(env, lines)
    assert snap == expected
    stats = env.stats()
    # Redis was ahead of Kafka's committed offset after kills: the restarted workers had to skip what it held.
    assert stats.get("replayed_skipped", 0) > 0, stats
    record("worker_crashes", events=total, kills=kills, kills_as_a_commit_arrived=mid_commit,
           restart_to_consuming_seconds_max=round(max(restarts), 2),
           restart_to_consuming_seconds_mean=round(sum(restarts) / len(restarts), 2),
           messages_skipped_as_already_in_redis=stats["replayed_skipped"], events_committed=stats["consumed"],
           events_lost=0, events_duplicated=0, test_seconds=round(took, 1))
