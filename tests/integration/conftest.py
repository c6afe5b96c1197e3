"""Real services for integration tests: the embedded Tansu broker and Redis, started once per session.

Each test gets fresh topics (its own prefix), its own consumer group and a fresh Redis db.
Nothing here skips: if a service cannot start, the tests fail with the reason.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
import redis

from ccmon.services import Embedded, free_port, python_cmd, spawn, start_embedded, stop
from ccmon.settings import Settings, child_environment

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    """One embedded broker and Redis for the whole session."""
    emb = start_embedded(tmp_path_factory.mktemp("services"))
    yield emb
    emb.stop()


_dbs = itertools.cycle(range(1, 16))


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    """Poll until ``predicate`` is truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Env:
    """One test's isolated slice of the services: topic prefix, Redis db, group and ports."""

    services: Embedded
    tmp: Path
    prefix: str
    redis_url: str
    group: str
    partitions: int = 4
    workers: list[subprocess.Popen] = field(default_factory=list)
    config: Optional[Path] = None
    extra_env: dict[str, str] = field(default_factory=dict)  # non-CCMON variables (receiver secrets)

    def environ(self, **extra: str) -> dict[str, str]:
        """The environment a ccmon process of this test runs with."""
        over = dict(
            kafka_bootstrap=self.services.kafka_bootstrap, redis_url=self.redis_url, topic_prefix=self.prefix,
            group_id=self.group, partitions=str(self.partitions), data_dir=str(self.tmp / "data"),
            kafka_session_timeout="4", log_level="info",
        )
        if self.config is not None:
            over["config"] = str(self.config)
        over.update(extra)
        return {**child_environment(**over), **self.extra_env}

    @property
    def settings(self) -> Settings:
        """Settings equal to what the children see."""
        return Settings(
            kafka_bootstrap=self.services.kafka_bootstrap, redis_url=self.redis_url, topic_prefix=self.prefix,
            partitions=self.partitions, config=self.config, group_id=self.group,
        )

    def redis(self) -> redis.Redis:
        """A sync client on this test's db."""
        return redis.Redis.from_url(self.redis_url)

    def ccmon(self, *args: str, input: Optional[bytes] = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the real ``ccmon`` CLI and capture its output."""
        return subprocess.run(
            python_cmd(*args), env=self.environ(), input=input, capture_output=True, timeout=timeout
        )

    def start_worker(self, name: str = "worker", **settings: str) -> tuple[subprocess.Popen, str]:
        """Start ``ccmon worker`` (with extra ``CCMON_*`` settings) and wait until it consumes."""
        port = int(settings.pop("http_port", 0)) or free_port()
        log = self.tmp / f"{name}-{len(self.workers)}.log"
        proc = spawn(python_cmd("worker"), log, self.environ(http_port=str(port), **settings))
        self.workers.append(proc)
        base = f"http://127.0.0.1:{port}"

        def consuming() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=1) as r:
                    return bool(json.load(r).get("consuming"))
            except OSError:
                return False

        wait_for(consuming, 90, f"the worker to join its group (log {log})", 0.2)
        return proc, base

    def stats(self) -> dict[str, int]:
        """The worker's counters in Redis."""
        return {k.decode(): int(v) for k, v in self.redis().hgetall("ccmon:stats").items()}

    def wait_consumed(self, n: int, timeout: float = 90) -> None:
        """Wait until the workers have committed ``n`` decoded events."""
        wait_for(lambda: self.stats().get("consumed", 0) >= n, timeout, f"{n} events to be committed")
        time.sleep(0.3)  # nothing more should arrive; a later assert catches double counting
        got = self.stats().get("consumed", 0)
        assert got == n, f"expected exactly {n} events committed, found {got}"


@pytest.fixture
def env(services: Embedded, tmp_path: Path) -> Iterator[Env]:
    """Fresh topics, group and Redis db for one test; workers it started are stopped after."""
    assert services.redis_url
    db = next(_dbs)
    url = services.redis_url.rsplit("/", 1)[0] + f"/{db}"
    redis.Redis.from_url(url).flushdb()
    tag = uuid.uuid4().hex[:8]
    e = Env(services, tmp_path, f"t{tag}.", url, f"g{tag}")
    yield e
    for proc in e.workers:
        stop(proc, timeout=15)


def write_jsonl(path: Path, events: list[dict]) -> Path:
    """Write events as JSON lines."""
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path
