"""Real command-line tools the tests drive (promtool, prometheus, amtool, chromium...)."""

from __future__ import annotations

import os
import shutil

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
