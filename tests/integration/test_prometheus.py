"""A real Prometheus scrapes a real worker while simulated traffic flows; what it stored equals the snapshot.

Also: ``promtool check metrics`` on both endpoints, the deploy/ rules loaded and
evaluated by that Prometheus without error, and every metric a Grafana panel or
an alert rule names present in the live scrape.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families as text_families

from ccmon.exposition import SnapshotCollector
from ccmon.services import free_port, python_cmd, spawn, stop
from ccmon.store import Store
from streams.events import DOMAINS
from tests.integration.conftest import ARTIFACTS, Env, wait_for, write_jsonl
from tests.integration.test_end_to_end import traffic
from tests.promql import dashboard_queries, metric_names
from tests.tools import require_tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONFIG = """
windows: [15m, 1h]
fcr_window: 10m
defaults:
  sl_threshold_seconds: 20
  asa_target_seconds: 25
  short_abandon_seconds: 5
  ticket_sla: {normal: {first_response: 10m, resolution: 2h}, high: {first_response: 7m, resolution: 1h}}
queues:
  sales: {sl_threshold_seconds: 30, short_abandon_seconds: 3, sl_target: 0.9}
  billing: {sl_threshold_seconds: 12}
"""
# Values that follow the clock between the scrape and the JSON read (a few ms apart): compared within a bound.
CONTINUOUS = {"ccmon_longest_wait_seconds": 2.0, "ccmon_occupancy_ratio": 1e-3}


def get(url: str, accept: str | None = None, gzipped: bool = False) -> tuple[bytes, str]:
    """Body and content type of a GET; ``gzipped``: ask for gzip as Prometheus does, and check that it came so."""
    headers = {"Accept": accept} if accept else {}
    if gzipped:
        headers["Accept-Encoding"] = "gzip"
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
        if gzipped:
            assert r.headers.get("Content-Encoding") == "gzip", dict(r.headers)
            body = gzip.decompress(body)
        return body, r.headers.get("Content-Type", "")


class Prometheus:
    """A real Prometheus server on a free port, scraping one worker every second."""

    def __init__(self, tmp: Path, worker: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        target = worker.removeprefix("http://")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DEPLOY / "prometheus" / "rules" / "*.yml")],
            "scrape_configs": [
                {"job_name": "ccmon", "static_configs": [{"targets": [target]}]},
                {"job_name": "ccmon-worker", "metrics_path": "/metrics/worker", "static_configs": [{"targets": [target]}]},
            ],
        }
        self.config = tmp / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        check = subprocess.run([require_tool("promtool", "Debian's prometheus package"), "check", "config", str(self.config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = tmp / "prometheus.log"
        self.proc = spawn([require_tool("prometheus", "Debian's prometheus package"), f"--config.file={self.config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                           f"--web.listen-address=127.0.0.1:{self.port}"], self.log)
        wait_for(self._ready, 60, f"Prometheus to start (log {self.log})", 0.2)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return get(self.base + "/-/ready")[0].startswith(b"Prometheus")
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s data; fails on an API error."""
        body, _ = get(f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}")
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query's vector."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        return self.api("query", **params)["result"]  # type: ignore[no-any-return]


@pytest.fixture
def stack(env: Env) -> Iterator[tuple[Env, str, Prometheus]]:
    """A worker fed with 40 minutes of history, and a Prometheus scraping it."""
    env.config = env.tmp / "ccmon.yaml"
    env.config.write_text(CONFIG)
    _, base = env.start_worker()
    now = time.time()
    history = traffic(seed=5, now=now - 5, minutes=40, rate=1200)
    res = env.ccmon("send", str(write_jsonl(env.tmp / "history.jsonl", history)))
    assert res.returncode == 0, res.stderr.decode()
    prom = Prometheus(env.tmp, base)
    try:
        yield env, base, prom
    finally:
        stop(prom.proc)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(prom.log, ARTIFACTS / "prometheus.log")


def samples(prom: Prometheus, at: float) -> dict[tuple[str, frozenset], float]:
    """Every ccmon series of job ccmon at ``at``, keyed by name and labels (without job and instance)."""
    out = {}
    for row in prom.query('{job="ccmon", __name__=~"ccmon_.+"}', at):
        labels = {k: v for k, v in row["metric"].items() if k not in ("job", "instance", "__name__")}
        out[(row["metric"]["__name__"], frozenset(labels.items()))] = float(row["value"][1])
    return out


def expected(snapshot: dict, status: dict) -> dict[tuple[str, frozenset], float]:
    """What the exposition of that snapshot says, sample by sample."""
    out = {}
    for family in SnapshotCollector(snapshot, status).collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[(s.name, frozenset(s.labels.items()))] = float(s.value)
    return out


