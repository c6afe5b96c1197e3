"""Prometheus exposition: metric families built at scrape time from the Redis snapshot.

No per-event ``Gauge.set``: ``/metrics`` on every worker renders the same global
view from Redis, so one scrape target (any worker) gives each series once.
``/metrics/worker`` is the other endpoint: this process alone (resident memory,
CPU, partitions), scraped on every replica for liveness.
"""

from __future__ import annotations

import platform
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional, Union

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics import exposition as om_exposition  # the module; ``openmetrics`` args are flags
from prometheus_client.utils import floatToGoString

from agents import selfstats
from agents.snapshot import WAIT_OUTCOMES, histogram
from ccmon import __version__, gcstats
from ccmon.gcpause import gc_paused

if TYPE_CHECKING:
    from ccmon.store import Store

View = Mapping[str, object]

WINDOW_COUNTS = ("offered", "answered", "answered_in_sl", "abandoned", "short_abandoned", "timed_out", "blocked",
                 "handled")
TICKET_KINDS = ("created", "solved", "reopened", "escalated")
# Windowed gauges {queue, window}: snapshot field -> (metric, help). None (empty denominator) -> no sample.
WINDOW_VALUES: dict[str, tuple[str, str]] = {
    "service_level": ("ccmon_service_level_ratio", "Service level by the queue's formula."),
    "abandon_rate": ("ccmon_abandon_ratio", "(abandoned - short) / (answered + abandoned + timed_out - short)."),
    "blocking_rate": ("ccmon_blocking_ratio", "blocked / (offered + blocked)."),
    "asa_seconds": ("ccmon_asa_seconds", "Mean wait of answered calls."),
    "max_wait_seconds": ("ccmon_max_wait_seconds", "Longest wait of a call that left the queue."),
    "aht_seconds": ("ccmon_aht_seconds", "(talk + after-call work) / handled."),
    "avg_talk_seconds": ("ccmon_talk_average_seconds", "Mean talk time of handled calls."),
    "avg_hold_seconds": ("ccmon_hold_average_seconds", "Mean hold time of handled calls."),
    "avg_acw_seconds": ("ccmon_after_call_work_average_seconds", "Mean after-call work per completed wrap-up."),
    "first_response_seconds_avg": ("ccmon_ticket_first_response_average_seconds",
                                   "Mean SLA-clock time to the first public agent reply."),
    "resolution_seconds_avg": ("ccmon_ticket_resolution_average_seconds", "Mean SLA-clock time to the first solve."),
    "frt_sla": ("ccmon_ticket_first_response_sla_ratio", "First responses within target / all that were due."),
    "resolution_sla": ("ccmon_ticket_resolution_sla_ratio", "Resolutions within target / all that were due."),
    "reopen_rate": ("ccmon_ticket_reopen_ratio", "Reopened / solved tickets."),
    "escalation_rate": ("ccmon_ticket_escalation_ratio", "Escalated / created tickets."),
    "fcr_rate": ("ccmon_ticket_fcr_ratio", "Solved tickets resolved on first contact."),
    "csat": ("ccmon_csat_ratio", "CSAT responses scoring 4-5 / all CSAT responses."),
    "nps": ("ccmon_nps_score", "% promoters (9-10) - % detractors (0-6), -100..100."),
    "ces_avg": ("ccmon_ces_average_score", "Mean CES score (1-7)."),
}
AGENT_SURVEY = {
    "csat": ("ccmon_agent_csat_ratio", "CSAT per agent."),
    "nps": ("ccmon_agent_nps_score", "NPS per agent."),
    "ces_avg": ("ccmon_agent_ces_average_score", "CES per agent."),
}
# Point-in-time gauges {queue}: snapshot field -> (metric, help, factor).
NOW_VALUES: dict[str, tuple[str, str, float]] = {
    "calls_waiting": ("ccmon_calls_waiting", "Calls offered and not yet out of the queue.", 1),
    "longest_wait_seconds": ("ccmon_longest_wait_seconds", "How long the oldest waiting call has waited.", 1),
    "oldest_waiting_since": ("ccmon_oldest_waiting_timestamp_seconds", "When the oldest waiting call was offered.", 1),
    "arrival_rate_per_hour": ("ccmon_arrival_rate_per_second", "Offers in the last 15 minutes, per second "
                              "(Erlang C input).", 1 / 3600),
    "predicted_service_level": ("ccmon_predicted_service_level_ratio", "Erlang C service level at current "
                                "staffing.", 1),
    "predicted_asa_seconds": ("ccmon_predicted_asa_seconds", "Erlang C ASA at current staffing.", 1),
    "agents_required": ("ccmon_agents_required", "Fewest agents that meet the SL target (Erlang C).", 1),
    "sl_target": ("ccmon_service_level_target_ratio", "The queue's configured service-level target.", 1),
    "sl_threshold_seconds": ("ccmon_service_level_threshold_seconds", "The queue's configured SL threshold T.", 1),
    "asa_target_seconds": ("ccmon_asa_target_seconds", "The queue's configured ASA target.", 1),
    "tickets_open": ("ccmon_tickets_open", "Tickets not solved or closed.", 1),
    "backlog": ("ccmon_tickets_backlog", "Open tickets older than backlog_age.", 1),
    "sla_breached_open": ("ccmon_tickets_sla_breached", "Open tickets with an SLA clock run out.", 1),
    "sla_due_soon": ("ccmon_tickets_sla_due_soon", "Open tickets past 80% of a running SLA clock.", 1),
}
AGENT_STATES = ("available", "on_call", "wrap_up", "away", "staffed")
# Label caps that count refused values as "other" (agents.core.LabelCap): kind -> (setting, the label's meaning).
# Refused KPI names are dead-lettered instead (ccmon_events_rejected_total{reason="too_many_kpis"}).
CAPPED = {"queues": ("CCMON_MAX_QUEUES", "queue"), "agents": ("CCMON_MAX_AGENTS", "survey's agent"),
          "channels": ("CCMON_MAX_CHANNELS", "ticket's channel")}
