"""The alert core: rules read values off a snapshot, and each alert moves through its lifecycle. No I/O.

An alert is one (rule, queue) pair. It moves inactive -> pending (condition true,
waiting out ``for``) -> firing -> resolved (back to inactive). Notifications go
out on firing, on resolve (with the duration) and on repeat-interval
re-notification, and at no other time. Time is always passed in, so tests drive
the lifecycle with an injected clock and a restarted evaluator continues from
the stored state.
"""

from __future__ import annotations

import json
import string
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Mapping, Optional, Sequence, Union

Op = Literal["above", "below", "at_least", "equal"]
Severity = Literal["critical", "warning", "info"]
Status = Literal["inactive", "pending", "firing"]
ALL = "*"
NOW = "now"  # the window of point-in-time gauges
SYSTEM = "system"  # rules about ccmon itself (lag, commits); their queue is ""
SYSTEM_METRICS = ("consumer_lag", "commit_age_seconds")
SYMBOLS = {"above": ">", "below": "<", "at_least": ">=", "equal": "=="}


@dataclass(frozen=True)
class Condition:
    """``metric`` (in ``window``) compared with ``threshold``: a number or another metric of the same queue."""

    metric: str
    window: str
    op: Op
    threshold: Union[float, str]

    def describe(self) -> str:
        """E.g. ``service_level[15m] < sl_target``."""
        return f"{self.metric}[{self.window}] {SYMBOLS[self.op]} {self.threshold}"


@dataclass(frozen=True)
class Rule:
    """One alert rule: a condition per selected queue, held for ``for_s``, with hysteresis and notifications."""

    name: str
    condition: Condition
    queues: Union[str, tuple[str, ...]] = ALL  # "*" (each queue separately) or names
    for_s: float = 0
    clear: Optional[float] = None  # absolute clear threshold (numeric thresholds)
    clear_by: Optional[float] = None  # clear this far past the threshold, towards healthy
    severity: Severity = "warning"
    summary: str = "{rule} in {queue}"
    description: str = "{metric} is {value} ({op} {threshold})"
    runbook_url: str = ""
    receivers: tuple[str, ...] = ()
    repeat_s: Optional[float] = None
    guard: Optional[Condition] = None  # must also hold to enter pending/firing (e.g. a minimum volume)
    change_s: Optional[float] = None  # compare the value's change over this period instead of the value
    builtin: bool = False

    @property
    def system(self) -> bool:
        """A rule about ccmon itself rather than a queue."""
        return self.condition.window == SYSTEM


def compare(op: Op, value: float, threshold: float) -> bool:
    """``value <op> threshold``."""
    if op == "above":
        return value > threshold
    if op == "below":
        return value < threshold
    if op == "at_least":
        return value >= threshold
    return value == threshold


def healthy_side(op: Op, value: float, clear: float) -> bool:
    """Past the clear threshold on the healthy side (the clear value itself counts as healthy)."""
    if op in ("above", "at_least"):
        return value <= clear
    if op == "below":
        return value >= clear
    return value != clear


# ------------------------------------------------------------------ values


def window_of(snapshot: Mapping[str, Any], queue: str, window: str) -> Optional[Mapping[str, Any]]:
    """One queue's view of a window (``now`` for gauges), or None."""
    view = snapshot.get("queues", {}).get(queue)
    return None if view is None else view.get(window)


def metric_value(snapshot: Mapping[str, Any], status: Mapping[str, Any], queue: str, metric: str, window: str,
                 now_ms: int) -> Optional[float]:
    """A metric's value for a queue, from the snapshot (None: no data, e.g. an empty denominator)."""
    if window == SYSTEM:
        if metric == "consumer_lag":
            return float(sum(status.get("lag", {}).values()))
        last = status.get("stats", {}).get("last_commit_ms")
        return None if last is None else max(0.0, (now_ms - last) / 1000)
    view = window_of(snapshot, queue, window)
    if view is None:
        return None
    value = view.get(metric)
    if value is None and isinstance(view.get("custom"), Mapping):
        value = view["custom"].get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def threshold_value(snapshot: Mapping[str, Any], status: Mapping[str, Any], queue: str, cond: Condition,
                    now_ms: int) -> Optional[float]:
    """The threshold: a number, or another metric of the same queue (a ``now`` gauge or the same window)."""
    if not isinstance(cond.threshold, str):
        return float(cond.threshold)
    for window in (NOW, cond.window):
        value = metric_value(snapshot, status, queue, cond.threshold, window, now_ms)
        if value is not None:
            return value
    return None


def queues_of(rule: Rule, snapshot: Mapping[str, Any]) -> list[str]:
    """The queues a rule is evaluated for now ("" for a system rule)."""
    if rule.system:
        return [""]
    known = list(snapshot.get("queues", {}))
    return known if rule.queues == ALL else [q for q in rule.queues if q in known]


