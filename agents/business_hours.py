"""Business-hours SLA clock: open time and deadlines on a weekly local-time calendar, exact across DST.

All instants are integer epoch milliseconds and all durations integer milliseconds, like the rest
of the core. Conventions:

* Shifts are ``(start, end)`` in local wall time ("HH:MM"). ``end <= start`` is an overnight shift
  ending on the next local day (so ``("09:00", "09:00")`` is 24 hours); ``"24:00"`` is allowed as an
  end and means the next local midnight. Overlapping or touching shifts simply merge.
* Wall times become instants in the calendar's zone: an ambiguous time (fall-back) is its first
  occurrence; a non-existent time (spring-forward gap) is the first instant after the gap. So on
  Berlin's 2026-03-29 a 00:00-24:00 shift lasts 23 h and 02:00-04:00 lasts 1 h; on 2026-10-25
  they last 25 h and 3 h.
* A shift belongs to the local date it starts on. A holiday cancels every shift starting on that
  date, including its overnight tail into the next day, while an overnight shift that started on
  the previous day still runs into the holiday.
* Pauses are half-open ``[start, end)``; they may overlap each other and cross closed hours, and
  only open time inside them is removed. An open-ended pause is ``(start, 2**62)``.
* ``None`` as a calendar means open 24/7.
* ``deadline`` returns the earliest instant at which the clock runs out: a target used up exactly at
  the end of a shift runs out at that end, not at the next opening, and a zero target runs out at
  once (at ``start_ms``, even while closed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Shift = tuple[str, str]
Interval = tuple[int, int]

MINUTES_PER_DAY = 1440
DAY_KEYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAYS_KEY = "weekdays"
OPEN_PAUSE_END = 2**62

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
# Calendar arithmetic looks one local day either side of a range and two days past a shift's start
# date; clamping keeps every such date inside datetime's years 1..9999 instead of overflowing.
_MIN_MS = (datetime(1, 1, 10, tzinfo=UTC) - _EPOCH) // _ONE_MS
_MAX_MS = (datetime(9999, 12, 20, tzinfo=UTC) - _EPOCH) // _ONE_MS

_TIME_RE = re.compile(r"(\d{1,2}):(\d{2})")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")

_DEFAULT_WEEKLY: dict[int, tuple[Shift, ...]] = {d: (("09:00", "17:00"),) for d in range(5)}


def _zone(name: object) -> ZoneInfo:
    """The zone called ``name``, or ValueError."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"timezone must be a non-empty IANA name such as 'Europe/Berlin', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown timezone {name!r}") from exc


def _parse_time(text: object, *, is_end: bool) -> int:
    """Minutes after local midnight for "HH:MM"; "24:00" only as an end."""
    if not isinstance(text, str):
        raise ValueError(f"time must be a string 'HH:MM', got {text!r}")
    m = _TIME_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"time {text!r} is not 'HH:MM'")
    hours, minutes = int(m.group(1)), int(m.group(2))
    if hours == 24 and minutes == 0:
        if not is_end:
            raise ValueError(f"time {text!r}: 24:00 is only allowed as a shift end")
        return MINUTES_PER_DAY
    if hours > 23 or minutes > 59:
        raise ValueError(f"time {text!r} is out of range (00:00-23:59, or 24:00 as an end)")
    return hours * 60 + minutes


def _shift_minutes(shift: object) -> tuple[int, int]:
    """(start, end) minutes after the start date's midnight; the end may fall on the next day."""
    if not isinstance(shift, (tuple, list)) or len(shift) != 2:
        raise ValueError(f"shift must be a (start, end) pair of 'HH:MM' strings, got {shift!r}")
    start = _parse_time(shift[0], is_end=False)
    end = _parse_time(shift[1], is_end=True)
    return (start, end if end > start else end + MINUTES_PER_DAY)


def _holiday_ordinal(text: object) -> int:
    """The proleptic ordinal of a strict "YYYY-MM-DD" holiday."""
    if not isinstance(text, str) or _DATE_RE.fullmatch(text) is None:
        raise ValueError(f"holiday must be a date string 'YYYY-MM-DD', got {text!r}")
    try:
        return date.fromisoformat(text).toordinal()
    except ValueError as exc:
        raise ValueError(f"holiday {text!r} is not a valid date") from exc