# Lifetime counters {queue}: totals field -> (metric without _total, help, factor).
TOTALS: dict[str, tuple[str, str, float]] = {
    "offered": ("ccmon_calls_offered", "Calls offered (call.offered).", 1),
    "answered": ("ccmon_calls_answered", "Calls answered.", 1),
    "answered_in_sl": ("ccmon_calls_answered_in_sl", "Calls answered within the SL threshold T.", 1),
    "abandoned": ("ccmon_calls_abandoned", "Calls abandoned.", 1),
    "short_abandoned": ("ccmon_calls_short_abandoned", "Calls abandoned within the short-abandon threshold.", 1),
    "timed_out": ("ccmon_calls_timed_out", "Calls that timed out of the queue.", 1),
    "handled": ("ccmon_calls_handled", "Answered calls whose talk ended.", 1),
    "talk_seconds": ("ccmon_call_talk_seconds", "Talk time of handled calls.", 1),
    "hold_seconds": ("ccmon_call_hold_seconds", "Hold time of handled calls.", 1),
    "acw_seconds": ("ccmon_call_after_call_work_seconds", "After-call work of completed wrap-ups.", 1),
    "wrapups": ("ccmon_call_wrapups", "Completed wrap-ups.", 1),
    "tickets_created": ("ccmon_tickets_created", "Tickets created.", 1),
    "tickets_solved": ("ccmon_tickets_solved", "Moves of tickets into solved or closed.", 1),
    "tickets_reopened": ("ccmon_tickets_reopened", "Tickets reopened.", 1),
    "tickets_escalated": ("ccmon_tickets_escalated", "Tickets escalated (first escalation only).", 1),
}


def _hist_buckets(h: Mapping[str, object]) -> list[tuple[str, float]]:
    return [(le, float(n)) for le, n in h["buckets"].items()]  # type: ignore[union-attr]


