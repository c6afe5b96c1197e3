"""The alerts YAML: rules, receivers and the built-in defaults, validated with line numbers in every error.

Secrets (webhook URLs, routing keys, passwords) are named by environment
variable (``url_env``, ``routing_key_env``, ``password_env``…) and resolved from
the mapping the caller passes in (the settings object passes the process
environment), so the file itself holds none.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alerts.defaults import DEFAULT_RULES, TARGET, DefaultRule, Guard
from ccmon.yamlsource import compose, line_of
from alerts.engine import ALL, NOW, SYSTEM, SYSTEM_METRICS, Condition, Rule

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
OPS = ("above", "below", "at_least", "equal")
RECEIVER_TYPES = ("webhook", "slack", "pagerduty", "alertmanager", "smtp")
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"


class AlertConfigError(ValueError):
    """Every problem of an alerts file, one per line: ``FILE:LINE: message``."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def seconds(text: Union[str, int, float]) -> float:
    """``90s``, ``5m``, ``1h``, ``250ms`` or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip()
    for unit in ("ms", "s", "m", "h", "d"):
        if s.endswith(unit) and s[: -len(unit)].replace(".", "", 1).isdigit():
            return float(s[: -len(unit)]) * _UNITS[unit]
    raise ValueError(f"invalid duration {text!r}; use e.g. 30s, 5m, 1h")


Duration = Union[str, int, float]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConditionModel(_Model):
    """``{metric, window, <op>: threshold}`` with exactly one of above/below/at_least/equal."""

    metric: str
    window: str = NOW
    above: Optional[Union[float, str]] = None
    below: Optional[Union[float, str]] = None
    at_least: Optional[Union[float, str]] = None
    equal: Optional[Union[float, str]] = None

    @model_validator(mode="after")
    def _one_op(self) -> "ConditionModel":
        given = [op for op in OPS if getattr(self, op) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(OPS)} (got {', '.join(given) or 'none'})")
        return self

    def condition(self) -> Condition:
        """The engine's condition."""
        op = next(op for op in OPS if getattr(self, op) is not None)
        return Condition(self.metric, self.window, op, getattr(self, op))  # type: ignore[arg-type]


class RuleModel(ConditionModel):
    """One rule of the ``rules:`` list."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    queues: Union[Literal["*"], str, list[str]] = ALL
    for_: Duration = Field(default=0, alias="for")
    clear: Optional[float] = None
    clear_by: Optional[float] = Field(default=None, ge=0)
    severity: Literal["critical", "warning", "info"] = "warning"
    summary: str = "{rule} in {queue}"
    description: str = "{metric} is {value} ({op} {threshold})"
    runbook_url: str = ""
    receivers: Optional[list[str]] = None
    repeat_interval: Optional[Duration] = None
    guard: Optional[ConditionModel] = None
    change: Optional[Duration] = None

    @field_validator("for_", "repeat_interval", "change")
    @classmethod
    def _duration(cls, v: Optional[Duration]) -> Optional[Duration]:
        if v is not None and seconds(v) < 0:
            raise ValueError("a duration cannot be negative")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "RuleModel":
        op = next(op for op in OPS if getattr(self, op) is not None)
        threshold = getattr(self, op)
        if self.clear is not None and self.clear_by is not None:
            raise ValueError("give clear or clear_by, not both")
        if op == "equal" and (self.clear is not None or self.clear_by is not None):
            raise ValueError("an equal rule has no hysteresis: drop clear/clear_by")
        if self.clear is not None and not isinstance(threshold, str):
            wrong = self.clear > threshold if op in ("above", "at_least") else self.clear < threshold
            if wrong:
                raise ValueError(f"clear {self.clear:g} is on the breaching side of {op} {threshold:g}; "
                                 f"it must be {'at or below' if op != 'below' else 'at or above'} the threshold")
        if self.repeat_interval is not None and seconds(self.repeat_interval) < 60:
            raise ValueError("repeat_interval must be at least 1m (it re-notifies while firing)")
        return self


class OverrideModel(_Model):
    """Changes to a built-in rule, by name."""

    enabled: bool = True
    threshold: Optional[float] = None
    clear: Optional[float] = None
    for_: Optional[Duration] = Field(default=None, alias="for")
    severity: Optional[Literal["critical", "warning", "info"]] = None
    receivers: Optional[list[str]] = None
    repeat_interval: Optional[Duration] = None
    queues: Optional[Union[Literal["*"], list[str]]] = None


class ReceiverModel(_Model):
    """Where notifications go. Secrets come from the environment variables named by ``*_env``."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    type: Literal["webhook", "slack", "pagerduty", "alertmanager", "smtp"]
    url: Optional[str] = None
    url_env: Optional[str] = None
    bearer_token_env: Optional[str] = None  # webhook: Authorization: Bearer …
    routing_key_env: Optional[str] = None  # pagerduty
    timeout: Duration = "10s"
    send_resolved: bool = True
    # smtp
    host: Optional[str] = None
    port: int = 587
    starttls: bool = True
    username: Optional[str] = None
    password_env: Optional[str] = None
    sender: Optional[str] = Field(default=None, alias="from")
    to: Optional[list[str]] = None

    @model_validator(mode="after")
    def _complete(self) -> "ReceiverModel":
        if self.type == "smtp":
            if not (self.host and self.sender and self.to):
                raise ValueError("an smtp receiver needs host, from and to")
        elif not (self.url or self.url_env) and self.type != "pagerduty":
            raise ValueError(f"a {self.type} receiver needs url (or url_env naming an environment variable)")
        if self.type == "pagerduty" and not self.routing_key_env:
            raise ValueError("a pagerduty receiver needs routing_key_env (the Events API v2 integration key)")
        seconds(self.timeout)
        return self