@dataclass(frozen=True, slots=True)
class Calendar:
    """Weekly local opening hours (0=Monday .. 6=Sunday) minus holidays; an empty ``weekly`` is never open."""

    timezone: str = "UTC"
    # Normalised to a read-only mapping of tuples (closed days dropped) so the calendar stays immutable.
    weekly: Mapping[int, tuple[Shift, ...]] = field(
        default_factory=lambda: MappingProxyType(dict(_DEFAULT_WEEKLY)), hash=False
    )
    holidays: frozenset[str] = frozenset()
    _minutes: tuple[tuple[tuple[int, int], ...], ...] = field(init=False, repr=False, compare=False)
    _holiday_ordinals: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _zone(self.timezone)
        if not isinstance(self.weekly, Mapping):
            raise ValueError(f"weekly must map weekday 0..6 to shifts, got {type(self.weekly).__name__}")
        weekly: dict[int, tuple[Shift, ...]] = {}
        minutes: list[tuple[tuple[int, int], ...]] = [()] * 7
        for day, shifts in self.weekly.items():
            if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 6:
                raise ValueError(f"weekly key {day!r} is not a weekday 0 (Monday) .. 6 (Sunday)")
            if not isinstance(shifts, (tuple, list)):
                raise ValueError(f"weekly[{day}] must be a sequence of (start, end) shifts, got {shifts!r}")
            parsed: list[tuple[int, int]] = []
            for i, shift in enumerate(shifts):
                try:
                    parsed.append(_shift_minutes(shift))
                except ValueError as exc:
                    raise ValueError(f"weekly[{day}][{i}]: {exc}") from None
            if parsed:
                weekly[day] = tuple((s.strip(), e.strip()) for s, e in shifts)
                minutes[day] = tuple(sorted(parsed))
        if isinstance(self.holidays, str):
            raise ValueError("holidays must be a collection of 'YYYY-MM-DD' strings, not one string")
        holidays = frozenset(self.holidays)
        object.__setattr__(self, "weekly", MappingProxyType(dict(sorted(weekly.items()))))
        object.__setattr__(self, "holidays", holidays)
        object.__setattr__(self, "_minutes", tuple(minutes))
        object.__setattr__(self, "_holiday_ordinals", frozenset(_holiday_ordinal(h) for h in holidays))


ALWAYS_OPEN: Calendar | None = None


def _ms_to_wall(ms: int, tz: ZoneInfo) -> datetime:
    """The naive local wall time at epoch ``ms``."""
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz).replace(tzinfo=None)


def _offset_at(ms: int, tz: ZoneInfo) -> timedelta | None:
    """The zone's UTC offset in force at epoch ``ms``."""
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz).utcoffset()


def _wall_to_ms(tz: ZoneInfo, ordinal: int, minute: int) -> int:
    """Epoch ms of local wall time ``minute`` minutes after midnight of date ``ordinal``."""
    wall = datetime.fromordinal(ordinal) + timedelta(minutes=minute)
    # fold=0 makes an ambiguous fall-back time its first occurrence, as the module docstring promises.
    first = (wall.replace(tzinfo=tz) - _EPOCH) // _ONE_MS
    if _ms_to_wall(first, tz) == wall:
        return first
    # In a spring-forward gap fold=0 and fold=1 read the wall time with the old and the new offset,
    # landing on either side of the transition; the gap's end is that transition, found exactly.
    other = (wall.replace(tzinfo=tz, fold=1) - _EPOCH) // _ONE_MS
    lo, hi = min(first, other), max(first, other)
    after = _offset_at(hi, tz)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_at(mid, tz) == after:
            hi = mid
        else:
            lo = mid
    return hi