class SnapshotCollector:
    """A one-shot collector over an already-read snapshot and worker status."""

    def __init__(self, snapshot: View, status: View):
        self.snapshot = snapshot
        self.status = status

    def collect(self) -> Iterator[Metric]:
        """Yield every ccmon metric family of the global view."""
        queues: Mapping[str, Mapping[str, View]] = self.snapshot.get("queues", {})  # type: ignore[assignment]
        yield from self._totals(queues)
        yield from self._windows(queues)
        yield from self._now(queues)
        yield from self._self_metrics(len(queues))

    def _totals(self, queues: Mapping[str, Mapping[str, View]]) -> Iterator[Metric]:
        counters = {k: CounterMetricFamily(n, h, labels=["queue"]) for k, (n, h, _) in TOTALS.items()}
        blocked = CounterMetricFamily("ccmon_calls_blocked", "Calls blocked before queueing, by reason.",
                                      labels=["queue", "reason"])
        responses = CounterMetricFamily("ccmon_survey_responses", "Survey responses, by kind.", labels=["queue", "kind"])
        wait = HistogramMetricFamily("ccmon_call_wait_seconds", "Wait of calls that left the queue, by outcome; "
                                     "the buckets include the queue's SL and short-abandon thresholds.",
                                     labels=["queue", "outcome"])
        frt = HistogramMetricFamily("ccmon_ticket_first_response_seconds", "SLA-clock time to the first public agent "
                                    "reply; the buckets include the queue's first-response targets.", labels=["queue"])
        for queue, view in queues.items():
            t = view["totals"]
            for key, (_, _, factor) in TOTALS.items():
                counters[key].add_metric([queue], float(t[key]) * factor)  # type: ignore[arg-type]
            for reason, n in t["blocked_by_reason"].items():  # type: ignore[union-attr]
                blocked.add_metric([queue, reason], float(n))
            for kind, n in t["survey_responses"].items():  # type: ignore[union-attr]
                responses.add_metric([queue, kind], float(n))
            waits: Mapping[str, View] = t["wait_seconds"]  # type: ignore[assignment]
            if t["offered"] or any(waits[o]["count"] for o in WAIT_OUTCOMES):
                for outcome in WAIT_OUTCOMES:
                    h = waits[outcome]
                    wait.add_metric([queue, outcome], _hist_buckets(h), float(h["sum"]))  # type: ignore[arg-type]
            h = t["first_response_seconds"]  # type: ignore[assignment]
            if t["tickets_created"] or h["count"]:  # type: ignore[index]
                frt.add_metric([queue], _hist_buckets(h), float(h["sum"]))  # type: ignore[arg-type,index]
        yield from counters.values()
        yield from (blocked, responses, wait, frt)

    def _windows(self, queues: Mapping[str, Mapping[str, View]]) -> Iterator[Metric]:
        calls = GaugeMetricFamily("ccmon_window_calls", "Calls in the window by outcome (event time).",
                                  labels=["queue", "window", "outcome"])
        tickets = GaugeMetricFamily("ccmon_window_tickets", "Tickets created, solved, reopened and escalated in the "
                                    "window.", labels=["queue", "window", "kind"])
        responses = GaugeMetricFamily("ccmon_window_survey_responses", "Survey responses in the window, by kind.",
                                      labels=["queue", "window", "kind"])
        values = {k: GaugeMetricFamily(n, h, labels=["queue", "window"]) for k, (n, h) in WINDOW_VALUES.items()}
        occupancy = GaugeMetricFamily("ccmon_occupancy_ratio", "(on call + wrap-up) / (available + on call + "
                                      "wrap-up) time over the window.", labels=["queue", "window"])
        agent = {k: GaugeMetricFamily(n, h, labels=["queue", "window", "agent"]) for k, (n, h) in AGENT_SURVEY.items()}
        custom_count = GaugeMetricFamily("ccmon_custom_count", "A user-defined counter over the window "
                                         "(queue empty: all queues).", labels=["queue", "window", "name"])
        custom_ratio = GaugeMetricFamily("ccmon_custom_ratio", "A user-defined ratio over the window "
                                         "(queue empty: all queues).", labels=["queue", "window", "name"])
        views = list(queues.items()) + [("", self.snapshot.get("all", {}))]
        for queue, view in views:
            for window, w in view.items():  # type: ignore[union-attr]
                if window in ("now", "totals"):
                    continue
                if queue:
                    for name in WINDOW_COUNTS:
                        calls.add_metric([queue, window, name], float(w[name]))
                    for kind in TICKET_KINDS:
                        tickets.add_metric([queue, window, kind], float(w["tickets_" + kind]))
                    for kind, n in w["survey_responses"].items():
                        responses.add_metric([queue, window, kind], float(n))
                    for key, fam in values.items():
                        if w[key] is not None:
                            fam.add_metric([queue, window], float(w[key]))
                    for agent_id, a in w["surveys_by_agent"].items():
                        for key, fam in agent.items():
                            if a[key] is not None:
                                fam.add_metric([queue, window, agent_id], float(a[key]))
                    occ = view["now"].get(f"occupancy_{window}")  # type: ignore[union-attr]
                    if occ is not None:
                        occupancy.add_metric([queue, window], float(occ))
                for name, value in w["custom"].items():
                    if value is None:
                        continue
                    is_count = isinstance(value, int) and not isinstance(value, bool)
                    (custom_count if is_count else custom_ratio).add_metric([queue, window, name], float(value))
        yield from (calls, tickets, responses, *values.values(), occupancy, *agent.values(), custom_count, custom_ratio)

    def _now(self, queues: Mapping[str, Mapping[str, View]]) -> Iterator[Metric]:
        now = {k: GaugeMetricFamily(n, h, labels=["queue"]) for k, (n, h, _) in NOW_VALUES.items()}
        agents = GaugeMetricFamily("ccmon_agents", "Agents per queue by current state (staffed: all but offline).",
                                   labels=["queue", "state"])
        kpi = GaugeMetricFamily("ccmon_kpi", "The latest kpi.sample value (queue empty: no queue).",
                                labels=["name", "queue"])
        for queue, view in queues.items():
            n = view["now"]
            for key, (_, _, factor) in NOW_VALUES.items():
                if n.get(key) is not None:
                    now[key].add_metric([queue], float(n[key]) * factor)  # type: ignore[arg-type]
            for st in AGENT_STATES:
                agents.add_metric([queue, st], float(n["agents_" + st]))  # type: ignore[arg-type]
            for name, value in n.get("kpis", {}).items():  # type: ignore[union-attr]
                kpi.add_metric([name, queue], float(value))
        for name, value in self.snapshot.get("kpis", {}).items():  # type: ignore[union-attr]
            kpi.add_metric([name, ""], float(value))
        yield from now.values()
        yield from (agents, kpi)

    def _self_metrics(self, n_queues: int) -> Iterator[Metric]:
        stats: Mapping[str, int] = self.status.get("stats", {})  # type: ignore[assignment]
        consumed = CounterMetricFamily("ccmon_events_consumed", "Events decoded from the topics (valid or not).")
        consumed.add_metric([], stats.get("consumed", 0))
        applied = CounterMetricFamily("ccmon_events_applied", "Valid events applied, by domain.", labels=["domain"])
        dups = CounterMetricFamily("ccmon_events_duplicate", "Events ignored as repeated event_id.", labels=["domain"])
        rejected = CounterMetricFamily("ccmon_events_rejected", "Events sent to the dead-letter topic, by reason.",
                                       labels=["reason"])
        late = CounterMetricFamily("ccmon_events_late", "Events older than stream time minus the lateness.")
        late.add_metric([], stats.get("rejected:late", 0))
        expired = CounterMetricFamily("ccmon_calls_expired", "Calls never seen to finish within the max age.")
        expired.add_metric([], stats.get("expired:calls", 0))
        for key, value in sorted(stats.items()):
            kind, _, label = key.partition(":")
            family = {"applied": applied, "duplicates": dups, "rejected": rejected}.get(kind)
            if family is not None:
                family.add_metric([label], value)
        lag = GaugeMetricFamily("ccmon_consumer_lag_messages", "Messages in the log not yet committed to Redis.",
                                labels=["topic", "partition"])
        for tp, value in sorted(self.status.get("lag", {}).items()):  # type: ignore[union-attr]
            topic, _, partition = tp.rpartition(":")
            lag.add_metric([topic, partition], float(value))
        last = GaugeMetricFamily("ccmon_last_commit_timestamp_seconds", "When a batch was last committed to Redis.")
        if "last_commit_ms" in stats:
            last.add_metric([], stats["last_commit_ms"] / 1000)
        yield from (consumed, applied, dups, rejected, late, expired, lag, last)
        for name, metric, doc in (
            (selfstats.BATCH, "ccmon_batch_events", "Events per committed batch."),
            (selfstats.E2E, "ccmon_end_to_end_latency_seconds", "Event ts to the Redis commit that applied it."),
            (selfstats.COMMIT, "ccmon_redis_commit_duration_seconds", "Duration of the atomic Redis batch commit "
             "(each is recorded with the next commit)."),
        ):
            h = histogram(stats, name, selfstats.BOUNDS[name], selfstats.SCALE[name])
            fam = HistogramMetricFamily(metric, doc)
            fam.add_metric([], _hist_buckets(h), float(h["sum"]))  # type: ignore[arg-type]
            yield fam
        rewound = CounterMetricFamily("ccmon_rewound_messages", "Messages read again because Kafka's committed "
                                      "offset was past the offset Redis holds (Redis lost commits).")
        rewound.add_metric([], stats.get("rewound_messages", 0))
        yield rewound
        count = GaugeMetricFamily("ccmon_queues", "Queues seen so far.")
        count.add_metric([], float(n_queues))
        yield count
        for kind, (setting, what) in CAPPED.items():
            capped = CounterMetricFamily(f"ccmon_{kind}_capped_events", f"Events whose {what} was over the cap "
                                         f"({setting}) and counted as \"other\".")
            capped.add_metric([], stats.get(f"{kind}_capped", 0))
            yield capped
        yield from self._alerts()
        yield build_info()

    def _alerts(self) -> Iterator[Metric]:
        view: Mapping[str, object] = self.status.get("alerts") or {}  # type: ignore[assignment]
        active = GaugeMetricFamily("ccmon_alert_active", "1 for each pending or firing alert of ccmon's evaluator.",
                                   labels=["rule", "queue", "severity", "state"])
        for a in view.get("alerts", []):  # type: ignore[attr-defined]
            active.add_metric([a["rule"], a["queue"], a["severity"] or "", a["status"]], 1.0)
        sent = CounterMetricFamily("ccmon_alert_notifications", "Notification deliveries by receiver and result "
                                   "(sent, failed attempt, dropped as undeliverable).", labels=["receiver", "result"])
        queued = GaugeMetricFamily("ccmon_alert_outbox_messages", "Notifications waiting for a receiver.",
                                   labels=["receiver"])
        for r in view.get("receivers", []):  # type: ignore[attr-defined]
            for result in ("sent", "failed", "dropped"):
                sent.add_metric([r["name"], result], float(r.get(result, 0)))
            queued.add_metric([r["name"]], float(r.get("queued", 0)))
        yield from (active, sent, queued)