# ---------------------------------------------------------------- lifecycle


@dataclass(frozen=True)
class AlertState:
    """What the evaluator remembers of one alert (stored in Redis as JSON)."""

    rule: str
    queue: str
    status: Status = "inactive"
    pending_since_ms: Optional[int] = None
    fired_ms: Optional[int] = None
    notified_ms: Optional[int] = None
    value: Optional[float] = None
    threshold: Optional[float] = None
    history: tuple[tuple[int, float], ...] = ()  # (ms, value) samples for change rules
    summary: str = ""  # rendered at the last evaluation while pending or firing

    def encode(self) -> str:
        """JSON for the store."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def decode(raw: Union[str, bytes]) -> "AlertState":
        """The inverse of ``encode``."""
        d = json.loads(raw)
        d["history"] = tuple(tuple(h) for h in d.get("history", ()))
        return AlertState(**d)


@dataclass(frozen=True)
class Notification:
    """One message about one alert, for every receiver of its rule."""

    kind: Literal["firing", "resolved", "repeat"]
    rule: str
    queue: str
    severity: str
    summary: str
    description: str
    runbook_url: str
    value: Optional[float]
    threshold: Optional[float]
    started_ms: int  # when it fired
    at_ms: int  # when this notification was made
    receivers: tuple[str, ...] = ()
    duration_s: Optional[float] = None  # resolved: how long it fired
    repeat_s: Optional[float] = None

    @property
    def key(self) -> str:
        """Stable per alert (rule and queue): PagerDuty's dedup_key, the Alertmanager fingerprint's source."""
        return f"ccmon/{self.rule}/{self.queue or '-'}"

    def encode(self) -> str:
        """JSON for the outbox."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @staticmethod
    def decode(raw: Union[str, bytes]) -> "Notification":
        """The inverse of ``encode``."""
        d = json.loads(raw)
        d["receivers"] = tuple(d.get("receivers", ()))
        return Notification(**d)


def render(template: str, fields: Mapping[str, Any]) -> str:
    """Fill ``{queue}``, ``{value}``, ``{threshold:.0%}``… in a summary or description."""
    out = []
    for literal, name, spec, conv in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        value = fields.get(name)
        if name not in fields:
            out.append("{" + name + (("!" + conv) if conv else "") + ((":" + spec) if spec else "") + "}")
        elif value is None:
            out.append("n/a")
        else:
            try:
                out.append(format(value, spec or ""))
            except (TypeError, ValueError):
                out.append(str(value))
    return "".join(out)


@dataclass
class Evaluation:
    """The inputs of one step for one alert."""

    value: Optional[float]
    threshold: Optional[float]
    guard_ok: bool = True
    # extra template fields: the queue's now gauges (its numbers; _texts leaves out the rest)
    fields: Mapping[str, Any] = field(default_factory=dict)


def _texts(rule: Rule, state: AlertState, ev: Evaluation, now_ms: int) -> dict[str, Any]:
    fields: dict[str, Any] = {k: v for k, v in ev.fields.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)}
    fields.update(rule=rule.name, queue=state.queue or "ccmon", value=ev.value, threshold=ev.threshold,
                  metric=rule.condition.metric, window=rule.condition.window, op=SYMBOLS[rule.condition.op],
                  severity=rule.severity)
    if ev.value is not None and ev.threshold is not None:
        fields["difference"] = abs(ev.value - ev.threshold)
    fields.setdefault("target", fields.get("sl_target"))
    return fields


