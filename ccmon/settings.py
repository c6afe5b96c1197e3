"""The one settings object: ``CCMON_*`` environment variables plus the queue YAML.

It is built once at start-up and passed down; no other module reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Literal, Mapping, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agents.business_hours import parse_calendar
from agents.config import FILTER_OPS, CustomCounter, CustomRatio, Filter, MetricsConfig, QueueConfig
from agents.core import BUILTIN_COUNTERS, DEFAULT_LIMITS
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
    stream_buffer: int = Field(default=64, ge=1)
    scrape_processes: int = Field(default=2, ge=0, le=64)  # /metrics helpers at many queues (ccmon/scrape_pool.py)
    max_future_seconds: float = Field(default=300.0, gt=0)
    max_queues: int = Field(default=DEFAULT_LIMITS["queues"], ge=0)
    max_agents: int = Field(default=DEFAULT_LIMITS["agents"], ge=0)
    max_channels: int = Field(default=DEFAULT_LIMITS["channels"], ge=0)
    max_kpis: int = Field(default=DEFAULT_LIMITS["kpis"], ge=0)
    kafka_session_timeout: float = Field(default=6.0, gt=0)
    log_level: str = "info"
    read_tokens: Optional[str] = None
    redis_password: Optional[str] = None
    redis_tls_ca_file: Optional[Path] = None
    redis_tls_cert_file: Optional[Path] = None
    redis_tls_key_file: Optional[Path] = None
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: Optional[str] = None
    kafka_sasl_password: Optional[str] = None
    kafka_ssl_ca_file: Optional[Path] = None
    kafka_ssl_cert_file: Optional[Path] = None
    kafka_ssl_key_file: Optional[Path] = None

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Secrets may also come from files named by ``CCMON_<NAME>_FILE``."""
        return init_settings, SecretFiles(settings_cls), env_settings  # a file beats an empty variable

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        overlap = set(self.read_token_list()) & set(tokens_of(self.ingest_tokens))
        if overlap:
            raise ValueError("a token is both a read token (CCMON_READ_TOKENS/CCMON_WALLBOARD_TOKEN) and an ingest "
                             "token (CCMON_INGEST_TOKENS); give readers and senders different tokens")
        if self.redis_password and not self.redis_url:
            raise ValueError("CCMON_REDIS_PASSWORD is set but CCMON_REDIS_URL is not (the embedded Redis has no "
                             "password); set CCMON_REDIS_URL to your Redis")
        redis_tls = [f for f in ("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file") if getattr(self, f)]
        if redis_tls and not (self.redis_url or "").startswith("rediss://"):
            raise ValueError(f"CCMON_{redis_tls[0].upper()} is set but CCMON_REDIS_URL is not a rediss:// URL; "
                             "use rediss://host:port/db for Redis over TLS")
        if bool(self.redis_tls_cert_file) != bool(self.redis_tls_key_file):
            raise ValueError("set both CCMON_REDIS_TLS_CERT_FILE and CCMON_REDIS_TLS_KEY_FILE for a client "
                             "certificate, or neither")
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise ValueError("set both CCMON_KAFKA_SSL_CERT_FILE and CCMON_KAFKA_SSL_KEY_FILE for a client "
                             "certificate, or neither")
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"CCMON_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                             "CCMON_KAFKA_SASL_USERNAME and CCMON_KAFKA_SASL_PASSWORD (or _FILE)")
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            raise ValueError("CCMON_KAFKA_SASL_USERNAME/PASSWORD are set but CCMON_KAFKA_SECURITY_PROTOCOL is "
                             f"{self.kafka_security_protocol}; set it to SASL_SSL (or SASL_PLAINTEXT)")
        kafka_tls = [f for f in ("kafka_ssl_ca_file", "kafka_ssl_cert_file") if getattr(self, f)]
        if kafka_tls and not self.kafka_security_protocol.endswith("SSL"):
            raise ValueError(f"CCMON_{kafka_tls[0].upper()} is set but CCMON_KAFKA_SECURITY_PROTOCOL is "
                             f"{self.kafka_security_protocol}; set it to SSL or SASL_SSL")
        return self

    def __repr_args__(self) -> Iterator[tuple[Optional[str], Any]]:  # never print a secret by accident
        yield from self.redacted().items()

    def redacted(self) -> dict[str, Any]:
        """The effective settings with every secret replaced by ``***`` (and the Redis URL's password)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in SECRET_FIELDS and value:
                value = redact_url(value) if name == "redis_url" else "***"
            out[name] = str(value) if isinstance(value, Path) else value
        return out

    def read_token_list(self) -> list[str]:
        """Tokens that may read (snapshot, alerts, wallboard): CCMON_READ_TOKENS plus CCMON_WALLBOARD_TOKEN."""
        return tokens_of(self.read_tokens) + tokens_of(self.wallboard_token)

    def redis_options(self) -> dict[str, Any]:
        """Keyword arguments for redis-py next to the URL: password and TLS files (a password in the URL wins)."""
        opts: dict[str, Any] = {}
        if self.redis_password:
            opts["password"] = self.redis_password
        for name, arg in (("redis_tls_ca_file", "ssl_ca_certs"), ("redis_tls_cert_file", "ssl_certfile"),
                          ("redis_tls_key_file", "ssl_keyfile")):
            if getattr(self, name):
                opts[arg] = str(getattr(self, name))
        return opts

    def kafka_ssl_context(self) -> Optional[ssl.SSLContext]:
        """The TLS context for SSL / SASL_SSL (verifies the broker; system CAs unless a CA file is set)."""
        if not self.kafka_security_protocol.endswith("SSL"):
            return None
        try:
            ctx = ssl.create_default_context(cafile=str(self.kafka_ssl_ca_file) if self.kafka_ssl_ca_file else None)
            if self.kafka_ssl_cert_file:
                ctx.load_cert_chain(str(self.kafka_ssl_cert_file), str(self.kafka_ssl_key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the Kafka TLS files (CCMON_KAFKA_SSL_CA_FILE / _CERT_FILE / _KEY_FILE): "
                              f"{exc}; check the paths and that they are PEM") from None
        return ctx

    def kafka_options(self) -> dict[str, Any]:
        """Security keyword arguments shared by kafka-python and aiokafka clients."""
        opts: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.endswith("SSL"):
            opts["ssl_context"] = self.kafka_ssl_context()
        if self.kafka_security_protocol.startswith("SASL_"):
            opts.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_sasl_username,
                        sasl_plain_password=self.kafka_sasl_password)
        return opts

    def label_caps(self) -> dict[str, int]:
        """Most values admitted per sender-controlled label (``agents.core.LabelCap``), by kind."""
        return {"queues": self.max_queues, "agents": self.max_agents, "channels": self.max_channels,
                "kpis": self.max_kpis}

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
            return load(self.alerts, SecretEnviron(os.environ))
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


SECRET_FIELDS = ("redis_url", "redis_password", "kafka_sasl_password", "read_tokens", "wallboard_token",
                 "ingest_tokens")


def tokens_of(text: Optional[str]) -> list[str]:
    """Comma-separated tokens as a list."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def read_secret_file(var: str, path: str) -> str:
    """A secret from a file (surrounding whitespace and the final newline removed)."""
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{var}={path} cannot be read ({exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc}); "
                          "fix the path or the file's permissions") from None