def build_info() -> Metric:
    """``ccmon_build_info{version, python}``."""
    info = InfoMetricFamily("ccmon_build", "ccmon build information.")
    info.add_metric([], {"version": __version__, "python": platform.python_version()})
    return info


class WorkerCollector:
    """This process only: build info, whether it consumes, and the partitions it holds."""

    def __init__(self, consuming: bool, partitions: Optional[int], redis_up: Optional[bool] = None,
                 redis_errors: Optional[int] = None, scrapes: Optional[Mapping[str, int]] = None,
                 helper_failures: Optional[int] = None, wallboard: Optional[Mapping[str, int]] = None,
                 snapshots: Optional[Mapping[str, int]] = None):
        self.consuming = consuming
        self.partitions = partitions
        self.redis_up = redis_up
        self.redis_errors = redis_errors
        self.scrapes = scrapes
        self.helper_failures = helper_failures
        self.wallboard = wallboard
        self.snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        """Yield the per-process families."""
        yield build_info()
        consuming = GaugeMetricFamily("ccmon_worker_consuming", "1 once this worker joined its group and consumes.")
        consuming.add_metric([], 1.0 if self.consuming else 0.0)
        yield consuming
        if self.partitions is not None:
            yield GaugeMetricFamily("ccmon_worker_partitions_assigned", "Topic partitions this worker holds.",
                                    value=float(self.partitions))
        if self.redis_up is not None:
            yield GaugeMetricFamily("ccmon_worker_redis_up", "1 when this worker's last Redis call succeeded, 0 "
                                    "during an outage (it retries with backoff).", value=1.0 if self.redis_up else 0.0)
        if self.redis_errors is not None:
            yield CounterMetricFamily("ccmon_worker_redis_errors", "Redis calls of this worker (its helper "
                                      "processes' included) that failed (unreachable or refused) since it started.",
                                      value=float(self.redis_errors))
        by_whom = (
            ("ccmon_worker_metrics_scrapes", "Scrapes of /metrics this worker answered, by who rendered them", self.scrapes),
            ("ccmon_worker_wallboard_updates", "Wallboard updates this worker built for its open screens, by who "
             "built them", self.wallboard),
            ("ccmon_worker_snapshot_reads", "Answers of /api/snapshot this worker served, by who read and encoded "
             "them", self.snapshots),
        )
        for name, doc, counts in by_whom:
            if counts is not None:
                family = CounterMetricFamily(name, doc + " (its helper processes, or itself).", labels=["by"])
                for by, n in sorted(counts.items()):
                    family.add_metric([by], float(n))
                yield family
        if self.helper_failures is not None:
            yield CounterMetricFamily("ccmon_worker_metrics_helper_failures", "Times this worker's helper processes "
                                      "for /metrics, the wallboard and /api/snapshot failed (one died, or they did not "
                                      "start).",
                                      value=float(self.helper_failures))
        yield from gcstats.families()  # the cyclic collector's pauses, once the worker records them


