"""The one settings object: ``CCMON_*`` environment variables plus the queue YAML.

It is built once at start-up and passed down; no other module reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agents.business_hours import parse_calendar
from agents.config import FILTER_OPS, CustomCounter, CustomRatio, Filter, MetricsConfig, QueueConfig
from agents.core import BUILTIN_COUNTERS
from ccmon.errors import ConfigError

if TYPE_CHECKING:
    from alerts.config import AlertsConfig

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``15m`` -> 900 seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"invalid duration {text!r}; use a number and a unit, e.g. 15m, 1h, 30s, 1d")
    return int(m.group(1)) * _UNIT[m.group(2)]


class SlaTargetModel(BaseModel):
    """SLA targets of one priority: ``{first_response: 1h, resolution: 4h}``."""

    model_config = ConfigDict(extra="forbid")
    first_response: str
    resolution: str

    @field_validator("first_response", "resolution")
    @classmethod
    def _d(cls, v: str) -> str:
        parse_duration(v)
        return v


class QueueModel(BaseModel):
    """One queue's settings in the YAML; every field is optional and falls back to ``defaults``."""

    model_config = ConfigDict(extra="forbid")
    ticket_sla: Optional[dict[Literal["urgent", "high", "normal", "low"], SlaTargetModel]] = None
    business_hours: Optional[dict[str, Any]] = None
    pause_statuses: Optional[list[Literal["open", "pending", "on_hold", "solved", "closed"]]] = None
    backlog_age: Optional[str] = None
    sl_threshold_seconds: Optional[float] = Field(default=None, gt=0)
    short_abandon_seconds: Optional[float] = Field(default=None, ge=0)
    timezone: Optional[str] = None
    daily_reset: Optional[str] = None
    sl_target: Optional[float] = Field(default=None, gt=0, le=1)
    sl_formula: Optional[Literal["standard", "answered_only", "abandons_met_if_short"]] = None
    asa_target_seconds: Optional[float] = Field(default=None, gt=0)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone {v!r}; use an IANA name such as Europe/Berlin") from None
        return v

    @field_validator("daily_reset")
    @classmethod
    def _reset(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
            raise ValueError(f"daily_reset {v!r} must be HH:MM, e.g. 00:00 or 06:30")
        return v

    @field_validator("backlog_age")
    @classmethod
    def _age(cls, v: Optional[str]) -> Optional[str]:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("business_hours")
    @classmethod
    def _hours(cls, v: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        if v:  # {} means 24/7, overriding a calendar in `defaults`
            parse_calendar(v)  # raises ValueError naming the bad entry
        return v

    def over(self, base: QueueConfig) -> QueueConfig:
        """This queue's settings layered over ``base``."""
        plain = {"sl_threshold_seconds", "short_abandon_seconds", "timezone", "daily_reset", "sl_target",
                 "sl_formula", "asa_target_seconds"}
        given: dict[str, Any] = {k: v for k, v in self.model_dump().items() if v is not None and k in plain}
        if self.ticket_sla is not None:
            sla = {p: (frt, res) for p, frt, res in base.ticket_sla}
            for p, t in self.ticket_sla.items():
                sla[p] = (parse_duration(t.first_response) * 1000, parse_duration(t.resolution) * 1000)
            given["ticket_sla"] = tuple((p, frt, res) for p, (frt, res) in sla.items())
        if self.business_hours is not None:
            given["calendar"] = parse_calendar(self.business_hours) if self.business_hours else None
        if self.pause_statuses is not None:
            given["pause_statuses"] = tuple(self.pause_statuses)
        if self.backlog_age is not None:
            given["backlog_age_ms"] = parse_duration(self.backlog_age) * 1000
        return dataclasses.replace(base, **given)


class CounterModel(BaseModel):
    """A custom counter: an event type and conditions, e.g. ``{event: ticket.created, where: [{field: tags, contains: complaint}]}``."""

    model_config = ConfigDict(extra="forbid")
    event: str
    where: list[dict[str, Any]] = []

    @field_validator("event")
    @classmethod
    def _event(cls, v: str) -> str:
        from streams.events import EVENT_TYPES

        if v not in EVENT_TYPES:
            raise ValueError(f"unknown event type {v!r}; use one of {', '.join(sorted(EVENT_TYPES))}")
        return v

    def filters(self) -> tuple[Filter, ...]:
        """The conditions as core filters."""
        out = []
        for cond in self.where:
            ops = [k for k in cond if k != "field"]
            if "field" not in cond or len(ops) != 1 or ops[0] not in FILTER_OPS:
                raise ValueError(
                    f"condition {cond!r} needs `field` and exactly one of {', '.join(FILTER_OPS)}, "
                    "e.g. {field: tags, contains: complaint}"
                )
            out.append(Filter(str(cond["field"]), ops[0], cond[ops[0]]))
        return tuple(out)


class RatioModel(BaseModel):
    """A custom ratio of two counters, built-in or custom."""

    model_config = ConfigDict(extra="forbid")
    numerator: str
    denominator: str


class CustomModel(BaseModel):
    """User-defined counters and ratios."""

    model_config = ConfigDict(extra="forbid")
    counters: dict[str, CounterModel] = {}
    ratios: dict[str, RatioModel] = {}


class FileModel(BaseModel):
    """The queue YAML (``CCMON_CONFIG``)."""

    model_config = ConfigDict(extra="forbid")
    bucket_seconds: int = Field(default=60, gt=0, le=3600)
    windows: list[str] = ["15m", "30m", "1h"]
    day_retention_days: int = Field(default=35, ge=1)
    lateness: str = "10m"
    fcr_window: str = "7d"
    call_max_age: str = "4h"
    agent_idle_eviction: str = "24h"
    defaults: QueueModel = QueueModel()
    queues: dict[str, QueueModel] = {}
    custom_metrics: CustomModel = CustomModel()

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        for w in v:
            if w == "today":
                raise ValueError("`today` is always present; list only rolling windows such as 15m or 1h")
            parse_duration(w)
        return v

    @field_validator("lateness", "call_max_age", "agent_idle_eviction", "fcr_window")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class Settings(BaseSettings):
    """Process settings from ``CCMON_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="CCMON_", extra="ignore")

    kafka_bootstrap: Optional[str] = None
    redis_url: Optional[str] = None
    topic_prefix: str = "cc."
    partitions: int = Field(default=4, ge=1, le=1024)
    config: Optional[Path] = None
    alerts: Optional[Path] = None
    wallboard_token: Optional[str] = None
    ingest_tokens: Optional[str] = None
    ingest_open: bool = False
    ingest_max_bytes: int = Field(default=1_048_576, ge=1024)
    ingest_max_line: int = Field(default=65_536, ge=256)
    ingest_rate: float = Field(default=20_000.0, gt=0)
    mappings_dir: Optional[Path] = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8640, ge=0, le=65535)
    data_dir: Path = Path(".ccmon")
    group_id: str = "ccmon"
    batch_size: int = Field(default=2000, ge=1)
    batch_seconds: float = Field(default=0.02, gt=0)
    commit_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_future_seconds: float = Field(default=300.0, gt=0)
    kafka_session_timeout: float = Field(default=6.0, gt=0)
    log_level: str = "info"

    def topic(self, domain: str) -> str:
        """The full topic name of a domain (``calls`` -> ``cc.calls``)."""
        return f"{self.topic_prefix}{domain}"

    @property
    def deadletter_topic(self) -> str:
        """Where rejected input goes."""
        return self.topic("deadletter")

    @property
    def alerts_topic(self) -> str:
        """Where firing and resolved alerts are published."""
        return self.topic("alerts")

    def metrics_config(self) -> MetricsConfig:
        """Load and validate the queue YAML into the core's config."""
        return load_metrics_config(self.config)

    def alerts_config(self) -> "AlertsConfig":
        """Load and validate the alerts YAML (built-in rules only when CCMON_ALERTS is unset).

        Receiver secrets are named by environment variable in the file and read here,
        the one place that reads the environment.
        """
        from alerts.config import AlertConfigError, load

        try:
            return load(self.alerts, os.environ)
        except AlertConfigError as exc:
            raise ConfigError(f"the alerts file is invalid (check it with `ccmon alerts check FILE`):\n{exc}") from None


def load_metrics_config(path: Optional[Path]) -> MetricsConfig:
    """Parse the queue YAML at ``path`` (defaults when ``None``); raise ConfigError with the fix."""
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"queue config {path} does not exist; fix CCMON_CONFIG or create the file") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"queue config {path} is not valid YAML: {exc}") from None
    try:
        model = FileModel.model_validate(raw)
        if parse_duration(model.call_max_age) <= parse_duration(model.lateness):
            raise ConfigError(f"queue config {path}: call_max_age must be longer than lateness")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"queue config {path or '(defaults)'} is invalid: {problems}") from None
    defaults = model.defaults.over(QueueConfig())
    try:
        counters = tuple(CustomCounter(name, c.event, c.filters()) for name, c in model.custom_metrics.counters.items())
    except ValueError as exc:
        raise ConfigError(f"queue config {path}: custom_metrics.counters: {exc}") from None
    known = set(model.custom_metrics.counters) | set(BUILTIN_COUNTERS)
    for name, r in model.custom_metrics.ratios.items():
        for operand in (r.numerator, r.denominator):
            if operand not in known:
                raise ConfigError(
                    f"queue config {path}: custom_metrics.ratios.{name}: {operand!r} is not a counter; "
                    f"use a custom counter or one of {', '.join(BUILTIN_COUNTERS)}"
                )
    ratios = tuple(CustomRatio(name, r.numerator, r.denominator) for name, r in model.custom_metrics.ratios.items())
    return MetricsConfig(
        bucket_seconds=model.bucket_seconds,
        windows=tuple((w, parse_duration(w)) for w in model.windows),
        defaults=defaults,
        queues={name: q.over(defaults) for name, q in model.queues.items()},
        day_retention_days=model.day_retention_days,
        lateness_seconds=parse_duration(model.lateness),
        call_max_age_seconds=parse_duration(model.call_max_age),
        agent_idle_eviction_seconds=parse_duration(model.agent_idle_eviction),
        fcr_window_seconds=parse_duration(model.fcr_window),
        custom_counters=counters,
        custom_ratios=ratios,
    )


def load_settings() -> Settings:
    """Build the settings from the environment; raise ConfigError with the variable to fix."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"CCMON_{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid environment: {problems}") from None


def child_environment(**overrides: Optional[str]) -> dict[str, str]:
    """This process's environment with ``CCMON_*`` overrides, for a child process."""
    env = dict(os.environ)
    for name, value in overrides.items():
        key = "CCMON_" + name.upper()
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env