class AlertsFileModel(_Model):
    """The whole alerts YAML."""

    evaluation_interval: Duration = "5s"

    @field_validator("evaluation_interval")
    @classmethod
    def _interval(cls, v: Duration) -> Duration:
        if seconds(v) < 0.5:
            raise ValueError("evaluation_interval must be at least 0.5s (commits trigger evaluations anyway)")
        return v

    builtin_rules: bool = True
    default_receivers: list[str] = []
    overrides: dict[str, OverrideModel] = {}
    receivers: list[ReceiverModel] = []
    rules: list[RuleModel] = []


@dataclass(frozen=True)
class Receiver:
    """A receiver with its secrets resolved (never printed: ``redacted()`` is for output)."""

    name: str
    type: str
    url: str = ""
    timeout_s: float = 10.0
    send_resolved: bool = True
    bearer_token: str = ""
    routing_key: str = ""
    host: str = ""
    port: int = 587
    starttls: bool = True
    username: str = ""
    password: str = ""
    sender: str = ""
    to: tuple[str, ...] = ()

    def redacted(self) -> dict[str, Any]:
        """What /api and logs may show: no URL path or query (Slack's URL is its secret), no keys."""
        url = self.url
        if url and "://" in url:
            scheme, rest = url.split("://", 1)
            url = f"{scheme}://{rest.split('/', 1)[0].split('@')[-1]}/…"
        return {"name": self.name, "type": self.type, "url": url, "timeout_s": self.timeout_s}


@dataclass(frozen=True)
class AlertsConfig:
    """Rules (built-in and user) and receivers, ready for the evaluator."""

    rules: tuple[Rule, ...] = ()
    receivers: dict[str, Receiver] = field(default_factory=dict)
    evaluation_interval_s: float = 5.0


# ------------------------------------------------------------- built-ins

_WINDOW_FIELDS: dict[str, str] = {}
_NOW_FIELDS: dict[str, str] = {}


def _field_maps() -> tuple[dict[str, str], dict[str, str]]:
    """Prometheus name -> snapshot field, from the exposition's own tables (one naming source)."""
    if not _WINDOW_FIELDS:
        from ccmon.exposition import NOW_VALUES, WINDOW_VALUES

        _WINDOW_FIELDS.update({name: key for key, (name, _) in WINDOW_VALUES.items()})
        _NOW_FIELDS.update({name: key for key, (name, _, _) in NOW_VALUES.items()})
    return _WINDOW_FIELDS, _NOW_FIELDS


def _snapshot_metric(metric: str, labels: tuple[tuple[str, str], ...], window: Optional[str],
                     kind: str) -> tuple[str, str]:
    """(snapshot field, window) of a default rule's Prometheus metric."""
    windowed, now = _field_maps()
    lab = dict(labels)
    if metric == "ccmon_window_calls":
        return lab["outcome"], window or "15m"
    if metric == "ccmon_agents":
        return "agents_" + lab["state"], NOW
    if metric == "ccmon_consumer_lag_messages":
        return "consumer_lag", SYSTEM
    if metric == "ccmon_last_commit_timestamp_seconds" and kind == "age":
        return "commit_age_seconds", SYSTEM
    if metric in windowed:
        return windowed[metric], window or "15m"
    if metric in now:
        return now[metric], NOW
    raise KeyError(f"no snapshot field for {metric}")