def _encode(register: Callable[[CollectorRegistry], None], accept: Optional[str]) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    register(registry)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram", "info": "gauge"}


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def text_format(families: Iterable[Metric], openmetrics: bool = False) -> bytes:
    """The Prometheus text format (0.0.4), or OpenMetrics 1.0.0 with ``openmetrics``, byte for byte what
    prometheus_client writes for these families.

    A scrape of many queues is mostly sample lines with the same few label values,
    so escaped values are cached; prometheus_client re-validates every label name
    of every sample, which made it the larger half of a scrape.
    """
    out: list[str] = []
    escaped: dict[str, str] = {}
    for fam in families:
        out.append(_head(fam.name, fam.documentation, fam.type, openmetrics))
        for sample in fam.samples:
            if sample.labels:
                parts = []
                for k, v in sorted(sample.labels.items()):
                    e = escaped.get(v)
                    if e is None:
                        e = escaped[v] = _escape_label(v)
                    parts.append(f'{k}="{e}"')
                out.append(f"{sample.name}{{{','.join(parts)}}} {floatToGoString(sample.value)}\n")
            else:
                out.append(f"{sample.name} {floatToGoString(sample.value)}\n")
    return "".join(out).encode()


_NEG_INF = float("-inf")
_number_cache: dict[object, str] = {}


def _go(value: float) -> str:
    """``floatToGoString`` for a float: plain ``repr`` except for large positives, infinities and NaN."""
    if _NEG_INF < value < 1e6:
        return repr(value)
    return floatToGoString(value)


def _num(value: object) -> str:
    """The sample text of ``float(value)``; integers (most samples) are cached."""
    if type(value) is int:
        text = _number_cache.get(value)
        if text is None:
            if len(_number_cache) >= 100_000:
                _number_cache.clear()
            text = _number_cache[value] = _go(float(value))
        return text
    return _go(float(value))  # type: ignore[arg-type]


_CALL_HEADS = [(f'ccmon_window_calls{{outcome="{name}",', name) for name in WINDOW_COUNTS]
_TICKET_HEADS = [(f'ccmon_window_tickets{{kind="{kind}",', "tickets_" + kind) for kind in TICKET_KINDS]


_SUFFIX = {"counter": "_total", "info": "_info"}  # the text format names these families by their samples


def _head(name: str, doc: str, type_: str, openmetrics: bool = False) -> str:
    """A family's HELP and TYPE lines. ``name`` is the family's (a counter's without ``_total``), as prometheus_client
    names it; the text format shows a counter or info family by its samples' name, and an info family as a gauge."""
    doc = doc.replace("\\", "\\\\").replace("\n", "\\n")
    if openmetrics:  # OpenMetrics escapes quotes in HELP too
        doc = doc.replace('"', '\\"')
        return f"# HELP {name} {doc}\n# TYPE {name} {type_}\n"
    name += _SUFFIX.get(type_, "")
    return f"# HELP {name} {doc}\n# TYPE {name} {_TYPES[type_]}\n"