def step(rule: Rule, state: AlertState, ev: Evaluation, now_ms: int) -> tuple[AlertState, list[Notification]]:
    """Advance one alert by one evaluation at ``now_ms``."""
    value, threshold = ev.value, ev.threshold
    known = value is not None and threshold is not None
    breach = known and ev.guard_ok and compare(rule.condition.op, value, threshold)  # type: ignore[arg-type]
    if not breach and state.status != "firing":  # the common case, in one step (an evaluation is 50 queues x rules)
        if state.status == "inactive" and state.pending_since_ms is None and not state.summary and \
                state.value == value and state.threshold == threshold:
            return state, []
        return replace(state, value=value, threshold=threshold, status="inactive", pending_since_ms=None,
                       summary=""), []
    previous_summary = state.summary
    summary = render(rule.summary, _texts(rule, state, ev, now_ms)) if breach else state.summary
    state = replace(state, value=value, threshold=threshold, summary=summary)

    def note(kind: str, **extra: Any) -> Notification:
        fields = _texts(rule, state, ev, now_ms)
        fields.update(extra)
        return Notification(
            kind=kind, rule=rule.name, queue=state.queue, severity=rule.severity,  # type: ignore[arg-type]
            summary=render(rule.summary, fields), description=render(rule.description, fields),
            runbook_url=rule.runbook_url, value=value, threshold=threshold,
            started_ms=state.fired_ms if state.fired_ms is not None else now_ms, at_ms=now_ms,
            receivers=rule.receivers, repeat_s=rule.repeat_s, **{k: v for k, v in extra.items() if k == "duration_s"},
        )

    if state.status == "firing":
        if known and ev.guard_ok and not _cleared(rule, value, threshold):  # type: ignore[arg-type]
            if rule.repeat_s is not None and state.notified_ms is not None and \
                    now_ms - state.notified_ms >= rule.repeat_s * 1000:
                state = replace(state, notified_ms=now_ms)
                return state, [note("repeat")]
            return state, []
        duration = (now_ms - (state.fired_ms or now_ms)) / 1000
        out = note("resolved", duration_s=duration, duration=_human(duration))
        now_text = "no data" if value is None else f"{value:g}"
        out = replace(out, summary=f"Resolved: {previous_summary or out.summary}",
                      description=f"{rule.name} in {state.queue or 'ccmon'} is back to normal after "
                                  f"{_human(duration)}: {rule.condition.metric} is now {now_text} "
                                  f"(alert when {SYMBOLS[rule.condition.op]} {threshold if threshold is not None else rule.condition.threshold}).")
        return replace(state, status="inactive", pending_since_ms=None, fired_ms=None, notified_ms=None,
                       summary=""), [out]

    since = state.pending_since_ms if state.status == "pending" and state.pending_since_ms is not None else now_ms
    if now_ms - since >= rule.for_s * 1000:
        state = replace(state, status="firing", pending_since_ms=since, fired_ms=now_ms, notified_ms=now_ms)
        return state, [note("firing")]
    return replace(state, status="pending", pending_since_ms=since), []


def _cleared(rule: Rule, value: float, threshold: float) -> bool:
    """Whether a firing alert may resolve: past the clear threshold, or (without one) no longer breaching."""
    op = rule.condition.op
    if rule.clear is not None:
        return healthy_side(op, value, rule.clear)
    if rule.clear_by is not None:
        return healthy_side(op, value, clear_bound(op, threshold, rule.clear_by))
    return not compare(op, value, threshold)


def clear_bound(op: Op, threshold: float, clear_by: float) -> float:
    """``clear_by`` past the threshold towards healthy; a ratio's bound stays within 0..1 (a 99% target clears at
    100%, not at an unreachable 101%)."""
    clear = threshold - clear_by if op in ("above", "at_least") else threshold + clear_by
    if 0 <= threshold <= 1:
        clear = min(max(clear, 0.0), 1.0)
    return round(clear, 9)  # 0.8 + 0.02 is 0.82, not 0.8200000000000001


def _human(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def change_value(history: Sequence[tuple[int, float]], value: Optional[float], period_s: float,
                 now_ms: int) -> tuple[Optional[float], tuple[tuple[int, float], ...]]:
    """A value's change over ``period_s`` from the kept samples, and the samples to keep.

    None until a sample at least ``period_s`` old exists (a new evaluator, or a
    queue that just appeared, does not fire on a made-up baseline).
    """
    period = int(period_s * 1000)
    kept = [h for h in history if h[0] >= now_ms - 2 * period]
    base = [h for h in kept if h[0] <= now_ms - period]
    if value is not None and (not kept or now_ms - kept[-1][0] >= period // 60):
        kept.append((now_ms, value))  # at most ~120 samples: one per 1/60 of the period
    if value is None or not base:
        return None, tuple(kept)
    return value - base[-1][1], tuple(kept)


def evaluate(rule: Rule, state: AlertState, snapshot: Mapping[str, Any], status: Mapping[str, Any],
             now_ms: int) -> tuple[AlertState, list[Notification]]:
    """Read the rule's value, threshold and guard for the state's queue and advance the alert."""
    cond, queue = rule.condition, state.queue
    value = metric_value(snapshot, status, queue, cond.metric, cond.window, now_ms)
    if rule.change_s is not None:
        value, history = change_value(state.history, value, rule.change_s, now_ms)
        state = replace(state, history=history)
    threshold = threshold_value(snapshot, status, queue, cond, now_ms)
    guard_ok = True
    if rule.guard is not None:
        g = rule.guard
        gv = metric_value(snapshot, status, queue, g.metric, g.window, now_ms)
        gt = threshold_value(snapshot, status, queue, g, now_ms)
        guard_ok = gv is not None and gt is not None and compare(g.op, gv, gt)
    return step(rule, state, Evaluation(value, threshold, guard_ok, window_of(snapshot, queue, NOW) or {}), now_ms)
