"""Ingest from outside: the HTTP API, CSV replay, kcat (a Kafka client we did not write) and backfill."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest

from streams import deadletter
from tests.integration.conftest import Env, write_jsonl
from tests.integration.test_bad_input import read_dead_letters
from tests.integration.test_end_to_end import snapshot_and_oracle, traffic
from tests.tools import require_tool

pytestmark = pytest.mark.integration
TOKEN = "ingest-token-1"


def post(url: str, body: bytes, token: Optional[str] = TOKEN, ctype: str = "application/x-ndjson"
         ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, JSON body and headers of a POST (errors included)."""
    headers = {"Content-Type": ctype}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), dict(exc.headers)


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def test_http_ingest_auth_limits_bad_input_and_exact_counts(env: Env) -> None:
    env.extra_env = {"CCMON_INGEST_TOKENS": f"other-token,{TOKEN}", "CCMON_INGEST_MAX_BYTES": "1000000",
                     "CCMON_INGEST_RATE": "1500"}
    _, base = env.start_worker()
    url = base + "/api/events"
    now = time.time()
    events = traffic(seed=8, now=now - 2, minutes=10, rate=600)[:1000]

    assert post(url, ndjson(events[:1]), token=None)[0] == 401
    status, body, headers = post(url, ndjson(events[:1]), token="wrong")
    assert status == 401 and headers.get("WWW-Authenticate") == "Bearer" and "CCMON_INGEST_TOKENS" in body["error"]
    status, body, _ = post(url, b"x" * 1_000_001)
    assert status == 413 and "CCMON_INGEST_MAX_BYTES" in body["error"]

    # Batches of NDJSON, one event as plain JSON, and bad lines that come back with their reasons.
    accepted = 0
    for i in range(0, 900, 300):
        status, body, _ = post(url, ndjson(events[i:i + 300]))
        assert status == 200 and body["accepted"] == 300 and body["rejected"] == 0, body
        accepted += 300
    status, body, _ = post(url, json.dumps(events[900]).encode(), ctype="application/json")
    assert status == 200 and body["results"][0]["event_id"] == events[900]["event_id"]
    accepted += 1
    bad = ndjson(events[901:903]) + b'{"type": "call.offered"}\nnot json\n' + \
        json.dumps({**events[903], "type": "call.teleported"}).encode()
    status, body, _ = post(url, bad)
    assert status == 207 and body["accepted"] == 2 and body["rejected"] == 3
    assert [r["status"] for r in body["results"]] == ["accepted", "accepted", "rejected", "rejected", "rejected"]
    assert {r["reason"] for r in body["results"] if r["status"] == "rejected"} >= {"invalid_json"}
    assert all(r.get("reason") and r.get("detail") for r in body["results"] if r["status"] == "rejected")
    accepted += 2

    # A retry of the same events (same event_id) counts once; then the rate limit answers 429.
    def accepted_post(body_: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        nonlocal accepted
        status_, answer, headers_ = post(url, body_)
        if status_ in (200, 207):
            accepted += answer["accepted"]
        return status_, answer, headers_

    status, body, headers = accepted_post(ndjson(events[:300]))
    if status == 429:  # this token's budget may be spent by the requests above: wait as told, once
        time.sleep(int(headers["Retry-After"]))
        status, body, headers = accepted_post(ndjson(events[:300]))
    assert status == 200
    status, body, _ = accepted_post(ndjson(events[:1000]) * 3 + ndjson(events[:1]))  # 3001 > the 2 s burst
    assert status == 413 and "burst" in body["error"], (status, body)
    hits = [accepted_post(ndjson(events[:900])) for _ in range(4)]
    limited = [h for h in hits if h[0] == 429]
    assert limited and int(limited[0][2]["Retry-After"]) >= 1 and "events/s" in limited[0][1]["error"]

    env.wait_consumed(accepted, 90)
    snap, oracle = snapshot_and_oracle(env, events[:903])
    assert snap == oracle  # retries and replays changed nothing: the streaming dedup holds end to end
    dead = env.stats()
    assert dead.get("rejected:invalid_json", 0) == 0  # HTTP rejects never reach the worker; they are dead letters

    spec = json.load(urllib.request.urlopen(base + "/api/openapi.json", timeout=5))
    assert spec["openapi"].startswith("3.") and "/api/events" in spec["paths"]
    assert set(spec["paths"]["/api/events"]["post"]["responses"]) >= {"200", "207", "401", "413", "429"}


def test_ingest_is_closed_unless_opened(env: Env) -> None:
    _, base = env.start_worker()
    status, body, _ = post(base + "/api/events", b'{"event_id": "1"}\n', token=None)
    assert status == 401 and "CCMON_INGEST_OPEN" in body["error"]


def test_csv_replay_with_rate_and_preserve_timing(env: Env) -> None:
    env.start_worker()
    now = time.time()
    rows = ["event_id,type,ts,call_id,queue,agent_id,queues,state",
            f"c1,call.offered,{now - 30},k1,sales,,,",
            f"c2,call.answered,{now - 28},k1,sales,a1,,",
            f"c3,agent.state,{now - 27},,,a1,sales;support,on_call",
            f"c4,call.offered,{now - 26},k2,sales,,,",
            "c5,call.offered,not-a-time,k3,sales,,,"]
    path = env.tmp / "events.csv"
    path.write_text("\n".join(rows) + "\n")
    res = env.ccmon("send", str(path), "--preserve-timing", "--speed", "2")
    assert res.returncode == 1, res.stderr.decode()  # the bad row is rejected with its line number
    text = res.stdout.decode()
    assert "sent 4 events" in text and "line 6:" in text
    env.wait_consumed(4)  # the bad row never reached Kafka's event topics: it was dead-lettered by send
    snap = json.loads(env.ccmon("metrics", "--json").stdout)
    sales = snap["queues"]["sales"]
    assert sales["totals"]["offered"] == 2 and sales["totals"]["answered"] == 1
    assert sales["now"]["agents_on_call"] == 1 and snap["queues"]["support"]["now"]["agents_on_call"] == 1
    res = env.ccmon("send", str(write_jsonl(env.tmp / "more.jsonl", [
        {"event_id": f"r{i}", "type": "call.offered", "ts": now, "call_id": f"r{i}", "queue": "sales"}
        for i in range(20)])), "--rate", "200")
    assert res.returncode == 0 and "sent 20 events" in res.stdout.decode()


def kcat_environment(tmp: Path) -> dict[str, str]:
    """Debian's kcat with a librdkafka that speaks to the embedded broker.

    bookworm's librdkafka 2.0.2 misreads the ApiVersions v3 reply of the embedded
    Tansu broker (its tagged fields) and never connects; librdkafka 2.1+ reads it.
    The kcat binary stays Debian's: only the shared library comes from the
    confluent-kafka wheel, through LD_LIBRARY_PATH.
    """
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    (lib,) = libs.glob("librdkafka-*.so.1")
    shim = tmp / "rdkafka"
    shim.mkdir(exist_ok=True)
    (shim / "librdkafka.so.1").symlink_to(lib)
    return {**os.environ, "LD_LIBRARY_PATH": str(shim)}


def test_kcat_produces_contract_events(env: Env) -> None:
    kcat = require_tool("kcat", "Debian's kcat package")
    kenv = kcat_environment(env.tmp)
    env.start_worker()
    events = traffic(seed=4, now=time.time() - 2, minutes=10, rate=600)
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        domain = {"call": "calls", "agent": "agents", "ticket": "tickets", "survey": "surveys",
                  "kpi": "kpis"}[e["type"].split(".")[0]]
        by_topic.setdefault(domain, []).append(e)
    key_field = {"calls": "call_id", "agents": "agent_id", "tickets": "ticket_id", "surveys": "survey_id"}
    for domain, evs in by_topic.items():
        # Keyed by the entity id with Kafka's Java-compatible partitioner (murmur2), one event per message.
        lines = "".join(f"{e[key_field[domain]]}\t{json.dumps(e)}\n" for e in evs)
        res = subprocess.run([kcat, "-P", "-b", env.services.kafka_bootstrap, "-t", env.settings.topic(domain),
                              "-K", "\t", "-X", "topic.partitioner=murmur2_random"],
                             input=lines.encode(), capture_output=True, timeout=120, env=kenv)
        assert res.returncode == 0, res.stderr.decode()
    env.wait_consumed(len(events), 120)
    snap, oracle = snapshot_and_oracle(env, events)
    assert snap == oracle
    assert not any(k.startswith("rejected:") for k in env.stats())


def test_webhook_mapping_over_http(env: Env) -> None:
    root = Path(__file__).resolve().parents[2] / "deploy" / "mappings"
    env.extra_env = {"CCMON_INGEST_TOKENS": TOKEN, "CCMON_MAPPINGS_DIR": str(root)}
    _, base = env.start_worker()
    sample = sorted((root / "samples" / "zendesk").glob("*.json"))
    payloads = [p for p in sample if not p.name.endswith(".expected.json")]
    expected = 0
    for p in payloads:
        want = json.loads(p.with_name(p.name[:-len(".json")] + ".expected.json").read_text())
        status, body, _ = post(base + "/api/webhooks/zendesk", p.read_bytes(), ctype="application/json")
        if want:
            assert status == 200 and body["accepted"] == len(want), (p.name, body)
            expected += len(want)
    assert post(base + "/api/webhooks/nope", b"{}", ctype="application/json")[0] == 404
    status, body, _ = post(base + "/api/webhooks/zendesk", b"not json", ctype="application/json")
    assert status == 400 and body["error"]
    # A payload no rule maps is answered 400 and kept in the dead-letter topic, never dropped silently.
    unknown = json.dumps({"type": "zen:event-type:ticket.brand_new_thing", "id": "u1"}).encode()
    status, body, _ = post(base + "/api/webhooks/zendesk", unknown, ctype="application/json")
    assert status == 400 and "mapping_problem" in body["error"] and "not a zendesk webhook" in body["error"], body
    (letter,) = read_dead_letters(env, 1)
    assert letter.reason == "mapping_problem" and letter.stage == "webhook:zendesk"
    assert deadletter.original_bytes(letter) == unknown
    env.wait_consumed(expected, 60)