def snapshot_text(snapshot: View, status: View, openmetrics: bool = False) -> bytes:
    """The text format of ``SnapshotCollector(snapshot, status)`` (OpenMetrics with ``openmetrics``), written straight
    from the snapshot.

    Byte for byte what ``text_format`` (and so prometheus_client) writes for the collector's families
    (tests/unit/test_exposition.py compares them), but with no metric family, sample or label dict
    per sample: label strings are built once per queue and window, and each family's lines are
    collected in one pass over the views.
    """
    queues: Mapping[str, Any] = snapshot.get("queues", {})  # type: ignore[assignment]
    return stitch([snapshot_sections(snapshot, openmetrics)], status, openmetrics, len(queues))


Sections = list[tuple[str, Union[list[str], bytes]]]  # each family's HELP and TYPE lines, and its sample lines


def stitch(parts: Iterable[Sections], status: View, openmetrics: bool, n_queues: int) -> bytes:
    """One exposition from the sections of several snapshots (each family's samples in the order of ``parts``; a
    helper process sends its lines already joined and encoded), then the worker's own metrics from ``status``.
    The body is ~10 MB at 500 queues: it is copied once, at the end."""
    parts = list(parts)
    chunks: list[bytes] = []
    for i, (head, _) in enumerate(parts[0]):
        chunks.append(head.encode())
        for part in parts:
            lines = part[i][1]
            chunks.append(lines if type(lines) is bytes else "".join(lines).encode())  # type: ignore[arg-type]
    # The self-metrics are a few dozen samples: the family path is cheap there.
    chunks.append(text_format(SnapshotCollector({}, status)._self_metrics(n_queues), openmetrics))
    if openmetrics:
        chunks.append(b"# EOF\n")
    return b"".join(chunks)


