"""Prometheus exposition: metric families built at scrape time from the Redis snapshot.

No per-event ``Gauge.set``: every worker renders the same global view from Redis,
so any number of workers can be scraped without double counting.
"""

from __future__ import annotations

from typing import Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from ccmon import __version__

WINDOW_COUNTS = ("offered", "answered", "answered_in_sl", "abandoned", "short_abandoned", "timed_out", "blocked",
                 "handled")
# snapshot field -> (metric, help); a None value (empty denominator) yields no sample.
WINDOW_VALUES = {
    "service_level": ("ccmon_service_level_ratio", "Service level by the queue's formula."),
    "abandon_rate": ("ccmon_abandon_ratio", "(abandoned - short) / (answered + abandoned + timed_out - short)."),
    "blocking_rate": ("ccmon_blocking_ratio", "blocked / (offered + blocked)."),
    "asa_seconds": ("ccmon_asa_seconds", "Mean wait of answered calls."),
    "max_wait_seconds": ("ccmon_max_wait_seconds", "Longest wait of a call that left the queue."),
    "aht_seconds": ("ccmon_aht_seconds", "(talk + after-call work) / handled."),
    "avg_talk_seconds": ("ccmon_avg_talk_seconds", "Mean talk time of handled calls."),
    "avg_hold_seconds": ("ccmon_avg_hold_seconds", "Mean hold time of handled calls."),
    "avg_acw_seconds": ("ccmon_avg_acw_seconds", "Mean after-call work per completed wrap-up."),
    "first_response_seconds_avg": ("ccmon_first_response_seconds_avg", "Mean SLA-clock time to the first public "
                                   "agent reply."),
    "resolution_seconds_avg": ("ccmon_resolution_seconds_avg", "Mean SLA-clock time to the first solve."),
    "frt_sla": ("ccmon_frt_sla_ratio", "First responses within target / all that were due."),
    "resolution_sla": ("ccmon_resolution_sla_ratio", "Resolutions within target / all that were due."),
    "reopen_rate": ("ccmon_reopen_ratio", "Reopened / solved tickets."),
    "escalation_rate": ("ccmon_escalation_ratio", "Escalated / created tickets."),
    "fcr_rate": ("ccmon_fcr_ratio", "Solved tickets resolved on first contact."),
}
NOW_VALUES = {
    "calls_waiting": ("ccmon_calls_waiting", "Calls offered and not yet out of the queue."),
    "longest_wait_seconds": ("ccmon_longest_wait_seconds", "How long the oldest waiting call has waited."),
    "oldest_waiting_since": ("ccmon_oldest_waiting_timestamp_seconds", "When the oldest waiting call was offered."),
    "arrival_rate_per_hour": ("ccmon_arrival_rate_per_hour", "Offers in the last 15 minutes, per hour."),
    "predicted_service_level": ("ccmon_predicted_service_level_ratio", "Erlang C service level at current staffing."),
    "predicted_asa_seconds": ("ccmon_predicted_asa_seconds", "Erlang C ASA at current staffing."),
    "agents_required": ("ccmon_agents_required", "Fewest agents that meet the SL target (Erlang C)."),
    "sl_target": ("ccmon_service_level_target_ratio", "The queue's configured service-level target."),
    "asa_target_seconds": ("ccmon_asa_target_seconds", "The queue's configured ASA target."),
    "tickets_open": ("ccmon_tickets_open", "Tickets not solved or closed."),
    "backlog": ("ccmon_tickets_backlog", "Open tickets older than backlog_age."),
    "sla_breached_open": ("ccmon_tickets_sla_breached", "Open tickets with an SLA clock run out."),
    "sla_due_soon": ("ccmon_tickets_sla_due_soon", "Open tickets past 80% of a running SLA clock."),
}
AGENT_STATES = ("available", "on_call", "wrap_up", "away", "staffed")