@lru_cache(maxsize=1 << 16)
def _day_shifts(tz_name: str, shifts: tuple[tuple[int, int], ...], ordinal: int) -> tuple[Interval, ...]:
    """The epoch-ms intervals of the shifts starting on local date ``ordinal``, sorted by start."""
    tz = _zone(tz_name)
    out: list[Interval] = []
    for start_min, end_min in shifts:
        start = _wall_to_ms(tz, ordinal, start_min)
        end = _wall_to_ms(tz, ordinal, end_min)
        if end > start:  # a shift wholly inside a spring-forward gap does not exist
            out.append((start, end))
    return tuple(out)


def _iter_open(cal: Calendar | None, start_ms: int, end_ms: int) -> Iterator[Interval]:
    """Lazily yield the merged open intervals within [start_ms, end_ms), one local day at a time."""
    if end_ms <= start_ms:
        return
    if cal is None:
        yield (start_ms, end_ms)
        return
    if not cal.weekly:
        return
    start_ms, end_ms = max(start_ms, _MIN_MS), min(end_ms, _MAX_MS)
    if end_ms <= start_ms:
        return
    tz = _zone(cal.timezone)
    # The day before the start may hold an overnight shift still running at start_ms.
    first = _ms_to_wall(start_ms, tz).toordinal() - 1
    last = _ms_to_wall(end_ms, tz).toordinal()
    cur_start = cur_end = 0
    have = False
    for ordinal in range(first, last + 1):
        if ordinal in cal._holiday_ordinals:
            continue
        shifts = cal._minutes[(ordinal - 1) % 7]  # ordinal 1 (0001-01-01) is a Monday
        if not shifts:
            continue
        for s, e in _day_shifts(cal.timezone, shifts, ordinal):
            s, e = max(s, start_ms), min(e, end_ms)
            if e <= s:
                continue
            # Starts never decrease from one day to the next, so a running merge suffices.
            if have and s <= cur_end:
                cur_end = max(cur_end, e)
                continue
            if have:
                yield (cur_start, cur_end)
            cur_start, cur_end, have = s, e, True
    if have:
        yield (cur_start, cur_end)


def _unpaused(start_ms: int, end_ms: int, pauses: Sequence[tuple[int, int]]) -> Iterator[Interval]:
    """The gaps of [start_ms, end_ms) not covered by any pause, in order."""
    clipped: list[Interval] = []
    for pause in pauses:
        p0, p1 = pause
        if p1 < p0:
            raise ValueError(f"pause {pause!r} ends before it starts")
        p0, p1 = max(p0, start_ms), min(p1, end_ms)
        if p1 > p0:
            clipped.append((p0, p1))
    clipped.sort()
    cursor = start_ms
    for p0, p1 in clipped:
        if p0 > cursor:
            yield (cursor, p0)
        cursor = max(cursor, p1)
    if cursor < end_ms:
        yield (cursor, end_ms)