def snapshot_sections(snapshot: View, openmetrics: bool = False, whole: bool = True) -> Sections:
    """``snapshot_text``'s families, as sections. ``whole=False`` leaves out the samples of no queue (the all-queues
    custom metrics and the KPIs of no queue): for a snapshot of some of the queues, whose sections are stitched
    with others'."""
    queues: Mapping[str, Any] = snapshot.get("queues", {})  # type: ignore[assignment]

    def heading(name: str, doc: str, type_: str) -> str:
        return _head(name, doc, type_, openmetrics)

    escaped: dict[str, str] = {}

    def esc(value: str) -> str:
        e = escaped.get(value)
        if e is None:
            e = escaped[value] = _escape_label(value)
        return e

    sections: Sections = []
    num = _num
    ints = _number_cache
    # Ratios repeat across queues and windows (0.5, 2/3...): formatted once per scrape. Zeros are left out, as
    # 0.0 and -0.0 are one key but two texts.
    floats: dict[float, str] = {}

    def value_text(v: object) -> str:
        text = floats.get(v) if type(v) is float and v else None  # type: ignore[call-overload]
        if text is None:
            text = num(v)
            if type(v) is float and v:
                floats[v] = text
        return text

    # ---- lifetime counters and histograms
    counters: dict[str, list[str]] = {k: [] for k in TOTALS}
    totals_heads = [(k, name + "_total", factor, counters[k]) for k, (name, _, factor) in TOTALS.items()]
    blocked: list[str] = []
    responses: list[str] = []
    wait: list[str] = []
    wait_append = wait.append
    wait_heads: dict[str, str] = {}  # le -> the bucket sample's name and first label
    frt: list[str] = []
    frt_heads: dict[str, str] = {}
    for queue, view in queues.items():
        qe = esc(queue)
        qlabel = f'{{queue="{qe}"}} '
        t: Any = view["totals"]
        for key, head, factor, lines in totals_heads:
            x = float(t[key]) * factor
            lines.append(f"{head}{qlabel}{repr(x) if _NEG_INF < x < 1e6 else _go(x)}\n")
        for reason, n in t["blocked_by_reason"].items():
            blocked.append(f'ccmon_calls_blocked_total{{queue="{qe}",reason="{esc(reason)}"}} {num(n)}\n')
        for kind, n in t["survey_responses"].items():
            responses.append(f'ccmon_survey_responses_total{{kind="{escaped.get(kind) or esc(kind)}",queue="{qe}"}} '
                             f'{(ints.get(n) if type(n) is int else None) or num(n)}\n')
        waits: Any = t["wait_seconds"]
        if t["offered"] or any(waits[o]["count"] for o in WAIT_OUTCOMES):
            for outcome in WAIT_OUTCOMES:
                h = waits[outcome]
                tail = f'outcome="{esc(outcome)}",queue="{qe}"}} '
                last: Optional[str] = ""
                for le, n in h["buckets"].items():
                    last = (ints.get(n) if type(n) is int else None) or num(n)
                    bucket = wait_heads.get(le)
                    if bucket is None:
                        bucket = wait_heads[le] = f'ccmon_call_wait_seconds_bucket{{le="{esc(le)}",'
                    wait_append(f"{bucket}{tail}{last}\n")
                wait.append(f'ccmon_call_wait_seconds_count{{{tail}{last}\n')
                wait.append(f'ccmon_call_wait_seconds_sum{{{tail}{_go(float(h["sum"]))}\n')
        h = t["first_response_seconds"]
        if t["tickets_created"] or h["count"]:
            last = ""
            for le, n in h["buckets"].items():
                last = (ints.get(n) if type(n) is int else None) or num(n)
                bucket = frt_heads.get(le)
                if bucket is None:
                    bucket = frt_heads[le] = f'ccmon_ticket_first_response_seconds_bucket{{le="{esc(le)}",'
                frt.append(f"{bucket}{qlabel[1:]}{last}\n")
            frt.append(f'ccmon_ticket_first_response_seconds_count{qlabel}{last}\n')
            frt.append(f'ccmon_ticket_first_response_seconds_sum{qlabel}{_go(float(h["sum"]))}\n')
    for key, (name, doc, _) in TOTALS.items():
        sections.append((heading(name, doc, "counter"), counters[key]))
    sections.append((heading("ccmon_calls_blocked", "Calls blocked before queueing, by reason.", "counter"), blocked))
    sections.append((heading("ccmon_survey_responses", "Survey responses, by kind.", "counter"), responses))
    sections.append((heading("ccmon_call_wait_seconds", "Wait of calls that left the queue, by outcome; the buckets "
                             "include the queue's SL and short-abandon thresholds.", "histogram"), wait))
    sections.append((heading("ccmon_ticket_first_response_seconds", "SLA-clock time to the first public agent reply; "
                             "the buckets include the queue's first-response targets.", "histogram"), frt))

    # ---- windowed gauges
    calls: list[str] = []
    calls_append = calls.append
    tickets: list[str] = []
    tickets_append = tickets.append
    window_responses: list[str] = []
    values: dict[str, list[str]] = {k: [] for k in WINDOW_VALUES}
    value_names = [(k, name, values[k].append) for k, (name, _) in WINDOW_VALUES.items()]
    occupancy: list[str] = []
    agent: dict[str, list[str]] = {k: [] for k in AGENT_SURVEY}
    agent_names = [(k, name, agent[k].append) for k, (name, _) in AGENT_SURVEY.items()]
    custom_count: list[str] = []
    custom_ratio: list[str] = []
    views: list[tuple[str, Any]] = list(queues.items()) + ([("", snapshot.get("all", {}))] if whole else [])
    for queue, view in views:
        qe = esc(queue)
        now: Any = view.get("now") if queue else None
        for window, w in view.items():
            if window in ("now", "totals"):
                continue
            we = esc(window)
            if queue:
                tail = f'queue="{qe}",window="{we}"}} '
                labels = "{" + tail
                for head, key in _CALL_HEADS:
                    v = w[key]
                    calls_append(f'{head}{tail}{(ints.get(v) if type(v) is int else None) or num(v)}\n')
                for head, key in _TICKET_HEADS:
                    v = w[key]
                    tickets_append(f'{head}{tail}{(ints.get(v) if type(v) is int else None) or num(v)}\n')
                for kind, n in w["survey_responses"].items():
                    window_responses.append(f'ccmon_window_survey_responses{{kind="{escaped.get(kind) or esc(kind)}",'
                                            f'{tail}{(ints.get(n) if type(n) is int else None) or num(n)}\n')
                for key, name, append in value_names:
                    v = w[key]
                    if v is not None:
                        append(f"{name}{labels}{value_text(v)}\n")
                for agent_id, a in w["surveys_by_agent"].items():
                    head = f'{{agent="{escaped.get(agent_id) or esc(agent_id)}",{tail}'
                    for key, name, append in agent_names:
                        v = a[key]
                        if v is not None:
                            append(f"{name}{head}{value_text(v)}\n")
                occ = now.get(f"occupancy_{window}")
                if occ is not None:
                    occupancy.append(f"ccmon_occupancy_ratio{labels}{num(occ)}\n")
            for name, value in w["custom"].items():
                if value is None:
                    continue
                is_count = isinstance(value, int) and not isinstance(value, bool)
                (custom_count if is_count else custom_ratio).append(
                    f'{"ccmon_custom_count" if is_count else "ccmon_custom_ratio"}{{name="{esc(name)}",queue="{qe}",'
                    f'window="{we}"}} {num(value)}\n')
    sections.append((heading("ccmon_window_calls", "Calls in the window by outcome (event time).", "gauge"), calls))
    sections.append((heading("ccmon_window_tickets", "Tickets created, solved, reopened and escalated in the window.",
                             "gauge"), tickets))
    sections.append((heading("ccmon_window_survey_responses", "Survey responses in the window, by kind.", "gauge"),
                     window_responses))
    for key, (name, doc) in WINDOW_VALUES.items():
        sections.append((heading(name, doc, "gauge"), values[key]))
    sections.append((heading("ccmon_occupancy_ratio", "(on call + wrap-up) / (available + on call + wrap-up) time "
                             "over the window.", "gauge"), occupancy))
    for key, (name, doc) in AGENT_SURVEY.items():
        sections.append((heading(name, doc, "gauge"), agent[key]))
    sections.append((heading("ccmon_custom_count", "A user-defined counter over the window (queue empty: all "
                             "queues).", "gauge"), custom_count))
    sections.append((heading("ccmon_custom_ratio", "A user-defined ratio over the window (queue empty: all queues).",
                             "gauge"), custom_ratio))

    # ---- point-in-time gauges
    now_lines: dict[str, list[str]] = {k: [] for k in NOW_VALUES}
    now_names = [(k, name, factor) for k, (name, _, factor) in NOW_VALUES.items()]
    agents: list[str] = []
    kpi: list[str] = []
    for queue, view in queues.items():
        qe = esc(queue)
        qlabel = f'{{queue="{qe}"}} '
        nv: Any = view["now"]
        for key, name, factor in now_names:
            v = nv.get(key)
            if v is not None:
                now_lines[key].append(f"{name}{qlabel}{_go(float(v) * factor)}\n")
        for st in AGENT_STATES:
            agents.append(f'ccmon_agents{{queue="{qe}",state="{st}"}} {num(nv["agents_" + st])}\n')
        for name, value in nv.get("kpis", {}).items():
            kpi.append(f'ccmon_kpi{{name="{esc(name)}",queue="{qe}"}} {num(value)}\n')
    kpis: Any = snapshot.get("kpis", {}) if whole else {}
    for name, value in kpis.items():
        kpi.append(f'ccmon_kpi{{name="{esc(name)}",queue=""}} {num(value)}\n')
    for key, (name, doc, _) in NOW_VALUES.items():
        sections.append((heading(name, doc, "gauge"), now_lines[key]))
    sections.append((heading("ccmon_agents", "Agents per queue by current state (staffed: all but offline).", "gauge"),
                     agents))
    sections.append((heading("ccmon_kpi", "The latest kpi.sample value (queue empty: no queue).", "gauge"), kpi))
    return sections