def _guard(g: Guard) -> Condition:
    metric, window = _snapshot_metric(g.metric, g.labels, g.window, "value")
    return Condition(metric, window, g.op, g.threshold)


def from_default(d: DefaultRule) -> Rule:
    """A built-in default as an engine rule (snapshot names; Prometheus names stay in the mirror)."""
    metric, window = _snapshot_metric(d.metric, d.labels, d.window, d.kind)
    threshold: Union[float, str] = "sl_target" if d.threshold == TARGET else float(d.threshold)
    clear = d.clear if d.threshold != TARGET else None
    clear_by = abs(d.clear) if d.threshold == TARGET and d.clear is not None else None
    return Rule(
        name=d.name, condition=Condition(metric, window, d.op, threshold), for_s=d.for_seconds, clear=clear,
        clear_by=clear_by, severity=d.severity, summary=d.summary, description=d.description,
        runbook_url=d.runbook_url, guard=_guard(d.guard) if d.guard else None,
        change_s=d.increase_seconds if d.kind == "increase" else None, builtin=True,
    )


# Predictive rules: the Erlang C forecast says the queue will miss its target at current staffing.
PREDICTIVE = (
    Rule(
        name="CcmonForecastBelowTarget",
        condition=Condition("predicted_service_level", NOW, "below", "sl_target"),
        for_s=120, clear_by=0.02, severity="warning", builtin=True,
        summary="Queue {queue} is heading for a service-level breach",
        description="At current arrivals and staffing, Erlang C predicts a service level of "
                    "{value:.0%} against a target of {sl_target:.0%}: {agents_required:.0f} agents are needed, "
                    "{agents_staffed:.0f} are staffed.",
        runbook_url="https://github.com/ccmon/ccmon/blob/main/docs/runbooks.md#forecast-below-target",
    ),
    Rule(
        name="CcmonAgentsShort",
        condition=Condition("agents_required", NOW, "above", "agents_staffed"),
        for_s=120, severity="warning", builtin=True,
        summary="Queue {queue} is {difference:.0f} agents short",
        description="Erlang C needs {value:.0f} agents to meet the {sl_target:.0%} target at current arrivals; "
                    "{threshold:.0f} are staffed. Add {difference:.0f} agents before the service level drops.",
        runbook_url="https://github.com/ccmon/ccmon/blob/main/docs/runbooks.md#agents-short",
    ),
)


def builtin_rules() -> tuple[Rule, ...]:
    """The built-in rules ccmon's own evaluator runs (Prometheus-only ones, like ``up``, excluded)."""
    return tuple(from_default(d) for d in DEFAULT_RULES if d.source == "ccmon") + PREDICTIVE


# --------------------------------------------------------------- loading


_ALIASES = {"for_": "for", "sender": "from"}


def _line_of(node: yaml.Node, loc: tuple[Union[str, int], ...]) -> int:
    """The line of the YAML node at a pydantic error location."""
    return line_of(node, loc, _ALIASES) or 1


def _resolve(r: ReceiverModel, environ: Mapping[str, str], where: str, problems: list[str]) -> Receiver:
    def env(name: Optional[str], what: str) -> str:
        if not name:
            return ""
        value = environ.get(name, "")
        if not value:
            problems.append(f"{where}: receiver {r.name}: {what} comes from ${name}, which is not set")
        return value

    url = r.url or env(r.url_env, "url") or (PAGERDUTY_URL if r.type == "pagerduty" else "")
    return Receiver(
        name=r.name, type=r.type, url=url, timeout_s=seconds(r.timeout), send_resolved=r.send_resolved,
        bearer_token=env(r.bearer_token_env, "the bearer token"), routing_key=env(r.routing_key_env, "routing_key"),
        host=r.host or "", port=r.port, starttls=r.starttls, username=r.username or "",
        password=env(r.password_env, "the password"), sender=r.sender or "", to=tuple(r.to or ()),
    )


def _queues(q: Union[str, list[str]]) -> Union[str, tuple[str, ...]]:
    return ALL if q == ALL else (q,) if isinstance(q, str) else tuple(q)


