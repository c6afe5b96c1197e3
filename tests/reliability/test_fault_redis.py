"""Redis outages and Redis data loss, on a private Redis (AOF on) the tests stop, kill, wipe and restart."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import pytest

from ccmon.services import free_port, python_cmd, spawn, stop
from tests.integration.conftest import Env, wait_for, write_jsonl
from tests.integration.test_end_to_end import snapshot_and_oracle, traffic
from tests.reliability.stack import Stack, record, sized

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    """Status and body of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""  # not listening (yet)


def worker_gauge(base: str, name: str) -> float:
    """One unlabelled sample of ``/metrics/worker``."""
    m = re.search(rf"^{name} (\S+)$", get(base + "/metrics/worker")[1], re.M)
    assert m, f"{name} is not on /metrics/worker"
    return float(m.group(1))


def send(env: Env, events: list[dict], name: str) -> None:
    """``ccmon send`` a list of events; it must succeed."""
    res = env.ccmon("send", str(write_jsonl(env.tmp / f"{name}.jsonl", events)))
    assert res.returncode == 0, res.stderr.decode() + res.stdout.decode()


def test_redis_outage_is_shown_retried_and_caught_up(stack: Stack, stack_env: Env) -> None:
    env = stack_env
    outage = sized(6, 30)
    now = time.time()
    events = traffic(51, now - 1, 20, rate=2400)
    first, second = events[: len(events) // 2], events[len(events) // 2:]
    # `ccmon run` against the configured broker and Redis: the supervisor, its status line and its worker.
    port = free_port()
    run_log = env.tmp / "run.log"
    run = spawn(python_cmd("run"), run_log, env.environ(http_port=str(port)))
    env.workers.append(run)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: json.loads(get(base + "/health")[1] or "{}").get("consuming"), 90, f"the worker ({run_log})", 0.2)
    send(env, first, "first")
    env.wait_consumed(len(first))
    assert worker_gauge(base, "ccmon_worker_redis_up") == 1

    stack.stop_redis()
    stopped = time.monotonic()
    send(env, second, "second")  # into Kafka while Redis is away
    status, body = get(base + "/health")
    assert status == 503, body
    health = json.loads(body)
    assert "Redis" in health["error"] and "unreachable" in health["error"] and health["redis_down_seconds"] >= 0
    wait_for(lambda: worker_gauge(base, "ccmon_worker_redis_up") == 0, 30, "ccmon_worker_redis_up 0")
    wait_for(lambda: "redis unavailable for" in run_log.read_text(), 30, "the status line to show the outage")
    time.sleep(max(0.0, outage - (time.monotonic() - stopped)))  # the outage lasts this long
    worker_log = (env.tmp / "data" / "logs" / "worker.log").read_text()
    assert "retrying every" in worker_log and "nothing is acknowledged until it succeeds" in worker_log
    assert run.poll() is None and "worker exited" not in run_log.read_text(), run_log.read_text()[-2000:]

    stack.start_redis()  # the same port and AOF
    restarted = time.monotonic()
    env.wait_consumed(len(events), timeout=120)
    caught_up = time.monotonic() - restarted
    assert get(base + "/health")[0] == 200
    assert worker_gauge(base, "ccmon_worker_redis_up") == 1 and worker_gauge(base, "ccmon_worker_redis_errors_total") > 0
    wait_for(lambda: "redis is back after" in run_log.read_text(), 30, "the status line to show the recovery")
    snap, expected = snapshot_and_oracle(env, events)
    assert snap == expected
    record("redis_outage", events=len(events), events_during_outage=len(second), outage_seconds=outage,
           restart_to_caught_up_seconds=round(caught_up, 2), worker_redis_errors=worker_gauge(
               base, "ccmon_worker_redis_errors_total"), events_lost=0, events_duplicated=0)
    stop(run, timeout=30)


def test_redis_crash_restarts_from_its_aof_and_total_loss_is_backfilled(stack: Stack, stack_env: Env) -> None:
    env = stack_env
    now = time.time()
    events = traffic(52, now - 1, 20, rate=2400)
    a, b, c = events[: len(events) // 3], events[len(events) // 3: 2 * len(events) // 3], events[2 * len(events) // 3:]
    worker, _ = env.start_worker()
    send(env, a, "a")
    env.wait_consumed(len(a))

    # A crash (SIGKILL: no shutdown, no final AOF rewrite), then a restart from the AOF.
    stack.stop_redis(kill=True)
    stack.start_redis()
    restarted = time.monotonic()
    wait_for(lambda: env.stats().get("consumed") == len(a), 30, "Redis to load its AOF with every commit")
    send(env, b, "b")
    env.wait_consumed(len(a) + len(b))
    aof_recovery = time.monotonic() - restarted
    snap, expected = snapshot_and_oracle(env, a + b)
    assert snap == expected

    # Total loss: Redis's files are gone. Stop the worker, start an empty Redis, rebuild from Kafka.
    stop(worker, timeout=15)
    stack.stop_redis(kill=True)
    stack.wipe_redis()
    stack.start_redis()
    assert not env.redis().keys("ccmon:*")
    refused = env.ccmon("backfill")  # rebuilding rewrites every key: it asks for --yes first
    assert refused.returncode != 0 and "--yes" in refused.stderr.decode()
    started = time.monotonic()
    res = env.ccmon("backfill", "--yes", timeout=300)
    backfill = time.monotonic() - started
    assert res.returncode == 0, res.stderr.decode()
    assert env.stats().get("consumed") == len(a) + len(b)
    snap, expected = snapshot_and_oracle(env, a + b)
    assert snap == expected

    # A worker started afterwards carries on from the rebuilt offsets.
    env.start_worker()
    send(env, c, "c")
    env.wait_consumed(len(events))
    snap, expected = snapshot_and_oracle(env, events)
    assert snap == expected
    record("redis_loss", events=len(events), aof_restart_to_new_events_committed_seconds=round(aof_recovery, 2),
           events_rebuilt_by_backfill=len(a) + len(b), backfill_seconds=round(backfill, 2), events_lost=0,
           events_duplicated=0)
