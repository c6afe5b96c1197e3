"""``ccmon run --demo`` on the embedded default: it starts everything, shows status, and stops with no orphans."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ccmon.services import free_port, python_cmd
from ccmon.settings import child_environment
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_run_demo_serves_snapshot_and_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = child_environment(kafka_bootstrap=None, redis_url=None, data_dir=str(tmp_path / "data"),
                            http_port=str(port), kafka_session_timeout="4")
    proc = subprocess.Popen(python_cmd("run", "--demo", "--demo-rate", "3600"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(l.decode() for l in proc.stdout), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: any("snapshot  http" in l for l in output) or proc.poll() is not None, 150,
                 "ccmon run to print its addresses", 0.2)
        text = "".join(output)
        assert proc.poll() is None, text
        assert f"http://127.0.0.1:{port}/api/snapshot" in text and f"http://127.0.0.1:{port}/metrics" in text
        assert re.search(r"kafka\s+127\.0\.0\.1:\d+", text) and re.search(r"redis\s+redis://127\.0\.0\.1:\d+", text)
        endpoints = json.loads((tmp_path / "data" / "endpoints.json").read_text())
        assert endpoints["http"] == f"http://127.0.0.1:{port}"
        mode = (tmp_path / "data" / "endpoints.json").stat().st_mode & 0o777
        assert mode == 0o600, f"endpoints.json may hold a Redis password but is {oct(mode)}"

        def offered() -> int:
            snap = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/snapshot", timeout=2))
            return sum(q["15m"]["offered"] for q in snap["queues"].values())

        wait_for(offered, 60, "demo calls to show up in the snapshot", 0.5)
        wait_for(lambda: any("events/s" in l for l in output), 30, "a status line", 0.5)
        children = descendants(proc.pid)
        assert len(children) >= 4, f"expected broker, redis, worker and simulator, found {children}"
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    reader.join(5)
    assert code == 0, "".join(output)
    assert "stopped" in "".join(output)
    time.sleep(0.5)
    leftover = [pid for pid in children if alive(pid)]
    assert not leftover, f"processes left running after Ctrl-C: {leftover}"
    assert not (tmp_path / "data" / "endpoints.json").exists()
    assert (tmp_path / "data" / "redis" / "appendonly.aof").exists() or any(
        (tmp_path / "data" / "redis").glob("appendonly*")
    ), "Redis did not run with AOF on"