def test_prometheus_scrapes_the_same_numbers_as_the_snapshot(stack: tuple[Env, str, Prometheus]) -> None:
    env, base, prom = stack
    # Live traffic while Prometheus scrapes: a second simulator, its own ids, at ~5 calls/s.
    live = spawn(python_cmd("simulate", "--seed", "9", "--queues", "sales,support", "--rate", "9000",
                            "--duration", "6"), env.tmp / "simulate.log", env.environ())
    assert live.wait(60) == 0, (env.tmp / "simulate.log").read_text()
    wait_for(lambda: prom.query("ccmon_events_consumed_total > 0"), 30, "Prometheus to scrape the worker")

    # Traffic has stopped: wait until the worker has committed everything in the broker's logs (the lag it reports
    # only knows the log ends of its last fetch) and Prometheus has scraped that.
    def settled() -> bool:
        status, ends = asyncio.run(_status(env)), log_ends(env)
        if not ends or any(status["offsets"].get(f, -1) + 1 < end for f, end in ends.items()):
            return False
        consumed = status["stats"]["consumed"]
        row = prom.query("ccmon_events_consumed_total")
        return bool(row) and float(row[0]["value"][1]) == consumed
    wait_for(settled, 90, "the worker to catch up and Prometheus to scrape it")
    time.sleep(3)  # a few scrapes after the last commit

    # A scrape away from a minute edge, so no window rolls between the scrape and the JSON read, and one that saw
    # every commit there is (the events consumed, committed with each batch's counters, as Redis has them now).
    def away_from_edge() -> float | None:
        consumed = asyncio.run(_status(env))["stats"]["consumed"]
        scrapes = prom.query("ccmon_events_consumed_total[20s]")[0]["values"]
        return next((float(ts) for ts, v in reversed(scrapes) if 2 <= float(ts) % 60 <= 57 and float(v) == consumed),
                    None)
    at = float(wait_for(away_from_edge, 30, "a scrape away from a minute edge", 0.5))  # type: ignore[arg-type]
    got = samples(prom, at)
    res = env.ccmon("metrics", "--json", "--at", f"{at:.3f}")
    assert res.returncode == 0, res.stderr.decode()
    snap = json.loads(res.stdout)
    status = asyncio.run(_status(env))
    assert status["stats"]["consumed"] == got[("ccmon_events_consumed_total", frozenset())], \
        "the worker committed more after the scrape compared: traffic was still arriving"
    want = expected(snap, status)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "prometheus-vs-snapshot.json").write_text(json.dumps(
        {"at": at, "prometheus": {f"{n}{dict(sorted(l))}": v for (n, l), v in sorted(got.items(), key=str)},
         "snapshot": snap}, indent=1, default=str))

    # The alert evaluator's own families (ccmon_alert_*) follow its evaluations, not the snapshot: not compared here
    # (tests/integration/test_alerts.py covers them).
    got = {k: v for k, v in got.items() if not k[0].startswith("ccmon_alert_")}
    assert set(got) == set(want), (
        f"only in Prometheus: {sorted(set(got) - set(want), key=str)[:10]}; "
        f"only in the snapshot: {sorted(set(want) - set(got), key=str)[:10]}"
    )
    for key, value in want.items():
        bound = CONTINUOUS.get(key[0], 0.0)
        assert math.isclose(got[key], value, rel_tol=0, abs_tol=bound), (key, got[key], value)
    assert len(got) > 500

    # The mapping itself, checked by hand on the fields an operator reads.
    def one(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    for q in ("sales", "support", "billing"):
        view = snap["queues"][q]
        t = view["totals"]
        assert t["offered"] > 100 and t["answered"] > 50 and t["tickets_created"] > 0
        assert one("ccmon_calls_offered_total", queue=q) == t["offered"]
        assert one("ccmon_calls_abandoned_total", queue=q) == t["abandoned"]
        assert one("ccmon_tickets_created_total", queue=q) == t["tickets_created"]
        threshold = {"sales": "30.0", "billing": "12.0"}.get(q, "20.0")
        short = {"sales": "3.0"}.get(q, "5.0")
        # The histogram's bucket at the queue's own T is exactly the answered-in-SL count.
        assert one("ccmon_call_wait_seconds_bucket", queue=q, outcome="answered", le=threshold) == t["answered_in_sl"]
        assert one("ccmon_call_wait_seconds_bucket", queue=q, outcome="abandoned", le=short) == t["short_abandoned"]
        assert one("ccmon_call_wait_seconds_count", queue=q, outcome="answered") == t["answered"]
        assert one("ccmon_ticket_first_response_seconds_bucket", queue=q, le="600.0") >= 0  # the 10m target is a bound
        assert one("ccmon_service_level_target_ratio", queue=q) == view["now"]["sl_target"]
        for window in ("15m", "1h", "today"):
            w = view[window]
            assert one("ccmon_window_calls", queue=q, window=window, outcome="offered") == w["offered"]
            if w["service_level"] is not None:
                assert one("ccmon_service_level_ratio", queue=q, window=window) == w["service_level"]
            else:
                assert ("ccmon_service_level_ratio", frozenset({"queue": q, "window": window}.items())) not in got
        if view["now"]["arrival_rate_per_hour"] is not None:
            assert one("ccmon_arrival_rate_per_second", queue=q) == view["now"]["arrival_rate_per_hour"] / 3600
    assert one("ccmon_events_consumed_total") == status["stats"]["consumed"]
    assert one("ccmon_batch_events_count") == status["stats"]["batches"]

    # The per-process job is up, and the deploy/ rules loaded and evaluate without error.
    assert float(prom.query('up{job="ccmon-worker"}')[0]["value"][1]) == 1
    assert float(prom.query('ccmon_worker_consuming{job="ccmon-worker"}')[0]["value"][1]) == 1
    # The worker records its cyclic-GC pauses from start-up (ccmon/gcstats.py): one series per generation.
    assert {r["metric"]["generation"] for r in prom.query('ccmon_worker_gc_pause_seconds_count{job="ccmon-worker"}')} \
        == {"0", "1", "2"}
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert rules, "Prometheus loaded no rule from deploy/prometheus/rules"
    wait_for(lambda: all(r.get("lastEvaluation", "").startswith("20") for r in prom.api("rules")["groups"][0]["rules"]),
             30, "every rule to be evaluated")
    for r in (r for g in prom.api("rules")["groups"] for r in g["rules"]):
        assert r["health"] == "ok", (r["name"], r.get("lastError"))

    # Every metric a dashboard panel or an alert rule names is in this live scrape.
    live_names = {n for n, _ in got} | {"up"} | {row["metric"]["__name__"] for row in
                                                 prom.query('{job="ccmon-worker"}')}
    used: dict[str, set[str]] = {}
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for title, expr in dashboard_queries(json.loads(path.read_text())):
            for name in metric_names(expr):
                used.setdefault(name, set()).add(f"{path.name}: {title}")
    for rule in rules:
        for name in metric_names(rule["query"]):
            used.setdefault(name, set()).add(f"rule {rule['name']}")
    assert len(used) > 20
    missing = {n: sorted(where) for n, where in used.items() if n not in live_names}
    assert not missing, f"panels or rules use metrics the live scrape does not have: {missing}"


def log_ends(env: Env) -> dict[str, int]:
    """The broker's log end offset of every partition of the event topics, as ``topic:partition`` fields; empty
    while the client's metadata does not know every topic yet (skipping one would let a caller think the worker
    caught up while that topic's last messages were still unread)."""
    consumer = KafkaConsumer(bootstrap_servers=env.services.kafka_bootstrap)  # no group: reads metadata only
    try:
        known = {t: consumer.partitions_for_topic(t) for t in map(env.settings.topic, DOMAINS)}
        if not all(known.values()):
            return {}
        tps = [TopicPartition(t, p) for t, parts in known.items() for p in parts]  # type: ignore[union-attr]
        return {f"{tp.topic}:{tp.partition}": end for tp, end in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


async def _status(env: Env) -> dict:
    store = Store(env.redis_url, env.settings.metrics_config())
    try:
        return await store.status()
    finally:
        await store.close()


@pytest.mark.parametrize("path", ["/metrics", "/metrics/worker"])
def test_promtool_accepts_the_exposition(stack: tuple[Env, str, Prometheus], path: str) -> None:
    env, base, _ = stack
    wait_for(lambda: env.stats().get("consumed", 0) > 1000, 60, "history to be committed")
    body, content_type = get(base + path)
    assert content_type.startswith("text/plain; version=0.0.4")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"scrape{path.replace('/', '-')}.txt").write_bytes(body)
    check = subprocess.run([require_tool("promtool", "Debian's prometheus package"), "check", "metrics"], input=body, capture_output=True)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()
    assert not (check.stdout + check.stderr).strip(), (check.stdout + check.stderr).decode()  # no lint warning
    om, om_type = get(base + path, accept="application/openmetrics-text; version=1.0.0", gzipped=True)
    assert om_type.startswith("application/openmetrics-text") and om.rstrip().endswith(b"# EOF")
    # OpenMetrics is what Prometheus asks for first: a strict parser takes it, with the series of the text format
    # (the traffic goes on between the two scrapes, so a few may come or go).
    series = {(s.name, tuple(sorted(s.labels.items()))) for f in openmetrics_families(om.decode()) for s in f.samples}
    text = {(s.name, tuple(sorted(s.labels.items()))) for f in text_families(body.decode()) for s in f.samples}
    assert text and len(series ^ text) <= len(text) // 20, sorted(series ^ text)[:10]


def test_large_bodies_are_gzipped_for_clients_that_ask(stack: tuple[Env, str, Prometheus]) -> None:
    """``/metrics`` and ``/api/snapshot`` come gzipped to a client that accepts it (Prometheus does), as they are to
    one that does not; the real Prometheus above scrapes the gzipped form."""
    env, base, _ = stack
    wait_for(lambda: env.stats().get("consumed", 0) > 1000, 60, "history to be committed")
    plain = json.loads(get(base + "/api/snapshot")[0])
    packed, content_type = get(base + "/api/snapshot", gzipped=True)
    assert content_type.startswith("application/json") and json.loads(packed).keys() == plain.keys()
    assert json.loads(packed)["queues"].keys() == plain["queues"].keys()
    req = urllib.request.Request(base + "/health", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=10) as r:  # a small body goes as it is
        assert r.headers.get("Content-Encoding") is None and json.loads(r.read())["status"] == "ok"
