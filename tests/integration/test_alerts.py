"""Alerts end to end: traffic breaches and then recovers a service level; real receivers hear it exactly once.

The receivers are a real HTTP server on loopback (generic webhook, Slack and
PagerDuty formats) and a real Alertmanager from Debian's package; the outbox is
shown to hold notifications while a receiver is down and deliver them after.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from kafka import KafkaConsumer, TopicPartition

from ccmon.services import free_port, spawn, stop
from tests.integration.conftest import ARTIFACTS, Env, wait_for, write_jsonl
from tests.tools import require_tool

pytestmark = pytest.mark.integration

PD_KEY = "R0UT1NGKEY-not-a-real-one"


class Receiver:
    """A real HTTP server that records every POST; ``down`` makes it answer 503."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.down = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.requests.append({"path": self.path, "at": time.time(), "body": json.loads(body),
                                       "headers": dict(self.headers)})
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict[str, Any]]:
        """The requests to one path."""
        return [r for r in self.requests if r["path"] == path]


class Alertmanager:
    """A real Alertmanager on a free port, with clustering off."""

    def __init__(self, tmp: Path):
        binary = require_tool("prometheus-alertmanager", "Debian's prometheus-alertmanager package")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "alertmanager.yml"
        config.write_text("route: {receiver: default, group_wait: 1s}\nreceivers: [{name: default}]\n")
        self.log = tmp / "alertmanager.log"
        self.proc = spawn([binary, f"--config.file={config}", f"--storage.path={tmp / 'am'}",
                           f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="], self.log)
        wait_for(self._ready, 60, f"Alertmanager to start (log {self.log})", 0.2)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"alertmanager exited:\n{self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (active and inactive)."""
        with urllib.request.urlopen(self.url + "/api/v2/alerts?active=true&silenced=true&inhibited=true"
                                    "&unprocessed=true", timeout=5) as r:
            return json.load(r)  # type: ignore[no-any-return]


def alerts_yaml(receiver: Receiver, am: Alertmanager | None) -> str:
    """One rule on today's service level of sales, sent to every receiver type."""
    am_block = f"  - {{name: am, type: alertmanager, url: '{am.url}'}}\n" if am else ""
    am_name = ", am" if am else ""
    return f"""
evaluation_interval: 2s
builtin_rules: false
receivers:
  - {{name: hook, type: webhook, url: '{receiver.url}/webhook', timeout: 2s}}
  - {{name: slack, type: slack, url_env: SLACK_URL}}
  - {{name: pd, type: pagerduty, url: '{receiver.url}/pagerduty', routing_key_env: PD_KEY}}
{am_block}rules:
  - name: SalesServiceLevel
    metric: service_level
    window: today
    queues: [sales]
    below: 0.8
    clear: 0.85
    severity: critical
    summary: "Service level in {{queue}} is {{value:.0%}}"
    description: "Today's service level in {{queue}} fell to {{value:.1%}} (target {{threshold:.0%}})."
    runbook_url: https://example.invalid/runbooks#sl
    receivers: [hook, slack, pd{am_name}]
"""


def calls(first: int, n: int, wait_s: float, end: float) -> list[dict[str, Any]]:
    """``n`` calls to sales, each answered after ``wait_s``, answered around ``end``."""
    out = []
    for i in range(first, first + n):
        out += [
            {"event_id": f"o{i}", "type": "call.offered", "ts": end - wait_s, "call_id": f"c{i}", "queue": "sales"},
            {"event_id": f"a{i}", "type": "call.answered", "ts": end, "call_id": f"c{i}", "queue": "sales",
             "agent_id": "a1"},
        ]
    return out


@pytest.fixture
def alerting(env: Env) -> Iterator[tuple[Env, Receiver, str]]:
    """A worker with the alerts file, its base URL, and a receiver."""
    receiver = Receiver()
    yield env, receiver, ""
    receiver.server.shutdown()


def start(env: Env, receiver: Receiver, am: Alertmanager | None) -> str:
    """Write the alerts file and start a worker that uses it."""
    path = env.tmp / "alerts.yaml"
    path.write_text(alerts_yaml(receiver, am))
    env.extra_env = {"SLACK_URL": receiver.url + "/slack", "PD_KEY": PD_KEY}
    check = env.ccmon("alerts", "check", str(path))
    assert check.returncode == 0, check.stderr.decode()
    _, base = env.start_worker(alerts=str(path))
    return base


def send(env: Env, events: list[dict[str, Any]], name: str) -> None:
    """Publish events with the real ``ccmon send`` and wait until the worker committed them."""
    before = env.stats().get("consumed", 0)
    res = env.ccmon("send", str(write_jsonl(env.tmp / f"{name}.jsonl", events)))
    assert res.returncode == 0, res.stderr.decode()
    wait_for(lambda: env.stats().get("consumed", 0) >= before + len(events), 60, f"{name} to be committed")


def api_alerts(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/api/alerts", timeout=5) as r:
        return json.load(r)  # type: ignore[no-any-return]


def test_a_breach_and_its_recovery_reach_every_receiver_once(alerting: tuple[Env, Receiver, str],
                                                             tmp_path: Path) -> None:
    env, receiver, _ = alerting
    am = Alertmanager(tmp_path)
    try:
        base = start(env, receiver, am)
        now = time.time()
        send(env, calls(0, 4, 60, now - 5), "breach")  # 4 calls answered after a minute: SL 0%
        committed = env.stats()["last_commit_ms"] / 1000
        wait_for(lambda: len(receiver.at("/webhook")) >= 1, 30, "the firing webhook")
        latency = receiver.at("/webhook")[0]["at"] - committed
        wait_for(lambda: receiver.at("/slack") and receiver.at("/pagerduty"), 30, "Slack and PagerDuty")
        firing = api_alerts(base)
        assert [(a["rule"], a["queue"], a["status"]) for a in firing["alerts"]] == \
            [("SalesServiceLevel", "sales", "firing")]
        assert "R0UT1NG" not in json.dumps(firing) and "/slack" not in json.dumps(firing)  # no secrets
        wait_for(lambda: [a for a in am.alerts() if a["labels"]["alertname"] == "SalesServiceLevel"], 30,
                 "the alert in Alertmanager")
        (am_alert,) = [a for a in am.alerts() if a["labels"]["alertname"] == "SalesServiceLevel"]
        assert am_alert["status"]["state"] == "active" and am_alert["labels"]["queue"] == "sales"
        assert am_alert["annotations"]["runbook_url"] == "https://example.invalid/runbooks#sl"

        send(env, calls(100, 30, 3, time.time() - 2), "recovery")  # 30 fast answers: SL 30/34 = 88% >= 85%
        wait_for(lambda: len(receiver.at("/webhook")) >= 2 and len(receiver.at("/pagerduty")) >= 2
                 and len(receiver.at("/slack")) >= 2, 30, "the resolve notifications")
        wait_for(lambda: all(a["status"]["state"] != "active" for a in am.alerts()
                             if a["labels"]["alertname"] == "SalesServiceLevel"), 30, "Alertmanager to resolve it")
        time.sleep(5)  # two more evaluations: nothing else may arrive

        hooks = receiver.at("/webhook")
        assert [h["body"]["status"] for h in hooks] == ["firing", "resolved"]
        fire, resolve = hooks[0]["body"], hooks[1]["body"]
        assert fire["rule"] == "SalesServiceLevel" and fire["queue"] == "sales" and fire["severity"] == "critical"
        assert fire["value"] == 0.0 and fire["threshold"] == 0.8 and fire["summary"] == "Service level in sales is 0%"
        assert resolve["duration_seconds"] > 0 and resolve["value"] == pytest.approx(30 / 34)
        assert fire["key"] == resolve["key"] == "ccmon/SalesServiceLevel/sales"
        slack = [s["body"] for s in receiver.at("/slack")]
        assert len(slack) == 2 and "[CRITICAL] Service level in sales is 0%" in slack[0]["text"]
        assert "RESOLVED" in slack[1]["text"] and slack[0]["blocks"][0]["type"] == "section"
        pd = [p["body"] for p in receiver.at("/pagerduty")]
        assert [p["event_action"] for p in pd] == ["trigger", "resolve"]
        assert {p["dedup_key"] for p in pd} == {"ccmon/SalesServiceLevel/sales"}
        assert pd[0]["routing_key"] == PD_KEY and pd[0]["payload"]["severity"] == "critical"
        assert pd[0]["payload"]["source"] == "ccmon" and pd[0]["links"][0]["href"].endswith("#sl")
        assert api_alerts(base)["alerts"] == []

        # The alerts topic carries the same two notifications.
        consumer = KafkaConsumer(bootstrap_servers=env.services.kafka_bootstrap, consumer_timeout_ms=3000,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        tps = [TopicPartition(env.settings.alerts_topic, p)
               for p in consumer.partitions_for_topic(env.settings.alerts_topic) or []]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        topic = [json.loads(m.value) for m in consumer]
        consumer.close()
        assert [t["status"] for t in sorted(topic, key=lambda t: t["at"])] == ["firing", "resolved"]

        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "alert-latency.txt").write_text(
            f"breaching batch committed -> firing webhook received: {latency * 1000:.0f} ms\n")
        print(f"\nalert latency (commit -> receiver): {latency * 1000:.0f} ms")
    finally:
        stop(am.proc)


def test_the_outbox_delivers_after_the_receiver_comes_back(alerting: tuple[Env, Receiver, str]) -> None:
    env, receiver, _ = alerting
    receiver.down = True
    base = start(env, receiver, None)
    send(env, calls(0, 3, 90, time.time() - 5), "breach")

    def failing() -> bool:
        hook = next(r for r in api_alerts(base)["receivers"] if r["name"] == "hook")
        return hook["failed"] >= 2 and hook["queued"] == 1
    wait_for(failing, 60, "failed attempts with the notification still queued")
    status = api_alerts(base)
    hook = next(r for r in status["receivers"] if r["name"] == "hook")
    assert "HTTP 503" in hook["last_error"] and receiver.url not in hook["last_error"]
    metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    assert 'ccmon_alert_notifications_total{receiver="hook",result="failed"}' in metrics
    assert 'ccmon_alert_outbox_messages{receiver="hook"} 1.0' in metrics

    receiver.down = False
    wait_for(lambda: receiver.at("/webhook") and receiver.at("/slack") and receiver.at("/pagerduty"), 90,
             "delivery after the receiver came back")
    time.sleep(3)
    assert [r["body"]["status"] for r in receiver.at("/webhook")] == ["firing"]
    assert len(receiver.at("/slack")) == 1 and len(receiver.at("/pagerduty")) == 1
    hook = next(r for r in api_alerts(base)["receivers"] if r["name"] == "hook")
    assert hook["queued"] == 0 and hook["sent"] == 1


def test_alerts_check_reports_lines(env: Env) -> None:
    bad = env.tmp / "bad.yaml"
    bad.write_text("rules:\n  - name: A\n    metric: service_level\n    below: 0.8\n    for: soon\n")
    res = env.ccmon("alerts", "check", str(bad))
    assert res.returncode == 1
    assert f"{bad}:5: rules.0.for" in res.stderr.decode()


def test_alerts_test_prints_what_would_fire(env: Env) -> None:
    snap = {"generated_at": "2026-11-23T10:00:00Z", "queues": {"sales": {"now": {
        "calls_waiting": 7, "longest_wait_seconds": 300, "agents_available": 0, "agents_required": 9,
        "agents_staffed": 5, "predicted_service_level": 0.4, "sl_target": 0.8}}}}
    path = env.tmp / "snap.json"
    path.write_text(json.dumps(snap))
    res = env.ccmon("alerts", "test", "--snapshot", str(path))
    text = res.stdout.decode()
    assert res.returncode == 0, res.stderr.decode()
    for rule in ("CcmonLongestWaitHigh", "CcmonCallsWaitingNoAgentAvailable", "CcmonAgentsShort",
                 "CcmonForecastBelowTarget"):
        assert rule in text
    assert "4 alert(s) would fire" in text



def test_two_workers_one_evaluator_and_a_takeover_that_neither_repeats_nor_forgets(
        alerting: tuple[Env, Receiver, str]) -> None:
    env, receiver, _ = alerting
    first = start(env, receiver, None)
    proc2, second = env.start_worker("second", alerts=str(env.tmp / "alerts.yaml"))
    bases = [first, second]
    wait_for(lambda: sum(api_alerts(b)["evaluator"]["this_worker"] for b in bases) == 1, 30, "one lease holder")
    send(env, calls(0, 4, 60, time.time() - 5), "breach")
    wait_for(lambda: receiver.at("/webhook"), 30, "the firing webhook")
    holder = next(i for i, b in enumerate(bases) if api_alerts(b)["evaluator"]["this_worker"])
    # SIGKILL the evaluator: no release, so the other worker takes over when the lease expires.
    env.workers[holder].kill()
    env.workers[holder].wait(10)
    survivor = bases[1 - holder]
    wait_for(lambda: api_alerts(survivor)["evaluator"]["this_worker"], 60, "the survivor to take the lease")
    wait_for(lambda: api_alerts(survivor)["evaluator"]["evaluations"] >= 2, 30, "two evaluations by the survivor")
    assert [a["status"] for a in api_alerts(survivor)["alerts"]] == ["firing"]  # remembered, not re-fired
    send(env, calls(100, 30, 3, time.time() - 2), "recovery")
    wait_for(lambda: len(receiver.at("/webhook")) >= 2, 60, "the resolve")
    time.sleep(4)
    assert [r["body"]["status"] for r in receiver.at("/webhook")] == ["firing", "resolved"]
    assert len(receiver.at("/pagerduty")) == 2 and len(receiver.at("/slack")) == 2