class SecretFiles(PydanticBaseSettingsSource):
    """``CCMON_<NAME>_FILE`` for each secret setting (Docker/Kubernetes secrets): the file holds the value."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        """Unused: ``__call__`` reads all the files at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in SECRET_FIELDS:
            var = f"CCMON_{name.upper()}"
            path = os.environ.get(var + "_FILE")
            if not path:
                continue
            if os.environ.get(var):
                raise ConfigError(f"both {var} and {var}_FILE are set; keep one")
            out[name] = read_secret_file(var + "_FILE", path)
        return out


class SecretEnviron(Mapping[str, str]):
    """The environment for alert receivers' ``*_env`` secrets: ``NAME``, or else the file named by ``NAME_FILE``."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def __getitem__(self, name: str) -> str:
        if self.environ.get(name):
            return self.environ[name]
        path = self.environ.get(name + "_FILE")
        if path:
            return read_secret_file(name + "_FILE", path)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.environ)

    def __len__(self) -> int:
        return len(self.environ)


def redact_url(url: str) -> str:
    """A URL without its password (user info and ``password=`` query values), for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        netloc = f"{user}:***@{host}" if user else f"***@{host}"
    query = parts.query
    if query:
        query = urlencode([(k, "***" if "password" in k.lower() else v) for k, v in parse_qsl(query, True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def load_settings() -> Settings:
    """Build the settings from the environment; raise ConfigError with the variable to fix."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join((f"CCMON_{str(e['loc'][0]).upper()}: " if e["loc"] else "")
                             + e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(f"invalid environment: {problems}") from None


def child_environment(**overrides: Optional[str]) -> dict[str, str]:
    """This process's environment with ``CCMON_*`` overrides, for a child process."""
    env = dict(os.environ)
    for name, value in overrides.items():
        key = "CCMON_" + name.upper()
        env.pop(key + "_FILE", None)  # the value given here replaces one read from a file
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env