_SAME_BYTES = frozenset({om_exposition.UNDERSCORES, om_exposition.ALLOWUTF8})  # schemes that keep legacy names


def fast_format(encoder: Callable[..., bytes]) -> Optional[bool]:
    """Whether ``snapshot_text`` writes what ``encoder`` would: False for the text format, True for OpenMetrics
    1.0.0, None for anything else (prometheus_client's path).

    Prometheus asks for OpenMetrics first by default, so both formats need the direct path. Every ccmon metric and
    label name is a legacy one, which the ``underscores`` and ``allow-utf-8`` escaping schemes leave as they are.
    """
    if encoder is generate_latest:
        return False
    if isinstance(encoder, partial) and not encoder.args and encoder.keywords.get("escaping") in _SAME_BYTES:
        if encoder.func is generate_latest and set(encoder.keywords) == {"escaping"}:
            return False
        if encoder.func is om_exposition.generate_latest and encoder.keywords.get("version") == "1.0.0":
            return True
    return None


def render(snapshot: View, status: View, accept: Optional[str]) -> tuple[bytes, str]:
    """The global view's exposition body and content type (OpenMetrics when the scraper asks for it)."""
    encoder, content_type = choose_encoder(accept or "")
    om = fast_format(encoder)
    if om is not None:
        return snapshot_text(snapshot, status, om), content_type
    return _encode(lambda r: r.register(SnapshotCollector(snapshot, status)), accept)  # type: ignore[arg-type]


async def scrape(store: "Store", status: View, accept: Optional[str]) -> tuple[bytes, str]:
    """What ``GET /metrics`` answers: the snapshot read now, rendered.

    The exposition shows nothing of the all-queues roll-up but its custom metrics, so the rest of it is not
    built; and the cyclic collector stays paused until the snapshot is dropped (``ccmon/gcpause.py``).
    """
    with gc_paused():
        return render(await store.snapshot(rollup_all=False), status, accept)


def render_worker(consuming: bool, partitions: Optional[int], accept: Optional[str], redis_up: Optional[bool] = None,
                  redis_errors: Optional[int] = None, scrapes: Optional[Mapping[str, int]] = None,
                  helper_failures: Optional[int] = None,
                  wallboard: Optional[Mapping[str, int]] = None,
                  snapshots: Optional[Mapping[str, int]] = None) -> tuple[bytes, str]:
    """This process's exposition: process_* (memory, CPU, fds), python_info and the worker's own gauges."""
    def register(r: CollectorRegistry) -> None:
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        r.register(WorkerCollector(consuming, partitions, redis_up, redis_errors,  # type: ignore[arg-type]
                                   scrapes, helper_failures, wallboard, snapshots))
    return _encode(register, accept)
