"""Label cardinality: a sender naming 2 x CCMON_MAX_QUEUES queues gets at most the cap, the rest count as ``other``.

Two real workers share the partitions (and the admitted set in Redis), one of them restarts half-way, and the
result must equal the oracle given the admitted set; /metrics must hold at most the cap's queues. The same holds
for the other labels a sender names: survey agents (CCMON_MAX_AGENTS), ticket channels (CCMON_MAX_CHANNELS) and
KPI names (CCMON_MAX_KPIS, whose refused samples are dead-lettered).
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.oracle import compute
from ccmon.services import stop
from streams.events import Event, decode_line
from tests.integration.conftest import Env, write_jsonl
from tests.integration.test_bad_input import read_dead_letters
from tests.reliability.stack import record, sized

pytestmark = pytest.mark.integration

CONFIGURED = "sales"
QUEUE_YAML = f"queues:\n  {CONFIGURED}: {{sl_threshold_seconds: 30}}\n"


def events_for(names: list[str], start: float, tag: str) -> list[dict]:
    """Per queue name: two answered calls and an abandoned one, an agent serving it and ``sales``, a ticket and
    a survey; all within a few minutes before now."""
    out: list[dict] = []
    for i, q in enumerate(names):
        t = start + i % 120
        for k, (wait, end) in enumerate(((5, "answered"), (40, "answered"), (12, "abandoned"))):
            cid = f"{tag}c{i}-{k}"
            out.append({"event_id": f"{cid}o", "type": "call.offered", "ts": t, "call_id": cid, "queue": q})
            extra = {"agent_id": f"{tag}a{i}"} if end == "answered" else {}
            out.append({"event_id": f"{cid}e", "type": f"call.{end}", "ts": t + wait, "call_id": cid, "queue": q,
                        **extra})
        out.append({"event_id": f"{tag}a{i}s", "type": "agent.state", "ts": t, "agent_id": f"{tag}a{i}",
                    "state": "available", "queues": list(dict.fromkeys([q, CONFIGURED]))})
        out.append({"event_id": f"{tag}t{i}", "type": "ticket.created", "ts": t + 1, "ticket_id": f"{tag}t{i}",
                    "queue": q, "channel": "email"})
        out.append({"event_id": f"{tag}s{i}", "type": "survey.response", "ts": t + 2, "survey_id": f"{tag}s{i}",
                    "kind": "csat", "score": 1 + i % 5, "queue": q, "agent_id": f"{tag}a{i}"})
    return out


def send(env: Env, lines: list[dict], name: str) -> None:
    res = env.ccmon("send", str(write_jsonl(env.tmp / name, lines)), timeout=120)
    assert res.returncode == 0, res.stderr.decode() + res.stdout.decode()


def metric_queues(base: str) -> tuple[set[str], dict[str, float]]:
    """Every ``queue`` label value on /metrics, and the unlabelled self-metrics."""
    text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
    queues: set[str] = set()
    plain: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if "queue" in s.labels:
                queues.add(s.labels["queue"])
            elif not s.labels:
                plain[s.name] = s.value
    return queues, plain


def test_queue_names_beyond_the_cap_count_as_other(env: Env) -> None:
    cap = int(sized(50, 1000))
    env.config = env.tmp / "queues.yaml"
    env.config.write_text(QUEUE_YAML)
    started = time.monotonic()
    now = time.time()
    names = [f"spam{i:05d}" for i in range(2 * cap)]
    first = events_for(names[: cap * 3 // 2], now - 400, "x")  # more names than the cap, in a scrambled order
    first = first[1::2] + first[::2]
    a, _ = env.start_worker("a", max_queues=str(cap))
    _, base = env.start_worker("b", max_queues=str(cap))  # one group: each admits from its partitions' events
    send(env, first, "first.jsonl")
    env.wait_consumed(len(first))
    admitted = {m.decode() for m in env.redis().smembers("ccmon:admitted")}
    assert len(admitted) == cap and admitted <= set(names)

    # A restarted worker learns the full set from Redis: earlier names keep their place, new ones go to other.
    stop(a)
    env.start_worker("c", max_queues=str(cap))
    second = events_for(names[cap // 2:], now - 300, "y") + events_for([CONFIGURED, "other"], now - 290, "z")
    send(env, second, "second.jsonl")
    lines = first + second
    env.wait_consumed(len(lines))
    assert {m.decode() for m in env.redis().smembers("ccmon:admitted")} == admitted

    keep = {CONFIGURED, "other", *admitted}
    capped = sum(1 for e in lines if e.get("queue", CONFIGURED) not in keep or any(q not in keep for q in e.get("queues", ())))
    assert env.stats().get("queues_capped") == capped > 0

    queues, plain = metric_queues(base)
    assert queues == keep, f"series for {sorted(queues - keep)[:5]} (not admitted) or missing {sorted(keep - queues)[:5]}"
    assert plain["ccmon_queues_capped_events_total"] == capped
    assert plain["ccmon_queues"] == len(keep)
    refused = set(names) - admitted
    leaked = [k for k in env.redis().scan_iter(count=1000) if refused & set(k.decode().split(":"))]
    assert not leaked, f"Redis keys name refused queues: {leaked[:5]}"

    res = env.ccmon("metrics", "--json")
    assert res.returncode == 0, res.stderr.decode()
    snap = json.loads(res.stdout)
    now_ms = round(datetime.fromisoformat(snap["generated_at"].replace("Z", "+00:00")).timestamp() * 1000)
    events = [decode_line(json.dumps(e).encode()) for e in lines]
    assert all(isinstance(e, Event) for e in events)
    expected = compute(events, env.settings.metrics_config(), now_ms, env.partitions, admitted=admitted)  # type: ignore[arg-type]
    assert snap == expected
    assert snap["queues"]["other"]["1h"]["offered"] == sum(
        1 for e in lines if e["type"] == "call.offered" and e["queue"] not in keep) + 3  # + the literal "other"
    record("queue_cap", max_queues=cap, queue_names_sent=len(names) + 2, events=len(lines), capped_events=capped,
           metric_queues=len(queues), lost_or_duplicated=0, seconds=round(time.monotonic() - started, 1))


def test_agents_channels_and_kpi_names_beyond_their_caps(env: Env) -> None:
    """The other labels a sender controls: survey agents and ticket channels beyond their cap count as ``other``,
    KPI names beyond theirs are dead-lettered with a reason; /metrics and Redis hold at most the caps."""
    caps = {"agents": int(sized(20, 5000)), "channels": int(sized(5, 100)), "kpis": int(sized(10, 500))}
    env.config = env.tmp / "queues.yaml"
    env.config.write_text(QUEUE_YAML)
    started = time.monotonic()
    now = time.time()
    agents = [f"spam-agent{i}" for i in range(2 * caps["agents"])]
    channels = [f"spam-channel{i}" for i in range(2 * caps["channels"])]
    kpis = [f"spam_kpi{i}" for i in range(2 * caps["kpis"])] + ["other"]
    lines: list[dict] = []
    for i, a in enumerate(agents):
        lines.append({"event_id": f"s{i}", "type": "survey.response", "ts": now - 200 + i % 60, "survey_id": f"s{i}",
                      "kind": "csat", "score": 1 + i % 5, "queue": CONFIGURED, "agent_id": a})
    for i, ch in enumerate(channels * 2):
        lines.append({"event_id": f"t{i}", "type": "ticket.created", "ts": now - 200 + i % 60, "ticket_id": f"t{i}",
                      "queue": CONFIGURED, "channel": ch})
    for i, k in enumerate(kpis * 2):
        lines.append({"event_id": f"k{i}", "type": "kpi.sample", "ts": now - 300 + i % 250, "name": k,
                      "value": (i + 1) / 4, **({"queue": CONFIGURED} if i % 2 else {})})
    _, base = env.start_worker("a", max_agents=str(caps["agents"]), max_channels=str(caps["channels"]),
                               max_kpis=str(caps["kpis"]))
    send(env, lines, "labels.jsonl")
    env.wait_consumed(len(lines))

    r = env.redis()
    admitted = {k: {m.decode() for m in r.smembers(f"ccmon:admitted:{k}")} for k in caps}
    for kind, sent in (("agents", agents), ("channels", channels), ("kpis", kpis)):
        assert len(admitted[kind]) == caps[kind] and admitted[kind] <= set(sent), kind
    keep = {k: {"other", *v} for k, v in admitted.items()}
    stats = env.stats()
    capped_agents = sum(1 for e in lines if e["type"] == "survey.response" and e["agent_id"] not in keep["agents"])
    capped_channels = sum(1 for e in lines if e["type"] == "ticket.created" and e["channel"] not in keep["channels"])
    refused = [e for e in lines if e["type"] == "kpi.sample" and e["name"] not in keep["kpis"]]
    assert (stats.get("agents_capped"), stats.get("channels_capped"), stats.get("rejected:too_many_kpis")) == (
        capped_agents, capped_channels, len(refused)) and capped_agents and capped_channels and refused

    dead = read_dead_letters(env, len(refused))
    assert {d.reason for d in dead} == {"too_many_kpis"} and all("CCMON_MAX_KPIS" in d.detail for d in dead)
    assert sorted(json.loads(d.original or "")["event_id"] for d in dead) == sorted(e["event_id"] for e in refused)

    text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
    seen: dict[str, set[str]] = {"agents": set(), "kpis": set()}
    plain: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if "agent" in s.labels:
                seen["agents"].add(s.labels["agent"])
            if family.name == "ccmon_kpi":
                seen["kpis"].add(s.labels["name"])
            if not s.labels:
                plain[s.name] = s.value
    assert seen["agents"] == keep["agents"], f"agent series not admitted: {sorted(seen['agents'] - keep['agents'])[:5]}"
    assert seen["kpis"] == keep["kpis"], f"KPI series not admitted: {sorted(seen['kpis'] - keep['kpis'])[:5]}"
    assert (plain["ccmon_agents_capped_events_total"], plain["ccmon_channels_capped_events_total"]) == (
        capped_agents, capped_channels)
    refused_names = {e["name"] for e in refused}
    leaked = [k for k in r.scan_iter(count=1000) if refused_names & set(k.decode().split(":"))]
    assert not leaked, f"Redis keys name refused KPIs: {leaked[:5]}"

    res = env.ccmon("metrics", "--json")
    assert res.returncode == 0, res.stderr.decode()
    snap = json.loads(res.stdout)
    assert set(snap["queues"][CONFIGURED]["today"]["tickets_created_by_channel"]) == keep["channels"]
    now_ms = round(datetime.fromisoformat(snap["generated_at"].replace("Z", "+00:00")).timestamp() * 1000)
    events = [decode_line(json.dumps(e).encode()) for e in lines]
    assert all(isinstance(e, Event) for e in events)
    expected = compute(events, env.settings.metrics_config(), now_ms, env.partitions,  # type: ignore[arg-type]
                       admitted={"queues": set(), **admitted})
    assert snap == expected
    record("label_caps", caps=caps, agents_sent=len(agents), channels_sent=len(channels), kpi_names_sent=len(kpis),
           events=len(lines), agents_capped=capped_agents, channels_capped=capped_channels,
           kpi_samples_dead_lettered=len(refused), lost_or_duplicated=0, seconds=round(time.monotonic() - started, 1))
