"""Metric configuration as plain frozen dataclasses, and the event-time window rules."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Literal, Mapping, Optional
from zoneinfo import ZoneInfo

from agents.business_hours import Calendar

SlFormula = Literal["standard", "answered_only", "abandons_met_if_short"]
SL_FORMULAS: tuple[str, ...] = ("standard", "answered_only", "abandons_met_if_short")


H_MS, D_MS = 3600_000, 86400_000
DEFAULT_TICKET_SLA: tuple[tuple[str, int, int], ...] = (
    ("urgent", 1 * H_MS, 4 * H_MS), ("high", 4 * H_MS, 1 * D_MS), ("normal", 8 * H_MS, 3 * D_MS), ("low", 24 * H_MS, 5 * D_MS),
)

# Histogram bucket bounds (ms). Each queue's own thresholds and targets are added, so
# Prometheus can read service level and SLA attainment straight off the buckets.
WAIT_BUCKETS_MS: tuple[int, ...] = tuple(s * 1000 for s in (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600))
FRT_BUCKETS_MS: tuple[int, ...] = tuple(m * 60_000 for m in (5, 15, 30, 60, 120, 240, 480, 1440, 2880, 4320))


def bucket_bound(bounds: tuple[int, ...], value: int) -> Optional[int]:
    """The smallest bound >= ``value`` (a histogram's ``le``), or None for +Inf."""
    i = bisect_left(bounds, value)
    return bounds[i] if i < len(bounds) else None


HIST = "h:"  # counter-field prefix of histograms: "h:<name>:<bound>|inf" and "h:<name>:sum" (lifetime only)


def hist_fields(name: str, bounds: tuple[int, ...], value: int) -> tuple[str, str]:
    """The (bucket, sum) counter fields one observation of histogram ``name`` increments (integer units)."""
    bound = bucket_bound(bounds, value)
    return f"{HIST}{name}:{'inf' if bound is None else bound}", f"{HIST}{name}:sum"


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Per-queue settings; queues not listed in the YAML use the defaults."""

    sl_threshold_seconds: float = 20.0
    short_abandon_seconds: float = 5.0
    timezone: str = "UTC"
    daily_reset: str = "00:00"
    sl_target: float = 0.80
    sl_formula: SlFormula = "standard"
    asa_target_seconds: Optional[float] = None
    # Tickets: SLA targets per priority (ms), business hours (None: 24/7), statuses that stop the clock.
    ticket_sla: tuple[tuple[str, int, int], ...] = DEFAULT_TICKET_SLA
    calendar: Optional[Calendar] = None
    pause_statuses: tuple[str, ...] = ("pending", "on_hold")
    backlog_age_ms: int = 24 * 3600_000
    # Derived once: histogram bounds (ms) including this queue's thresholds and targets.
    wait_bounds_ms: tuple[int, ...] = field(init=False, repr=False, compare=False)
    frt_bounds_ms: tuple[int, ...] = field(init=False, repr=False, compare=False)
    sl_threshold_ms: int = field(init=False, repr=False, compare=False)  # T in milliseconds
    short_abandon_ms: int = field(init=False, repr=False, compare=False)  # S in milliseconds

    def __post_init__(self) -> None:
        object.__setattr__(self, "sl_threshold_ms", round(self.sl_threshold_seconds * 1000))
        object.__setattr__(self, "short_abandon_ms", round(self.short_abandon_seconds * 1000))
        object.__setattr__(self, "wait_bounds_ms", tuple(sorted(
            {*WAIT_BUCKETS_MS, round(self.sl_threshold_seconds * 1000), round(self.short_abandon_seconds * 1000)})))
        object.__setattr__(self, "frt_bounds_ms", tuple(sorted({*FRT_BUCKETS_MS, *(frt for _, frt, _ in self.ticket_sla)})))

    def sla_targets(self, priority: str) -> tuple[int, int]:
        """(first response, resolution) targets in ms for a priority."""
        for p, frt, res in self.ticket_sla:
            if p == priority:
                return frt, res
        return self.sla_targets("normal") if priority != "normal" else (8 * 3600_000, 3 * 86400_000)



FILTER_OPS = ("equals", "not_equals", "contains", "in", "gt", "gte", "lt", "lte", "exists")


@dataclass(frozen=True, slots=True)
class Filter:
    """One condition on an event field: ``tags contains "complaint"``, ``attributes.plan equals "gold"``."""

    field: str
    op: str
    value: object = None

    def matches(self, event: object) -> bool:
        """Whether ``event`` satisfies the condition (a missing field never matches, except for ``exists``)."""
        value: object = event
        for part in self.field.split("."):
            value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
            if value is None:
                break
        if self.op == "exists":
            return (value is not None) == bool(self.value if self.value is not None else True)
        if value is None:
            return False
        if self.op == "equals":
            return value == self.value
        if self.op == "not_equals":
            return value != self.value
        if self.op == "contains":
            return self.value in value if isinstance(value, (list, str)) else False  # type: ignore[operator]
        if self.op == "in":
            return value in self.value  # type: ignore[operator]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        bound = float(self.value)  # type: ignore[arg-type]
        return {"gt": value > bound, "gte": value >= bound, "lt": value < bound, "lte": value <= bound}[self.op]


@dataclass(frozen=True, slots=True)
class CustomCounter:
    """A user-defined count of applied events of one type that pass every filter."""

    name: str
    event: str
    where: tuple[Filter, ...] = ()

    def matches(self, event: object) -> bool:
        """Whether this counter counts ``event``."""
        return getattr(event, "type", None) == self.event and all(f.matches(event) for f in self.where)


@dataclass(frozen=True, slots=True)
class CustomRatio:
    """A user-defined ratio of two counters (built-in or custom), per window."""

    name: str
    numerator: str
    denominator: str


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Everything the pure core needs: bucket width, rolling windows and queues."""

    bucket_seconds: int = 60
    windows: tuple[tuple[str, int], ...] = (("15m", 900), ("30m", 1800), ("1h", 3600))
    defaults: QueueConfig = QueueConfig()
    queues: Mapping[str, QueueConfig] = field(default_factory=dict)
    day_retention_days: int = 35
    lateness_seconds: int = 600
    call_max_age_seconds: int = 4 * 3600
    agent_idle_eviction_seconds: int = 24 * 3600
    forecast_arrival_seconds: int = 900  # lambda comes from the offers of the last 15 minutes
    forecast_aht_seconds: int = 3600  # AHT for the forecast comes from the last hour
    fcr_window_seconds: int = 7 * 86400
    custom_counters: tuple[CustomCounter, ...] = ()
    custom_ratios: tuple[CustomRatio, ...] = ()
    # How far behind the partition's stream time an event may arrive and still count (derived, in ms).
    lateness_ms: int = field(init=False, repr=False, compare=False)
    call_max_age_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lateness_ms", self.lateness_seconds * 1000)
        object.__setattr__(self, "call_max_age_ms", self.call_max_age_seconds * 1000)

    def queue(self, name: str) -> QueueConfig:
        """The configuration of one queue (the defaults when it is not listed)."""
        return self.queues.get(name, self.defaults)

    @property
    def longest_window_seconds(self) -> int:
        """The longest span any reader sums buckets over; older buckets may expire."""
        return max([s for _, s in self.windows] + [self.forecast_arrival_seconds, self.forecast_aht_seconds])

    @property
    def window_names(self) -> tuple[str, ...]:
        """Window names in snapshot order: the rolling ones, then ``today``."""
        return tuple(n for n, _ in self.windows) + ("today",)


def bucket_start(ts_ms: int, width_s: int) -> int:
    """The start (epoch seconds) of the event-time bucket holding ``ts_ms``."""
    return (ts_ms // (width_s * 1000)) * width_s


def in_rolling_window(bucket_s: int, width_s: int, window_s: int, now_ms: int) -> bool:
    """Whether bucket ``[b, b+width)`` overlaps the last ``window_s`` seconds before ``now_ms``."""
    return (bucket_s + width_s) * 1000 > now_ms - window_s * 1000 and bucket_s * 1000 <= now_ms


def window_buckets(width_s: int, window_s: int, now_ms: int) -> range:
    """Every bucket start that overlaps the rolling window ending at ``now_ms``."""
    last = bucket_start(now_ms, width_s)
    first = bucket_start(now_ms - window_s * 1000, width_s)
    if not in_rolling_window(first, width_s, window_s, now_ms):
        first += width_s
    return range(first, last + 1, width_s)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=256)
def _reset_offset(daily_reset: str) -> timedelta:
    hours, minutes = daily_reset.split(":")
    return timedelta(hours=int(hours), minutes=int(minutes))


def _day_of(ts_ms: int, zone: str, daily_reset: str) -> str:
    local = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).astimezone(_zone(zone))
    # Wall-clock arithmetic on purpose: the day starts at the reset time on the local clock, DST or not.
    return (local.replace(tzinfo=None) - _reset_offset(daily_reset)).date().isoformat()