def parse(text: str, environ: Mapping[str, str], where: str = "alerts") -> AlertsConfig:
    """Validate an alerts YAML; raise AlertConfigError listing every problem with its line."""
    try:
        raw, node = compose(text, where)
    except ValueError as exc:
        raise AlertConfigError([str(exc)]) from None
    if raw is None:
        raw, node = {}, yaml.compose("{}")
    if not isinstance(raw, dict):
        raise AlertConfigError([f"{where}:1: the alerts file must be a mapping (evaluation_interval, rules, …)"])
    try:
        model = AlertsFileModel.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            path = ".".join(str(p) for p in loc if not str(p).startswith(("function-", "literal[", "union[")))
            problems.append(f"{where}:{_line_of(node, loc)}: {path or 'file'}: {err['msg']}")
        raise AlertConfigError(problems) from None

    problems: list[str] = []

    def line(*loc: Union[str, int]) -> str:
        return f"{where}:{_line_of(node, loc)}"

    receivers: dict[str, Receiver] = {}
    for i, r in enumerate(model.receivers):
        if r.name in receivers:
            problems.append(f"{line('receivers', i, 'name')}: receiver {r.name} is defined twice")
        receivers[r.name] = _resolve(r, environ, line("receivers", i), problems)

    def check_receivers(names: list[str], *loc: Union[str, int]) -> None:
        for n in names:
            if n not in receivers:
                problems.append(f"{line(*loc)}: unknown receiver {n!r} (defined: {', '.join(receivers) or 'none'})")

    check_receivers(model.default_receivers, "default_receivers")
    defaults = tuple(model.default_receivers)
    rules: list[Rule] = []
    builtins = {r.name: r for r in builtin_rules()} if model.builtin_rules else {}
    for name, o in model.overrides.items():
        if name not in builtins:
            problems.append(f"{line('overrides', name)}: no built-in rule {name!r} (built-ins: {', '.join(builtins)})")
            continue
        b = builtins[name]
        if not o.enabled:
            del builtins[name]
            continue
        if o.receivers is not None:
            check_receivers(o.receivers, "overrides", name, "receivers")
        cond = b.condition if o.threshold is None else replace(b.condition, threshold=o.threshold)
        builtins[name] = replace(
            b, condition=cond, clear=o.clear if o.clear is not None else (None if o.threshold is not None else b.clear),
            for_s=seconds(o.for_) if o.for_ is not None else b.for_s, severity=o.severity or b.severity,
            receivers=tuple(o.receivers) if o.receivers is not None else b.receivers,
            repeat_s=seconds(o.repeat_interval) if o.repeat_interval is not None else b.repeat_s,
            queues=_queues(o.queues) if o.queues is not None else b.queues,
        )
    for b in builtins.values():
        rules.append(b if b.receivers else replace(b, receivers=defaults))
    names = set(builtins)
    for i, m in enumerate(model.rules):
        if m.name in names:
            problems.append(f"{line('rules', i, 'name')}: rule {m.name} is defined twice (or shadows a built-in; "
                            f"use overrides: to change a built-in)")
        names.add(m.name)
        if m.receivers is not None:
            check_receivers(m.receivers, "rules", i, "receivers")
        cond = m.condition()
        if cond.window == SYSTEM and cond.metric not in SYSTEM_METRICS:
            problems.append(f"{line('rules', i, 'metric')}: window system has the metrics {', '.join(SYSTEM_METRICS)}")
        if m.clear is not None and isinstance(cond.threshold, str):
            problems.append(f"{line('rules', i, 'clear')}: with a metric as threshold use clear_by (an offset)")
        rules.append(Rule(
            name=m.name, condition=cond, queues=_queues(m.queues), for_s=seconds(m.for_), clear=m.clear,
            clear_by=m.clear_by, severity=m.severity, summary=m.summary, description=m.description,
            runbook_url=m.runbook_url, receivers=tuple(m.receivers) if m.receivers is not None else defaults,
            repeat_s=seconds(m.repeat_interval) if m.repeat_interval is not None else None,
            guard=m.guard.condition() if m.guard else None, change_s=seconds(m.change) if m.change else None,
        ))
    if problems:
        raise AlertConfigError(problems)
    return AlertsConfig(tuple(rules), receivers, seconds(model.evaluation_interval))


def load(path: Optional[Path], environ: Mapping[str, str]) -> AlertsConfig:
    """The alerts file at ``path``, or the built-ins with no receivers when there is none."""
    if path is None:
        return parse("", environ)
    try:
        text = path.read_text()
    except OSError as exc:
        raise AlertConfigError([f"{path}: cannot read the alerts file ({exc.strerror}); fix CCMON_ALERTS"]) from None
    return parse(text, environ, str(path))
