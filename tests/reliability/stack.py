"""A private broker and Redis for fault tests: fixed ports, so each can be stopped, killed and started again.

The session services stay up for every other test; what a fault test breaks is its own. Measured figures go
to ``test-artifacts/reliability.json`` (merged by key), from which docs/reliability.md takes its table.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ccmon.services import Embedded, free_port, start_broker, start_redis, stop
from tests.integration.conftest import ARTIFACTS, Env
from tests.tools import merge_json

RESULTS = ARTIFACTS / "reliability.json"


def scale() -> str:
    """``CCMON_RELIABILITY_SCALE``: ``ci`` (default, fits the suite's time budget) or ``full`` (the issue's sizes)."""
    value = os.environ.get("CCMON_RELIABILITY_SCALE", "ci").strip().lower() or "ci"
    if value not in ("ci", "full"):
        raise ValueError(f"CCMON_RELIABILITY_SCALE={value!r} is not known; use ci (the default) or full")
    return value


def sized(ci: float, full: float) -> float:
    """The CI or the full-size value of a test parameter, by ``CCMON_RELIABILITY_SCALE``."""
    return full if scale() == "full" else ci


def record(case: str, **figures: object) -> None:
    """Merge one case's measured figures into ``test-artifacts/reliability.json`` and print them."""
    entry = {"scale": scale(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    merge_json(RESULTS, lambda data: data.__setitem__(case, entry))
    print(f"{case}: {json.dumps(figures)}")


@dataclass
class Stack:
    """An embedded Tansu broker and Redis (AOF on) owned by one test, on ports that survive restarts."""

    root: Path
    broker_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    broker: Optional[subprocess.Popen] = None
    redis: Optional[subprocess.Popen] = None

    @property
    def kafka_bootstrap(self) -> str:
        """The broker's address (the same across restarts)."""
        return f"127.0.0.1:{self.broker_port}"

    @property
    def redis_url(self) -> str:
        """Redis's URL, db 0 (the same across restarts)."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def redis_dir(self) -> Path:
        """Where Redis keeps its AOF."""
        return self.root / "redis"

    def start_broker(self) -> None:
        """Start the broker (memory-only: a restart begins with an empty log)."""
        assert self.broker is None or self.broker.poll() is not None, "the broker is already running"
        self.broker, _ = start_broker(self.root, self.broker_port)

    def stop_broker(self, kill: bool = False) -> None:
        """Stop the broker: SIGTERM, or SIGKILL when ``kill``."""
        self._end(self.broker, kill)

    def start_redis(self) -> None:
        """Start Redis; it loads its AOF when one is there."""
        assert self.redis is None or self.redis.poll() is not None, "Redis is already running"
        self.redis, _ = start_redis(self.root, self.redis_port)

    def stop_redis(self, kill: bool = False) -> None:
        """Stop Redis: SIGTERM (it flushes the AOF), or SIGKILL (a crash) when ``kill``."""
        self._end(self.redis, kill)

    def wipe_redis(self) -> None:
        """Total data loss: Redis must be stopped; its files are deleted."""
        assert self.redis is None or self.redis.poll() is not None, "stop Redis before wiping its data"
        shutil.rmtree(self.redis_dir, ignore_errors=True)

    @staticmethod
    def _end(proc: Optional[subprocess.Popen], kill: bool) -> None:
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        else:
            stop(proc, timeout=15)

    def env(self, tmp: Path, partitions: int = 4) -> Env:
        """A test environment whose workers and CLI use this stack."""
        tag = uuid.uuid4().hex[:8]
        services = Embedded(self.root, kafka_bootstrap=self.kafka_bootstrap, redis_url=self.redis_url)
        return Env(services, tmp, f"t{tag}.", self.redis_url, f"g{tag}", partitions=partitions)

    def close(self) -> None:
        """Stop whatever still runs."""
        self.stop_redis()
        self.stop_broker()