_days: dict[tuple[int, str, str], str] = {}


def day_of(ts_ms: int, q: QueueConfig) -> str:
    """The queue-local business day (``YYYY-MM-DD``) holding ``ts_ms``; days start at ``daily_reset``."""
    minute = ts_ms - ts_ms % 60_000
    key = (minute, q.timezone, q.daily_reset)
    day = _days.get(key)
    if day is None:
        day = _day_of(minute, q.timezone, q.daily_reset)
        if _day_of(minute + 59_999, q.timezone, q.daily_reset) != day:
            return _day_of(ts_ms, q.timezone, q.daily_reset)  # a day boundary inside the minute: no caching
        if len(_days) >= 100_000:
            _days.clear()  # a cache, not state: bounded so memory stays flat
        _days[key] = day
    return day


def day_end_epoch(day: str, q: QueueConfig) -> int:
    """Epoch seconds at which the queue-local ``day`` ends (its next reset)."""
    return _day_end(day, q.timezone, q.daily_reset)


@lru_cache(maxsize=4096)  # every commit asks for each day hash it touches: a few days per queue and zone
def _day_end(day: str, zone: str, daily_reset: str) -> int:
    start = datetime.fromisoformat(day) + timedelta(days=1) + _reset_offset(daily_reset)
    return int(start.replace(tzinfo=_zone(zone)).timestamp())
