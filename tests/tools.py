"""Real command-line tools the tests drive (promtool, prometheus, amtool, chromium...)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest


def require_tool(name: str, hint: str) -> str:
    """The tool's path; a skip when it is missing, except under CI=true where that is a failure."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} is not on PATH; install {hint} (`make test` does, as root on Debian)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {msg}")
    pytest.skip(msg)  # only outside CI: under CI=true the line above fails instead


def merge_json(path: Path, update: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``update`` to the JSON object in ``path`` (an empty one when missing or unreadable) and write it back,
    under a lock: the suite runs in parallel processes (pytest-xdist), and each merges its own figures."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        update(data)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
