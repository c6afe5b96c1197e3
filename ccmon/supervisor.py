"""``ccmon run``: embedded services when none are configured, the worker, the demo traffic and a status line."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Optional

from rich.console import Console

from ccmon.errors import CcmonError, ConfigError, ServiceStartError
from ccmon.services import Embedded, process_usage, python_cmd, spawn, start_embedded, stop
from ccmon.settings import Settings, child_environment
from ccmon.store import Store, redact_url

MEAN_HANDLE_SECONDS = 180 + 30  # the simulator's default talk + wrap-up
# The embedded broker (Tansu's memory engine) keeps every record batch it is sent and lists all of a partition's
# batches on each fetch that finds new data, so its CPU grows with what it holds. Measured on the 2-core machine,
# at 12 single-event batches/s: 10% of a core empty, 32% at 150,000 stored batches, 100% at 300,000 (about a day
# of the demo's traffic). Past BROKER_BUSY of a core over BROKER_WINDOW seconds, ``ccmon run`` says so.
BROKER_BUSY = 0.5
BROKER_WINDOW = 60.0
BROKER_WARN_EVERY = 3600.0


class BrokerLoad:
    """Tells the user when the embedded broker has filled up enough to take half a core (see BROKER_BUSY)."""

    def __init__(self) -> None:
        self._start: Optional[tuple[float, float]] = None  # (wall, cpu) at the start of the current window
        self._warned_at: Optional[float] = None

    def check(self, now: float, usage: Optional[tuple[float, float]]) -> Optional[str]:
        """Feed one sample (monotonic seconds, ``process_usage``); a warning line when one is due."""
        if usage is None:
            return None
        cpu, rss = usage
        if self._start is None:
            self._start = (now, cpu)
            return None
        if now - self._start[0] < BROKER_WINDOW:
            return None
        share = (cpu - self._start[1]) / (now - self._start[0])
        self._start = (now, cpu)
        if share < BROKER_BUSY or (self._warned_at is not None and now - self._warned_at < BROKER_WARN_EVERY):
            return None
        self._warned_at = now
        return (f"the embedded broker used {share:.0%} of a core over the last minute and holds {rss:,.0f} MiB: it "
                "keeps every event in memory and slows as it fills (about a day of demo traffic takes a core). "
                "Restart `ccmon run` to empty it (calls and tickets open at that moment are forgotten; counters "
                "are kept), or set CCMON_KAFKA_BOOTSTRAP to a real Kafka for long runs")


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: Optional[FrameType]) -> None:
    raise _Stop()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Supervisor:
    """Starts and watches everything ``ccmon run`` needs; Ctrl-C stops it all."""

    def __init__(self, settings: Settings, demo: bool, demo_rate: float, console: Console):
        self.settings = settings
        self.demo = demo
        self.demo_rate = demo_rate
        self.console = console
        self.data_dir = settings.data_dir
        self.logs = self.data_dir / "logs"
        self.embedded: Optional[Embedded] = None
        self.worker: Optional[subprocess.Popen] = None
        self.simulator: Optional[subprocess.Popen] = None
        self.http = f"http://{settings.http_host}:{settings.http_port}"

    def say(self, text: str) -> None:
        """One line on stderr."""
        self.console.print(text, highlight=False)

    def run(self) -> None:
        """Run until SIGINT or SIGTERM, then stop every child."""
        settings = self.settings
        settings.metrics_config()  # fail fast on a bad queue YAML, before starting anything
        self._check_port()
        old_int = signal.signal(signal.SIGINT, _raise_stop)
        old_term = signal.signal(signal.SIGTERM, _raise_stop)
        try:
            self._start()
            asyncio.run(self._watch())
        except _Stop:
            pass
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self._shutdown()
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)

    def _check_port(self) -> None:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.settings.http_host, self.settings.http_port))
            except OSError as exc:
                raise ConfigError(
                    f"cannot serve HTTP on {self.settings.http_host}:{self.settings.http_port} ({exc.strerror}); "
                    "stop what uses it or set CCMON_HTTP_PORT to another port"
                ) from None

    def _start(self) -> None:
        s = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        need_broker, need_redis = not s.kafka_bootstrap, not s.redis_url
        if need_broker or need_redis:
            what = " and ".join(n for n, need in (("broker", need_broker), ("Redis", need_redis)) if need)
            self.say(f"starting embedded {what} (data under {self.data_dir.resolve()})…")
            self.embedded = start_embedded(self.data_dir, need_broker, need_redis)
        self.bootstrap = s.kafka_bootstrap or self.embedded.kafka_bootstrap  # type: ignore[union-attr]
        self.redis_url = s.redis_url or self.embedded.redis_url  # type: ignore[union-attr]
        self.say(f"  kafka  {self.bootstrap}{'  (embedded tansu, memory-only)' if need_broker else ''}")
        self.say(f"  redis  {redact_url(self.redis_url)}{'  (embedded, AOF on)' if need_redis else ''}")
        self.env = child_environment(kafka_bootstrap=self.bootstrap, redis_url=self.redis_url)
        # Only the owner may read it: a configured CCMON_REDIS_URL can carry a password.
        path = self._endpoints()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when the file was there before, with wider permissions
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"kafka_bootstrap": self.bootstrap, "redis_url": self.redis_url, "http": self.http}))
        self._start_worker()
        self._wait_healthy()
        if self.demo:
            agents = math.ceil(self.demo_rate * MEAN_HANDLE_SECONDS / 3600 * 1.1) + 1
            self.simulator = spawn(
                python_cmd("simulate", "--rate", str(self.demo_rate), "--agents", str(agents)),
                self.logs / "simulator.log", self.env,
            )
            self.say(f"demo traffic: {self.demo_rate:g} calls/h per queue, {agents} agents per queue")
        self.say(f"wallboard {self.http}/wallboard   (TV: {self.http}/wallboard?tv=1)")
        self.say(f"snapshot  {self.http}/api/snapshot")
        self.say(f"metrics   {self.http}/metrics")
        self.say(f"health    {self.http}/health")
        self.say(f"logs      {self.logs.resolve()}   (Ctrl-C stops everything)")

    def _endpoints(self) -> Path:
        return self.data_dir / "endpoints.json"

    def _start_worker(self) -> None:
        self.worker = spawn(python_cmd("worker"), self.logs / "worker.log", self.env)

    def _wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        shown = False
        while time.monotonic() < deadline:
            if self.worker is not None and self.worker.poll() is not None:
                raise ServiceStartError(
                    f"the worker exited with status {self.worker.returncode}; last lines of "
                    f"{self.logs / 'worker.log'}:\n{_tail(self.logs / 'worker.log')}"
                )
            try:
                with urllib.request.urlopen(self.http + "/health", timeout=1) as r:
                    if r.status == 200 and json.load(r).get("consuming"):
                        return
            except (urllib.error.URLError, OSError):
                pass
            if not shown:
                self.say("starting the worker (creating topics, joining the consumer group)…")
                shown = True
            time.sleep(0.25)
        raise ServiceStartError(f"the worker did not answer {self.http}/health within {timeout:.0f}s; see {self.logs}")

    async def _watch(self) -> None:
        store = Store(self.redis_url, self.settings.metrics_config(), self.settings.redis_options())
        tty = sys.stderr.isatty()
        last_consumed: Optional[int] = None
        last_t = time.monotonic()
        last_print = 0.0
        restarts: list[float] = []
        down_since: Optional[float] = None  # when the status read first failed: Redis is down
        broker = self.embedded.broker if self.embedded else None
        broker_load = BrokerLoad()
        try:
            while True:
                await asyncio.sleep(1.0)
                if broker is not None:
                    warning = broker_load.check(time.monotonic(), process_usage(broker.pid))
                    if warning:
                        self.say("\n" + warning)
                if self.worker is not None and self.worker.poll() is not None:
                    code = self.worker.returncode
                    restarts = [t for t in restarts if time.monotonic() - t < 60] + [time.monotonic()]
                    if len(restarts) > 5:
                        raise ServiceStartError(
                            f"the worker keeps exiting (status {code}); see {self.logs / 'worker.log'}:\n"
                            f"{_tail(self.logs / 'worker.log')}"
                        )
                    self.say(f"\nworker exited with status {code}; restarting it (see {self.logs / 'worker.log'})")
                    self._start_worker()
                was_down = down_since is not None
                try:
                    status = await store.status()
                except CcmonError as exc:
                    down_since = down_since or time.monotonic()
                    line = (f"redis unavailable for {time.monotonic() - down_since:.0f}s: {exc} "
                            "(the worker retries; nothing is lost)")
                else:
                    if down_since is not None:
                        self.say(f"\nredis is back after {time.monotonic() - down_since:.0f}s; the worker catches up")
                        down_since = None
                    stats = status["stats"]
                    consumed = int(stats.get("consumed", 0))  # type: ignore[union-attr]
                    now = time.monotonic()
                    rate = 0.0 if last_consumed is None else (consumed - last_consumed) / (now - last_t)
                    last_consumed, last_t = consumed, now
                    lag = sum(status["lag"].values())  # type: ignore[union-attr]
                    rejected = sum(v for k, v in stats.items() if k.startswith("rejected:"))  # type: ignore[union-attr]
                    line = f"{rate:8.0f} events/s   lag {lag:>6}   events {consumed:>9}   rejected {rejected}"
                if tty:
                    self.console.file.write("\r" + line.ljust(78))
                    self.console.file.flush()
                elif time.monotonic() - last_print >= 10 or was_down != (down_since is not None):
                    last_print = time.monotonic()
                    self.say(line)
        finally:
            await store.close()

    def _shutdown(self) -> None:
        self.say("\nstopping…")
        for proc in (self.simulator, self.worker):
            if proc is not None:
                stop(proc, timeout=15)
        if self.embedded is not None:
            self.embedded.stop()
        self._endpoints().unlink(missing_ok=True)
        self.say("stopped")
