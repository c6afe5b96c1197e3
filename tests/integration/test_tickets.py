"""Helpdesk gauges change as time passes with no new events (the clock is injected, nothing sleeps)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from agents.oracle import compute
from streams.events import Event, decode_line
from tests.integration.conftest import Env, write_jsonl

pytestmark = pytest.mark.integration

YAML = """
fcr_window: 1d
defaults:
  ticket_sla:
    urgent: {first_response: 1h, resolution: 4h}
    normal: {first_response: 8h, resolution: 3d}
  backlog_age: 24h
queues:
  office:
    business_hours:
      timezone: Europe/Berlin
      hours: {weekdays: ["09:00-12:00", "13:00-18:00"]}
      holidays: ["2026-12-25"]
custom_metrics:
  counters:
    complaints: {event: ticket.created, where: [{field: tags, contains: complaint}]}
  ratios:
    complaint_rate: {numerator: complaints, denominator: tickets_created}
"""


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def test_open_backlog_and_sla_gauges_move_with_time(env: Env, tmp_path: Path) -> None:
    env.config = tmp_path / "q.yaml"
    env.config.write_text(YAML)
    now = time.time()
    t0 = now - 600
    lines = [
        # urgent, unanswered: its 1 h first-response clock runs out at t0 + 1 h
        {"event_id": "c1", "type": "ticket.created", "ts": t0, "ticket_id": "T1", "queue": "desk", "channel": "email",
         "priority": "urgent", "tags": ["complaint"]},
        # normal, answered at once, then waiting on the customer: its resolution clock is paused
        {"event_id": "c2", "type": "ticket.created", "ts": t0 + 1, "ticket_id": "T2", "queue": "desk",
         "channel": "chat"},
        {"event_id": "r2", "type": "ticket.replied", "ts": t0 + 60, "ticket_id": "T2", "author": "agent"},
        {"event_id": "p2", "type": "ticket.status_changed", "ts": t0 + 61, "ticket_id": "T2", "status": "pending"},
        # solved within target after one reply
        {"event_id": "c3", "type": "ticket.created", "ts": t0 + 2, "ticket_id": "T3", "queue": "desk",
         "channel": "web", "priority": "urgent"},
        {"event_id": "r3", "type": "ticket.replied", "ts": t0 + 120, "ticket_id": "T3", "author": "agent"},
        {"event_id": "s3", "type": "ticket.status_changed", "ts": t0 + 300, "ticket_id": "T3", "status": "solved"},
        {"event_id": "x3", "type": "ticket.escalated", "ts": t0 + 200, "ticket_id": "T3"},
        {"event_id": "c4", "type": "ticket.created", "ts": t0 + 3, "ticket_id": "T4", "queue": "office",
         "channel": "phone"},
        {"event_id": "srv", "type": "survey.response", "ts": t0 + 400, "survey_id": "S1", "kind": "nps", "score": 10,
         "queue": "desk", "agent_id": "ann"},
        {"event_id": "k1", "type": "kpi.sample", "ts": t0, "name": "churn_rate", "value": 0.031},
    ]
    lines += [lines[0], lines[3]]  # duplicates
    env.start_worker()
    assert env.ccmon("send", str(write_jsonl(tmp_path / "t.jsonl", lines))).returncode == 0
    env.wait_consumed(len(lines))
    events = [decode_line(json.dumps(e).encode()) for e in lines]
    assert all(isinstance(e, Event) for e in events)
    cfg = env.settings.metrics_config()

    seen = {}
    for label, at_ms in [("now", round(now * 1000)), ("t0+50m", round((t0 + 3000) * 1000)),
                         ("+2h", round((now + 7200) * 1000)), ("+26h", round((now + 26 * 3600) * 1000))]:
        res = env.ccmon("metrics", "--json", "--at", iso(at_ms))
        assert res.returncode == 0, res.stderr.decode()
        snap = json.loads(res.stdout)
        assert snap == compute(events, cfg, at_ms, env.partitions), label  # type: ignore[arg-type]
        seen[label] = snap["queues"]["desk"]["now"]
        if label == "now":
            w = snap["queues"]["desk"]["15m"]
            assert w["tickets_created"] == 3 and w["tickets_solved"] == 1 and w["escalation_rate"] == 1 / 3
            assert w["frt_sla"] == 1.0 and w["resolution_sla"] == 1.0 and w["nps"] == 100.0
            assert w["custom"] == {"complaints": 1, "complaint_rate": 1 / 3}
            assert snap["kpis"] == {"churn_rate": 0.031}
    assert [seen[k]["tickets_open"] for k in seen] == [2, 2, 2, 2]
    # T1's 1 h first-response clock: 80% used at t0 + 48 min, run out at t0 + 1 h; T2's clock is paused.
    assert [seen[k]["sla_due_soon"] for k in seen] == [0, 1, 0, 0]
    assert [seen[k]["sla_breached_open"] for k in seen] == [0, 0, 1, 1]
    assert [seen[k]["backlog"] for k in seen] == [0, 0, 0, 2]  # both open tickets are older than 24 h by then
    assert seen["now"]["tickets_open_by_status"] == {"open": 1, "pending": 1}