def open_intervals(cal: Calendar | None, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """The open periods within [start_ms, end_ms), as sorted, non-overlapping epoch-ms intervals."""
    return list(_iter_open(cal, start_ms, end_ms))


def business_ms(
    cal: Calendar | None, start_ms: int, end_ms: int, pauses: Sequence[tuple[int, int]] = ()
) -> int:
    """Open time between start and end (0 if end <= start), not counting time inside any pause interval."""
    if cal is None and not pauses:
        return max(0, end_ms - start_ms)  # 24/7 and never paused: the common case, without the walk below
    # Walking the unpaused gaps (not the days) skips long pauses, e.g. an open one, in one step.
    return sum(b - a for g0, g1 in _unpaused(start_ms, end_ms, pauses) for a, b in _iter_open(cal, g0, g1))


def deadline(
    cal: Calendar | None,
    start_ms: int,
    target_ms: int,
    pauses: Sequence[tuple[int, int]] = (),
    horizon_ms: int = 400 * 86400_000,
) -> int | None:
    """The earliest t >= start_ms where business_ms(cal, start_ms, t, pauses) == target_ms; None past the horizon."""
    if target_ms < 0:
        raise ValueError(f"target_ms must be >= 0, got {target_ms}")
    if target_ms == 0:
        return start_ms
    if cal is None and not pauses:
        return start_ms + target_ms if target_ms <= horizon_ms else None  # 24/7 and never paused
    remaining = target_ms
    for g0, g1 in _unpaused(start_ms, start_ms + horizon_ms, pauses):
        for a, b in _iter_open(cal, g0, g1):
            # `<=` puts a target used up exactly at a shift end on that end, the earliest such t.
            if remaining <= b - a:
                return a + remaining
            remaining -= b - a
    return None


def _parse_range(text: object) -> Shift:
    """A validated (start, end) pair from "HH:MM-HH:MM"."""
    if not isinstance(text, str):
        raise ValueError(f"expected a string 'HH:MM-HH:MM', got {type(text).__name__} {text!r}")
    parts = text.split("-")
    if len(parts) != 2:
        raise ValueError(f"{text!r} is not 'HH:MM-HH:MM'")
    shift = (parts[0].strip(), parts[1].strip())
    try:
        _shift_minutes(shift)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    return shift


def _parse_day(key: str, value: object) -> tuple[Shift, ...]:
    """The shifts of one ``hours`` entry: a list of ranges, one range, or null/[] for closed."""
    if value is None:
        return ()
    items: Iterable[object] = [value] if isinstance(value, str) else value  # type: ignore[assignment]
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"hours.{key}: expected a list of 'HH:MM-HH:MM' strings, got {value!r}")
    shifts: list[Shift] = []
    for i, item in enumerate(items):
        try:
            shifts.append(_parse_range(item))
        except ValueError as exc:
            raise ValueError(f"hours.{key}[{i}]: {exc}") from None
    return tuple(shifts)


def parse_calendar(data: Mapping[str, Any]) -> Calendar:
    """Build a Calendar from YAML-shaped {"timezone", "hours", "holidays"} data; ValueError names the bad entry."""
    if not isinstance(data, Mapping):
        raise ValueError(f"calendar must be a mapping, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in ("timezone", "hours", "holidays"))
    if unknown:
        raise ValueError(f"calendar: unknown key(s) {unknown}; expected timezone, hours, holidays")
    tz_name = data.get("timezone", "UTC")
    try:
        _zone(tz_name)
    except ValueError as exc:
        raise ValueError(f"timezone: {exc}") from None

    if "hours" not in data:
        raise ValueError("calendar: 'hours' is required (use 'hours: {}' for a calendar that is never open)")
    hours = data["hours"] if data["hours"] is not None else {}
    if not isinstance(hours, Mapping):
        raise ValueError(f"hours: expected a mapping of day -> shifts, got {type(hours).__name__}")
    weekly: dict[int, tuple[Shift, ...]] = {}
    specific: dict[int, tuple[Shift, ...]] = {}
    for raw_key, value in hours.items():
        key = str(raw_key).strip().lower()
        if key == WEEKDAYS_KEY:
            for day in range(5):
                weekly[day] = _parse_day(key, value)
        elif key in DAY_KEYS:
            specific[DAY_KEYS.index(key)] = _parse_day(key, value)
        else:
            raise ValueError(f"hours: unknown day {raw_key!r}; expected one of {', '.join(DAY_KEYS)} or {WEEKDAYS_KEY}")
    # A named day overrides the 'weekdays' shorthand whatever the key order, e.g. a short Friday.
    weekly.update(specific)

    raw_holidays = data.get("holidays") or []
    if isinstance(raw_holidays, (str, bytes)) or not isinstance(raw_holidays, (list, tuple, set, frozenset)):
        raise ValueError(f"holidays: expected a list of 'YYYY-MM-DD' dates, got {raw_holidays!r}")
    holidays: set[str] = set()
    for i, item in enumerate(raw_holidays):
        # Unquoted YAML dates arrive as datetime.date; a datetime (also a date) carries a time and is rejected.
        text = item.isoformat() if isinstance(item, date) and not isinstance(item, datetime) else item
        try:
            _holiday_ordinal(text)
        except ValueError as exc:
            raise ValueError(f"holidays[{i}]: {exc}") from None
        holidays.add(text)  # type: ignore[arg-type]
    return Calendar(timezone=tz_name, weekly=weekly, holidays=frozenset(holidays))
