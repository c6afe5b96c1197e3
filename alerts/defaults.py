"""Built-in alert defaults as plain frozen dataclasses (no I/O).

ccmon's own evaluator will read these, and ``deploy/prometheus/rules/ccmon.rules.yml``
mirrors them rule for rule; ``tests/unit/test_rules.py`` fails when the two drift
(metric, labels, operator, threshold, ``for``, severity, runbook).

Conventions every rule follows:

- ``metric`` is the exported Prometheus name, ``labels`` the extra label matchers
  and ``window`` the value of the ``window`` label (None for point-in-time gauges).
- ``op`` compares the rule's value with ``threshold``: above ``>``, below ``<``,
  at_least ``>=``, equal ``==``. ``threshold="target"`` means the queue's own
  ``ccmon_service_level_target_ratio``.
- ``kind`` says what the value is: the gauge itself, its ``age`` (now minus a
  timestamp gauge), or its ``increase`` over ``increase_seconds``.
- ``clear`` is the hysteresis bound for ccmon's evaluator (Prometheus has none):
  a firing rule resolves once the value is at or beyond it on the healthy side.
  None resolves as soon as the condition is false. With ``threshold="target"``
  it is an offset from the target, because the target differs per queue.
- ``summary`` and ``description`` are ``str.format`` templates with the fields
  ``queue``, ``value``, ``instance`` and ``target``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Op = Literal["above", "below", "at_least", "equal"]
Severity = Literal["critical", "warning", "info"]
Kind = Literal["value", "age", "increase"]
# How series are combined: per queue (max, because every replica serves the same
# global view, so a sum would multiply with the replica count), one global value,
# or per scrape target (Prometheus's own `up`).
Aggregate = Literal["max_by_queue", "max", "sum", "per_target"]
Source = Literal["ccmon", "prometheus"]

PROMQL_OPERATORS: Mapping[str, str] = {"above": ">", "below": "<", "at_least": ">=", "equal": "=="}
TARGET = "target"
RUNBOOK_BASE = "https://github.com/ccmon/ccmon/blob/main/docs/runbooks.md"

_ANCHOR = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
Labels = tuple[tuple[str, str], ...]


def _check_clear(op: Op, threshold: float, clear: float | None, where: str) -> None:
    if clear is None:
        return
    if op == "equal":
        raise ValueError(f"{where}: an 'equal' rule has no hysteresis; set clear=None")
    if op in ("above", "at_least") and clear > threshold:
        raise ValueError(f"{where}: clear {clear} must not be above threshold {threshold}")
    if op == "below" and clear < threshold:
        raise ValueError(f"{where}: clear {clear} must not be below threshold {threshold}")




@dataclass(frozen=True)
class Guard:
    """A second condition that must hold at the same time, e.g. a minimum call volume."""

    metric: str
    op: Op
    threshold: float
    labels: Labels = ()
    window: str | None = None
    aggregate: Aggregate = "max_by_queue"



@dataclass(frozen=True)
class DefaultRule:
    """One built-in alert: a metric compared with a threshold for a while."""

    name: str
    metric: str
    window: str | None
    op: Op
    threshold: float | Literal["target"]
    for_seconds: int
    clear: float | None
    severity: Severity
    summary: str
    description: str
    runbook: str
    labels: Labels = ()
    aggregate: Aggregate = "max_by_queue"
    kind: Kind = "value"
    increase_seconds: int | None = None
    guard: Guard | None = None
    # "prometheus": only Prometheus can see it (a scrape failure); ccmon's evaluator skips it.
    source: Source = "ccmon"

    def __post_init__(self) -> None:
        if self.op not in PROMQL_OPERATORS:
            raise ValueError(f"{self.name}: unknown op {self.op!r}")
        if not _ANCHOR.match(self.runbook):
            raise ValueError(f"{self.name}: runbook must be a lowercase anchor, got {self.runbook!r}")
        if (self.kind == "increase") != (self.increase_seconds is not None):
            raise ValueError(f"{self.name}: increase_seconds goes with kind='increase' and only with it")
        if self.for_seconds < 0:
            raise ValueError(f"{self.name}: for_seconds must be >= 0")
        if self.threshold == TARGET:
            if self.op not in ("above", "below"):
                raise ValueError(f"{self.name}: a target threshold needs op above or below")
            if self.clear is not None and (self.clear < 0 if self.op == "below" else self.clear > 0):
                raise ValueError(f"{self.name}: clear is an offset from the target towards healthy")
        elif isinstance(self.threshold, str):
            raise ValueError(f"{self.name}: threshold is a number or {TARGET!r}")
        else:
            _check_clear(self.op, self.threshold, self.clear, self.name)

    @property
    def runbook_url(self) -> str:
        """The runbook section's URL, as in the Prometheus rule's annotation."""
        return f"{RUNBOOK_BASE}#{self.runbook}"


_LAG = Guard("ccmon_consumer_lag_messages", "above", 0, aggregate="sum")

DEFAULT_RULES: tuple[DefaultRule, ...] = (
    DefaultRule(
        name="CcmonServiceLevelBelowTarget",
        metric="ccmon_service_level_ratio",
        window="15m",
        op="below",
        threshold=TARGET,
        # A 15-minute ratio moves by one call at a time; 5 minutes below keeps a
        # single slow answer from paging, and the +2 points to clear stop flapping
        # around the target.
        for_seconds=300,
        clear=0.02,
        severity="warning",
        summary="Service level below target in queue {queue}",
        description="Service level over the last 15 minutes is {value:.1%}, below the queue's target of {target:.0%}.",
        runbook="sl-below-target",
    ),
    DefaultRule(
        name="CcmonLongestWaitHigh",
        metric="ccmon_longest_wait_seconds",
        window=None,
        op="above",
        threshold=120,
        # The gauge grows one second per second while the oldest caller waits, so it
        # cannot flicker; 30 s only drops callers answered just past 2 minutes (an
        # alert that would resolve before anyone reads it) and still notifies while
        # the caller is on the line (about 2.5 minutes in).
        for_seconds=30,
        clear=90,
        severity="warning",
        summary="A caller in queue {queue} has waited over 2 minutes",
        description="The oldest waiting call has waited {value:.0f} s (alert above 120 s).",
        runbook="longest-wait-high",
    ),
    DefaultRule(
        name="CcmonCallsWaitingNoAgentAvailable",
        metric="ccmon_calls_waiting",
        window=None,
        op="above",
        threshold=0,
        # In a busy queue every agent is briefly taken while calls wait; 2 minutes
        # without a single free agent means the queue is stuck or unstaffed.
        for_seconds=120,
        clear=None,
        severity="warning",
        summary="Calls waiting in queue {queue} with no agent available",
        description="Calls waiting in queue {queue}: {value:.0f}. No agent has been available for 2 minutes.",
        runbook="calls-waiting-no-agent-available",
        guard=Guard("ccmon_agents", "equal", 0, labels=(("state", "available"),)),
    ),
    DefaultRule(
        name="CcmonAbandonRateHigh",
        metric="ccmon_abandon_ratio",
        window="15m",
        op="above",
        threshold=0.10,
        for_seconds=300,
        clear=0.08,
        severity="warning",
        summary="Abandon rate high in queue {queue}",
        description="{value:.1%} of calls were abandoned over the last 15 minutes (alert above 10% with at least 10 calls offered).",
        runbook="abandon-rate-high",
        # One abandoned call out of two is 50%: no page below 10 offered calls.
        guard=Guard("ccmon_window_calls", "at_least", 10, labels=(("outcome", "offered"),), window="15m"),
    ),
    DefaultRule(
        name="CcmonCallsBlocked",
        metric="ccmon_window_calls",
        labels=(("outcome", "blocked"),),
        window="15m",
        op="above",
        threshold=0,
        # A blocked call stays in the 15m window for 15 minutes, so the short `for`
        # hides none; it only lets a burst arrive as one notification.
        for_seconds=60,
        clear=None,
        severity="warning",
        summary="Calls blocked in queue {queue}",
        description="{value:.0f} calls were turned away before queueing in the last 15 minutes.",
        runbook="calls-blocked",
    ),
    DefaultRule(
        name="CcmonTicketsSlaBreached",
        metric="ccmon_tickets_sla_breached",
        window=None,
        op="above",
        threshold=0,
        # A breach solved within minutes is not worth a notification.
        for_seconds=300,
        clear=None,
        severity="warning",
        summary="Tickets in SLA breach in queue {queue}",
        description="{value:.0f} open tickets have run out of their first-response or resolution SLA.",
        runbook="tickets-sla-breached",
    ),
    DefaultRule(
        name="CcmonTicketBacklogGrowing",
        metric="ccmon_tickets_backlog",
        window=None,
        op="at_least",
        threshold=10,
        kind="increase",
        increase_seconds=3600,
        # Tickets age into the backlog in batches (yesterday's rush turns 24 h old
        # together); 15 minutes of sustained growth is a trend, not a batch.
        for_seconds=900,
        clear=5,
        severity="info",
        summary="Ticket backlog growing in queue {queue}",
        description="The backlog (open tickets older than the backlog age) grew by {value:.0f} in the last hour.",
        runbook="ticket-backlog-growing",
    ),
    DefaultRule(
        name="CcmonConsumerLagHigh",
        metric="ccmon_consumer_lag_messages",
        window=None,
        op="above",
        threshold=10000,
        aggregate="sum",
        for_seconds=120,
        clear=1000,
        severity="warning",
        summary="ccmon is falling behind the event stream",
        description="{value:.0f} messages are not yet applied to Redis; dashboards and alerts are behind.",
        runbook="consumer-lag-high",
    ),
    DefaultRule(
        name="CcmonWorkerStalled",
        metric="ccmon_last_commit_timestamp_seconds",
        window=None,
        op="above",
        threshold=60,
        kind="age",
        aggregate="max",
        # The age grows steadily while nothing commits; 30 s more than rides out a
        # long first batch after a rebalance.
        for_seconds=30,
        clear=None,
        severity="critical",
        summary="ccmon has stopped committing events",
        description="No batch has been committed to Redis for {value:.0f} s while messages are waiting; the metrics are frozen.",
        runbook="worker-stalled",
        guard=_LAG,
    ),
    DefaultRule(
        name="CcmonWorkerDown",
        metric="up",
        labels=(("job", "ccmon-worker"),),
        window=None,
        op="equal",
        threshold=0,
        aggregate="per_target",
        for_seconds=60,
        clear=None,
        severity="critical",
        summary="ccmon worker {instance} is down",
        description="Prometheus has not been able to scrape /metrics/worker of {instance} for more than 1 minute.",
        runbook="worker-down",
        source="prometheus",
    ),
    DefaultRule(
        name="CcmonMetricsEndpointDown",
        metric="up",
        labels=(("job", "ccmon"),),
        window=None,
        op="equal",
        threshold=0,
        aggregate="per_target",
        for_seconds=60,
        clear=None,
        severity="critical",
        summary="ccmon metrics endpoint {instance} is down",
        description="Prometheus has not been able to scrape the global /metrics view at {instance} for more than 1 minute; every other ccmon alert is blind.",
        runbook="metrics-endpoint-down",
        source="prometheus",
    ),
)
