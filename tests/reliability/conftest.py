"""Fault, fuzz and security tests: the integration fixtures (real broker, Redis, workers) plus private stacks.

Tests that stop or lose a service start their own embedded broker and Redis (``start_embedded``) so the
shared session services stay up for the rest.
"""

from __future__ import annotations

from tests.integration.conftest import Env, env, services, wait_for, write_jsonl  # noqa: F401 - fixtures re-exported

from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

import pytest  # noqa: E402

from ccmon.services import stop  # noqa: E402
from tests.reliability.stack import Stack  # noqa: E402


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A private broker and Redis (started), which the test may stop, kill and restart."""
    s = Stack(tmp_path / "stack")
    try:
        s.start_broker()
        s.start_redis()
        yield s
    finally:
        s.close()


@pytest.fixture
def stack_env(stack: Stack, tmp_path: Path) -> Iterator[Env]:
    """An ``Env`` on the private stack; its workers are stopped before the stack is."""
    e = stack.env(tmp_path)
    yield e
    for proc in e.workers:
        stop(proc, timeout=15)
