"""The embedded services start usable: Redis has loaded its AOF when ``start_redis`` returns."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from ccmon.services import start_redis, stop

pytestmark = pytest.mark.integration


def test_redis_restarted_on_a_large_aof_answers_at_once(tmp_path: Path) -> None:
    proc, url = start_redis(tmp_path)
    try:
        r = redis.Redis.from_url(url)
        for start in range(0, 300_000, 10_000):  # ~20 MB of AOF: loading it takes a visible while
            pipe = r.pipeline(transaction=False)
            for i in range(start, start + 10_000):
                pipe.hset(f"h{i}", mapping={"a": i, "b": "x" * 40})
            pipe.execute()
        r.close()
    finally:
        stop(proc)  # SIGTERM: Redis writes its AOF out
    proc, url = start_redis(tmp_path)
    try:
        r = redis.Redis.from_url(url)
        # Redis listens while it loads and answers LOADING to reads meanwhile; start_redis waits past that.
        assert r.info("persistence")["loading"] == 0
        assert r.hget("h299999", "a") == b"299999" and r.dbsize() == 300_000
        r.close()
    finally:
        stop(proc)