class SnapshotCollector:
    """A one-shot collector over an already-read snapshot and worker status."""

    def __init__(self, snapshot: Mapping[str, object], status: Mapping[str, object]):
        self.snapshot = snapshot
        self.status = status

    def collect(self) -> Iterator[Metric]:
        """Yield every ccmon metric family."""
        calls = GaugeMetricFamily(
            "ccmon_window_calls", "Calls in the window by outcome (event time).", labels=["queue", "window", "outcome"]
        )
        values = {k: GaugeMetricFamily(n, h, labels=["queue", "window"]) for k, (n, h) in WINDOW_VALUES.items()}
        now = {k: GaugeMetricFamily(n, h, labels=["queue"]) for k, (n, h) in NOW_VALUES.items()}
        agents = GaugeMetricFamily("ccmon_agents", "Agents per queue by current state (staffed: all but offline).",
                                   labels=["queue", "state"])
        occupancy = GaugeMetricFamily("ccmon_occupancy_ratio", "(on call + wrap-up) / (available + on call + "
                                      "wrap-up) time over the window.", labels=["queue", "window"])
        queues: Mapping[str, Mapping[str, Mapping[str, object]]] = self.snapshot.get("queues", {})  # type: ignore[assignment]
        for queue, view in queues.items():
            n = view["now"]
            for key, fam in now.items():
                if n.get(key) is not None:
                    fam.add_metric([queue], float(n[key]))  # type: ignore[arg-type]
            for st in AGENT_STATES:
                agents.add_metric([queue, st], float(n["agents_" + st]))  # type: ignore[arg-type]
            for key, v in n.items():
                if key.startswith("occupancy_") and v is not None:
                    occupancy.add_metric([queue, key[len("occupancy_"):]], float(v))  # type: ignore[arg-type]
            for window, w in view.items():
                if window == "now":
                    continue
                for name in WINDOW_COUNTS:
                    calls.add_metric([queue, window, name], float(w[name]))  # type: ignore[arg-type]
                for key, fam in values.items():
                    if w[key] is not None:
                        fam.add_metric([queue, window], float(w[key]))  # type: ignore[arg-type]
        tickets = GaugeMetricFamily("ccmon_window_tickets_created", "Tickets created in the window.",
                                    labels=["queue", "window"])
        ticket_kinds = GaugeMetricFamily("ccmon_window_tickets", "Tickets solved, reopened and escalated in the "
                                         "window.", labels=["queue", "window", "kind"])
        responses = GaugeMetricFamily("ccmon_window_survey_responses", "Survey responses in the window, by kind.",
                                      labels=["queue", "window", "kind"])
        survey = {
            "csat": GaugeMetricFamily("ccmon_csat_ratio", "CSAT responses scoring 4-5 / all CSAT responses.",
                                      labels=["queue", "window"]),
            "nps": GaugeMetricFamily("ccmon_nps_score", "% promoters (9-10) - % detractors (0-6), -100..100.",
                                     labels=["queue", "window"]),
            "ces_avg": GaugeMetricFamily("ccmon_ces_average_score", "Mean CES score (1-7).", labels=["queue", "window"]),
        }
        agent_survey = {
            "csat": GaugeMetricFamily("ccmon_agent_csat_ratio", "CSAT per agent.", labels=["queue", "window", "agent"]),
            "nps": GaugeMetricFamily("ccmon_agent_nps_score", "NPS per agent.", labels=["queue", "window", "agent"]),
            "ces_avg": GaugeMetricFamily("ccmon_agent_ces_average_score", "CES per agent.",
                                         labels=["queue", "window", "agent"]),
        }
        custom_count = GaugeMetricFamily("ccmon_custom_count", "A user-defined counter over the window "
                                         "(queue empty: all queues).", labels=["queue", "window", "name"])
        custom_ratio = GaugeMetricFamily("ccmon_custom_ratio", "A user-defined ratio over the window "
                                         "(queue empty: all queues).", labels=["queue", "window", "name"])
        kpi = GaugeMetricFamily("ccmon_kpi", "The latest kpi.sample value (queue empty: no queue).",
                                labels=["name", "queue"])
        views = [(q, v) for q, v in queues.items()] + [("", self.snapshot.get("all", {}))]  # type: ignore[list-item]
        for queue, view in views:
            for window, w in view.items():
                if window == "now":
                    continue
                if queue:
                    tickets.add_metric([queue, window], float(w["tickets_created"]))  # type: ignore[arg-type]
                    for kind in ("solved", "reopened", "escalated"):
                        ticket_kinds.add_metric([queue, window, kind], float(w["tickets_" + kind]))  # type: ignore[arg-type]
                    for kind, n in w["survey_responses"].items():  # type: ignore[union-attr]
                        responses.add_metric([queue, window, kind], float(n))
                    for key, fam in survey.items():
                        if w[key] is not None:
                            fam.add_metric([queue, window], float(w[key]))  # type: ignore[arg-type]
                    for agent, a in w["surveys_by_agent"].items():  # type: ignore[union-attr]
                        for key, fam in agent_survey.items():
                            if a[key] is not None:
                                fam.add_metric([queue, window, agent], float(a[key]))
                for name, value in w["custom"].items():  # type: ignore[union-attr]
                    if value is None:
                        continue
                    is_count = isinstance(value, int) and not isinstance(value, bool)
                    (custom_count if is_count else custom_ratio).add_metric([queue, window, name], float(value))
            for name, value in (view.get("now", {}) or {}).get("kpis", {}).items():  # type: ignore[union-attr]
                kpi.add_metric([name, queue], float(value))
        for name, value in self.snapshot.get("kpis", {}).items():  # type: ignore[union-attr]
            kpi.add_metric([name, ""], float(value))
        yield calls
        yield from (tickets, ticket_kinds, responses, *survey.values(), *agent_survey.values(), custom_count, custom_ratio, kpi)
        yield from values.values()
        yield from now.values()
        yield agents
        yield occupancy

        stats: Mapping[str, int] = self.status.get("stats", {})  # type: ignore[assignment]
        consumed = CounterMetricFamily("ccmon_events_consumed", "Events decoded from the topics (valid or not).")
        consumed.add_metric([], stats.get("consumed", 0))
        applied = CounterMetricFamily("ccmon_events_applied", "Valid events applied, by domain.", labels=["domain"])
        dups = CounterMetricFamily("ccmon_events_duplicate", "Events ignored as repeated event_id.", labels=["domain"])
        rejected = CounterMetricFamily(
            "ccmon_events_rejected", "Events sent to the dead-letter topic, by reason.", labels=["reason"]
        )
        late = CounterMetricFamily("ccmon_events_late", "Events older than stream time minus the lateness.")
        late.add_metric([], stats.get("rejected:late", 0))
        invalid = CounterMetricFamily("ccmon_events_invalid_transition", "Events that broke an entity's path.")
        invalid.add_metric([], stats.get("rejected:invalid_transition", 0))
        expired = CounterMetricFamily("ccmon_calls_expired", "Calls never seen to finish within the max age.")
        expired.add_metric([], stats.get("expired:calls", 0))
        for key, value in sorted(stats.items()):
            kind, _, label = key.partition(":")
            if kind == "applied":
                applied.add_metric([label], value)
            elif kind == "duplicates":
                dups.add_metric([label], value)
            elif kind == "rejected":
                rejected.add_metric([label], value)
        lag = GaugeMetricFamily(
            "ccmon_consumer_lag_messages", "Messages in the log not yet committed to Redis.", labels=["topic", "partition"]
        )
        for tp, value in sorted(self.status.get("lag", {}).items()):  # type: ignore[union-attr]
            topic, _, partition = tp.rpartition(":")
            lag.add_metric([topic, partition], float(value))
        last = GaugeMetricFamily("ccmon_last_commit_timestamp_seconds", "When a batch was last committed to Redis.")
        if "last_commit_ms" in stats:
            last.add_metric([], stats["last_commit_ms"] / 1000)
        info = InfoMetricFamily("ccmon_build", "ccmon build information.")
        info.add_metric([], {"version": __version__})
        yield from (consumed, applied, dups, rejected, late, invalid, expired, lag, last, info)


def render(snapshot: Mapping[str, object], status: Mapping[str, object], accept: str | None) -> tuple[bytes, str]:
    """The exposition body and content type (OpenMetrics when the scraper asks for it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, status))  # type: ignore[arg-type]
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
