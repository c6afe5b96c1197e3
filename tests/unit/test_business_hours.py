"""The business-hours SLA clock: shifts, overnight hours, holidays, DST, pauses, deadlines and the YAML parser."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.business_hours import (
    ALWAYS_OPEN,
    Calendar,
    business_ms,
    deadline,
    open_intervals,
    parse_calendar,
)

MIN = 60_000
H = 3_600_000
DAY = 86_400_000
OPEN = 2**62  # the end of an open-ended pause


def at(text: str, tz: str = "UTC", fold: int = 0) -> int:
    """Epoch ms of an existing local wall time; ``fold=1`` picks the second occurrence of an ambiguous one."""
    wall = datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz), fold=fold)
    return round(wall.timestamp() * 1000)


def every(days: range, *shifts: tuple[str, str]) -> dict[int, tuple[tuple[str, str], ...]]:
    return {d: tuple(shifts) for d in days}


WEEKDAYS, ALL_WEEK = range(5), range(7)

# 2026-03-02 is a Monday; 2026-03-07/08 the weekend after it.
UTC_9_18 = Calendar("UTC", every(WEEKDAYS, ("09:00", "18:00")))
SPLIT = Calendar("UTC", every(WEEKDAYS, ("09:00", "12:00"), ("13:00", "18:00")))
NIGHT = Calendar("UTC", {4: (("22:00", "06:00"),)})  # Friday 22:00 -> Saturday 06:00
NIGHT_PLUS_SAT = Calendar("UTC", {4: (("22:00", "06:00"),), 5: (("05:00", "08:00"),)})
NIGHT_HOLIDAY_SAT = dataclasses.replace(NIGHT, holidays=frozenset({"2026-03-07"}))
NIGHT_HOLIDAY_FRI = dataclasses.replace(NIGHT, holidays=frozenset({"2026-03-06"}))
HOLIDAY_WED = dataclasses.replace(UTC_9_18, holidays=frozenset({"2026-03-04"}))
HOLIDAY_NEXT_MON = dataclasses.replace(UTC_9_18, holidays=frozenset({"2026-03-09"}))
NEVER = Calendar("UTC", {})


def all_day(tz: str) -> Calendar:
    return Calendar(tz, every(ALL_WEEK, ("00:00", "24:00")))


def daily(tz: str, start: str, end: str) -> Calendar:
    return Calendar(tz, every(ALL_WEEK, (start, end)))


def sunday(tz: str, start: str, end: str) -> Calendar:
    return Calendar(tz, {6: ((start, end),)})


BER, NYC, KOL = "Europe/Berlin", "America/New_York", "Asia/Kolkata"


def local_day(day: str, tz: str) -> tuple[int, int]:
    """The epoch-ms span of one local calendar day."""
    nxt = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    return at(f"{day} 00:00", tz), at(f"{nxt} 00:00", tz)


# --------------------------------------------------------------------------- business_ms, table-driven

BUSINESS_CASES: list[tuple[str, Calendar | None, int, int, list[tuple[int, int]], int]] = [
    # plain weekday hours
    ("one weekday", UTC_9_18, at("2026-03-02 00:00"), at("2026-03-03 00:00"), [], 9 * H),
    ("inside a shift", UTC_9_18, at("2026-03-02 10:30"), at("2026-03-02 12:00"), [], 90 * MIN),
    ("across the opening", UTC_9_18, at("2026-03-02 08:00"), at("2026-03-02 09:00:00.001"), [], 1),
    ("full week", UTC_9_18, at("2026-03-02 00:00"), at("2026-03-09 00:00"), [], 45 * H),
    ("weekend is closed", UTC_9_18, at("2026-03-07 00:00"), at("2026-03-09 00:00"), [], 0),
    ("Friday 17:00 to Monday 10:00", UTC_9_18, at("2026-03-06 17:00"), at("2026-03-09 10:00"), [], 2 * H),
    ("end before start", UTC_9_18, at("2026-03-02 12:00"), at("2026-03-02 10:00"), [], 0),
    ("empty range", UTC_9_18, at("2026-03-02 12:00"), at("2026-03-02 12:00"), [], 0),
    # split shifts
    ("split: whole day", SPLIT, at("2026-03-02 08:00"), at("2026-03-02 20:00"), [], 8 * H),
    ("split: across lunch", SPLIT, at("2026-03-02 11:00"), at("2026-03-02 14:00"), [], 2 * H),
    ("split: lunch only", SPLIT, at("2026-03-02 12:00"), at("2026-03-02 13:00"), [], 0),
    ("split: into lunch", SPLIT, at("2026-03-02 11:30"), at("2026-03-02 12:30"), [], 30 * MIN),
    ("split: overlapping shifts merge", Calendar("UTC", {0: (("09:00", "12:00"), ("11:00", "14:00"))}),
     at("2026-03-02 00:00"), at("2026-03-03 00:00"), [], 5 * H),
    # overnight
    ("overnight: whole night", NIGHT, at("2026-03-06 20:00"), at("2026-03-07 08:00"), [], 8 * H),
    ("overnight: Saturday part", NIGHT, at("2026-03-07 00:00"), at("2026-03-07 12:00"), [], 6 * H),
    ("overnight: across midnight", NIGHT, at("2026-03-06 23:00"), at("2026-03-07 01:00"), [], 2 * H),
    ("overnight: whole week", NIGHT, at("2026-03-02 00:00"), at("2026-03-09 00:00"), [], 8 * H),
    ("overnight: before it", NIGHT, at("2026-03-02 00:00"), at("2026-03-06 22:00"), [], 0),
    ("overnight: Sunday into Monday", Calendar("UTC", {6: (("22:00", "06:00"),)}),
     at("2026-03-09 00:00"), at("2026-03-09 12:00"), [], 6 * H),
    ("overnight: ends at 00:00", Calendar("UTC", {0: (("22:00", "00:00"),)}),
     at("2026-03-02 00:00"), at("2026-03-04 00:00"), [], 2 * H),
    ("overnight: start == end is 24 h", Calendar("UTC", {0: (("09:00", "09:00"),)}),
     at("2026-03-02 00:00"), at("2026-03-04 00:00"), [], 24 * H),
    ("24:00 end", Calendar("UTC", {0: (("18:00", "24:00"),)}), at("2026-03-02 00:00"), at("2026-03-03 00:00"), [], 6 * H),
    ("overnight merges with Saturday morning", NIGHT_PLUS_SAT,
     at("2026-03-06 20:00"), at("2026-03-07 12:00"), [], 10 * H),
    # holidays
    ("holiday: week minus Wednesday", HOLIDAY_WED, at("2026-03-02 00:00"), at("2026-03-07 00:00"), [], 36 * H),
    ("holiday: the day itself", HOLIDAY_WED, at("2026-03-04 00:00"), at("2026-03-05 00:00"), [], 0),
    ("holiday: Friday's night still runs into a Saturday holiday", NIGHT_HOLIDAY_SAT,
     at("2026-03-06 20:00"), at("2026-03-07 08:00"), [], 8 * H),
    ("holiday: a Friday holiday cancels the whole night", NIGHT_HOLIDAY_FRI,
     at("2026-03-06 00:00"), at("2026-03-08 00:00"), [], 0),
    # DST, Europe/Berlin (2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00)
    ("Berlin: spring-forward day is 23 h", all_day(BER), *local_day("2026-03-29", BER), [], 23 * H),
    ("Berlin: the day before is 24 h", all_day(BER), *local_day("2026-03-28", BER), [], 24 * H),
    ("Berlin: fall-back day is 25 h", all_day(BER), *local_day("2026-10-25", BER), [], 25 * H),
    ("Berlin: 02:00-04:00 on spring day is 1 h", sunday(BER, "02:00", "04:00"), *local_day("2026-03-29", BER), [], H),
    ("Berlin: 02:00-04:00 on fall day is 3 h", sunday(BER, "02:00", "04:00"), *local_day("2026-10-25", BER), [], 3 * H),
    ("Berlin: 02:00-04:00 on a normal Sunday", sunday(BER, "02:00", "04:00"), *local_day("2026-03-22", BER), [], 2 * H),
    ("Berlin: start in the gap maps to 03:00", sunday(BER, "02:30", "05:00"), *local_day("2026-03-29", BER), [], 2 * H),
    ("Berlin: shift wholly inside the gap", sunday(BER, "02:15", "02:45"), *local_day("2026-03-29", BER), [], 0),
    ("Berlin: overnight across spring-forward", Calendar(BER, {5: (("22:00", "06:00"),)}),
     *local_day("2026-03-29", BER), [], 5 * H),
    ("Berlin: overnight across fall-back", Calendar(BER, {5: (("22:00", "06:00"),)}),
     *local_day("2026-10-25", BER), [], 7 * H),
    ("Berlin: 09-17 daily over the spring week", daily(BER, "09:00", "17:00"),
     at("2026-03-23 00:00", BER), at("2026-03-30 00:00", BER), [], 56 * H),
    ("Berlin: 09-17 daily, UTC window across the change", daily(BER, "09:00", "17:00"),
     at("2026-03-28 08:00"), at("2026-03-29 08:00"), [], 9 * H),
    ("Berlin: 09-17 daily over the autumn week", daily(BER, "09:00", "17:00"),
     at("2026-10-19 00:00", BER), at("2026-10-26 00:00", BER), [], 56 * H),
    # DST, America/New_York (2026-03-08 02:00 -> 03:00, 2026-11-01 02:00 -> 01:00)
    ("New York: spring-forward day is 23 h", all_day(NYC), *local_day("2026-03-08", NYC), [], 23 * H),
    ("New York: fall-back day is 25 h", all_day(NYC), *local_day("2026-11-01", NYC), [], 25 * H),
    ("New York: 02:00-04:00 on spring day is 1 h", sunday(NYC, "02:00", "04:00"), *local_day("2026-03-08", NYC), [], H),
    ("New York: 01:00-03:00 on spring day is 1 h", sunday(NYC, "01:00", "03:00"), *local_day("2026-03-08", NYC), [], H),
    ("New York: 01:00-03:00 on fall day is 3 h", sunday(NYC, "01:00", "03:00"), *local_day("2026-11-01", NYC), [], 3 * H),
    ("New York: 02:00-04:00 on fall day is 2 h", sunday(NYC, "02:00", "04:00"), *local_day("2026-11-01", NYC), [], 2 * H),
    ("New York: 09-17 daily over the autumn week", daily(NYC, "09:00", "17:00"),
     at("2026-10-29 00:00", NYC), at("2026-11-05 00:00", NYC), [], 56 * H),
    ("Kolkata: no DST, 24 h day", all_day(KOL), *local_day("2026-03-29", KOL), [], 24 * H),
    # pauses
    ("pause across the weekend", UTC_9_18, at("2026-03-06 09:00"), at("2026-03-09 18:00"),
     [(at("2026-03-06 17:00"), at("2026-03-09 10:00"))], 16 * H),
    ("pause wholly in closed hours", UTC_9_18, at("2026-03-06 09:00"), at("2026-03-09 18:00"),
     [(at("2026-03-07 01:00"), at("2026-03-08 23:00"))], 18 * H),
    ("overlapping pauses", UTC_9_18, at("2026-03-02 00:00"), at("2026-03-03 00:00"),
     [(at("2026-03-02 10:00"), at("2026-03-02 12:00")), (at("2026-03-02 11:00"), at("2026-03-02 13:00")),
      (at("2026-03-02 12:30"), at("2026-03-02 12:45"))], 6 * H),
    ("duplicate pauses", UTC_9_18, at("2026-03-02 00:00"), at("2026-03-03 00:00"),
     [(at("2026-03-02 10:00"), at("2026-03-02 11:00"))] * 2, 8 * H),
    ("nested pauses, unsorted", UTC_9_18, at("2026-03-02 00:00"), at("2026-03-03 00:00"),
     [(at("2026-03-02 11:00"), at("2026-03-02 12:00")), (at("2026-03-02 10:00"), at("2026-03-02 14:00"))], 5 * H),
    ("pause outside the range", UTC_9_18, at("2026-03-02 00:00"), at("2026-03-03 00:00"),
     [(at("2026-02-23 10:00"), at("2026-02-23 12:00"))], 9 * H),
    ("pause covering everything", UTC_9_18, at("2026-03-02 00:00"), at("2026-03-03 00:00"),
     [(at("2026-03-01 00:00"), at("2026-03-04 00:00"))], 0),
    ("open-ended pause", UTC_9_18, at("2026-03-02 00:00"), at("2026-03-04 00:00"),
     [(at("2026-03-02 12:00"), OPEN)], 3 * H),
    ("empty pause", UTC_9_18, at("2026-03-02 00:00"), at("2026-03-03 00:00"),
     [(at("2026-03-02 10:00"), at("2026-03-02 10:00"))], 9 * H),
    ("pause over a split-shift lunch", SPLIT, at("2026-03-02 00:00"), at("2026-03-03 00:00"),
     [(at("2026-03-02 11:30"), at("2026-03-02 13:30"))], 7 * H),
    # 24/7 and never open
    ("24/7 is wall time", ALWAYS_OPEN, at("2026-03-02 00:00"), at("2026-03-09 00:00:00.123"), [], 7 * DAY + 123),
    ("24/7 across DST is wall time", None, at("2026-03-29 00:00", BER), at("2026-03-30 00:00", BER), [], 23 * H),
    ("24/7 minus overlapping pauses", None, at("2026-03-02 00:00"), at("2026-03-03 00:00"),
     [(at("2026-03-02 10:00"), at("2026-03-02 12:00")), (at("2026-03-02 11:00"), at("2026-03-02 13:00"))], 21 * H),
    ("24/7 with an open pause", None, at("2026-03-02 00:00"), at("2026-03-03 00:00"), [(at("2026-03-02 06:00"), OPEN)], 6 * H),
    ("never open", NEVER, at("2026-01-01 00:00"), at("2027-01-01 00:00"), [], 0),
]


@pytest.mark.parametrize(
    "cal, start, end, pauses, expected", [c[1:] for c in BUSINESS_CASES], ids=[c[0] for c in BUSINESS_CASES]
)
def test_business_ms(cal: Calendar | None, start: int, end: int, pauses: list[tuple[int, int]], expected: int) -> None:
    assert business_ms(cal, start, end, pauses) == expected


# --------------------------------------------------------------------------- deadline, table-driven

DEADLINE_CASES: list[tuple[str, Calendar | None, int, int, list[tuple[int, int]], int | None]] = [
    ("9 h from opening runs out at the close", UTC_9_18, at("2026-03-02 09:00"), 9 * H, [], at("2026-03-02 18:00")),
    ("starts before opening", UTC_9_18, at("2026-03-02 07:00"), H, [], at("2026-03-02 10:00")),
    # Convention: the earliest t, so a clock used up exactly at a shift end runs out at that end.
    ("exactly at the shift end", UTC_9_18, at("2026-03-02 17:00"), H, [], at("2026-03-02 18:00")),
    ("one ms past the shift end", UTC_9_18, at("2026-03-02 17:00"), H + 1, [], at("2026-03-03 09:00:00.001")),
    ("split: runs out at lunch", SPLIT, at("2026-03-02 11:00"), H, [], at("2026-03-02 12:00")),
    ("split: resumes after lunch", SPLIT, at("2026-03-02 11:00"), H + MIN, [], at("2026-03-02 13:01")),
    ("split: across lunch", SPLIT, at("2026-03-02 11:00"), 2 * H, [], at("2026-03-02 14:00")),
    ("Friday evening into next week", UTC_9_18, at("2026-03-06 17:00"), 2 * H, [], at("2026-03-09 10:00")),
    ("starts on the weekend", UTC_9_18, at("2026-03-07 12:00"), H, [], at("2026-03-09 10:00")),
    ("40 h lands next Tuesday", UTC_9_18, at("2026-03-04 10:00"), 40 * H, [], at("2026-03-10 14:00")),
    ("no holiday: 36 h from Monday", UTC_9_18, at("2026-03-02 09:00"), 36 * H, [], at("2026-03-05 18:00")),
    ("holiday inside a long clock", HOLIDAY_WED, at("2026-03-02 09:00"), 36 * H, [], at("2026-03-06 18:00")),
    ("holiday on the next opening day", HOLIDAY_NEXT_MON, at("2026-03-06 17:00"), 2 * H, [], at("2026-03-10 10:00")),
    ("overnight: runs out at 06:00 Saturday", NIGHT, at("2026-03-06 23:00"), 7 * H, [], at("2026-03-07 06:00")),
    ("overnight: next week's night", NIGHT, at("2026-03-06 23:00"), 7 * H + 1, [], at("2026-03-13 22:00:00.001")),
    ("overnight: start inside the Saturday part", NIGHT, at("2026-03-07 02:00"), 4 * H, [], at("2026-03-07 06:00")),
    ("overnight: from Monday", NIGHT, at("2026-03-02 00:00"), 8 * H, [], at("2026-03-07 06:00")),
    ("overnight: a Friday holiday skips the night", NIGHT_HOLIDAY_FRI, at("2026-03-05 00:00"), H, [], at("2026-03-13 23:00")),
    ("overnight: a Saturday holiday does not", NIGHT_HOLIDAY_SAT, at("2026-03-05 00:00"), 7 * H, [], at("2026-03-07 05:00")),
    # A zero target runs out at once, even while closed.
    ("zero target while closed", UTC_9_18, at("2026-03-07 12:00"), 0, [], at("2026-03-07 12:00")),
    ("zero target while open", UTC_9_18, at("2026-03-02 12:00"), 0, [], at("2026-03-02 12:00")),
    ("zero target, never open", NEVER, at("2026-03-02 12:00"), 0, [], at("2026-03-02 12:00")),
    ("zero target, paused", UTC_9_18, at("2026-03-02 12:00"), 0, [(at("2026-03-02 11:00"), OPEN)], at("2026-03-02 12:00")),
    # DST, Europe/Berlin
    ("Berlin: 23 h spans the spring day", all_day(BER), at("2026-03-29 00:00", BER), 23 * H, [], at("2026-03-30 00:00", BER)),
    ("Berlin: 24 h passes the spring day", all_day(BER), at("2026-03-29 00:00", BER), 24 * H, [], at("2026-03-30 01:00", BER)),
    ("Berlin: 25 h spans the fall day", all_day(BER), at("2026-10-25 00:00", BER), 25 * H, [], at("2026-10-26 00:00", BER)),
    ("Berlin: 24 h ends 23:00 on the fall day", all_day(BER), at("2026-10-25 00:00", BER), 24 * H, [],
     at("2026-10-25 23:00", BER)),
    ("Berlin: 09-17 Saturday into spring Sunday", daily(BER, "09:00", "17:00"), at("2026-03-28 16:00", BER), 2 * H, [],
     at("2026-03-29 10:00", BER)),
    ("Berlin: 09-17 Saturday into fall Sunday", daily(BER, "09:00", "17:00"), at("2026-10-24 16:00", BER), 2 * H, [],
     at("2026-10-25 10:00", BER)),
    ("Berlin: 02:00-04:00 on spring day", sunday(BER, "02:00", "04:00"), at("2026-03-29 00:00", BER), H, [],
     at("2026-03-29 04:00", BER)),
    ("Berlin: 02:00-04:00 on fall day", sunday(BER, "02:00", "04:00"), at("2026-10-25 00:00", BER), 3 * H, [],
     at("2026-10-25 04:00", BER)),
    ("Berlin: 1 h into the repeated hour", sunday(BER, "02:00", "04:00"), at("2026-10-25 00:00", BER), H, [],
     at("2026-10-25 02:00", BER, fold=1)),
    # DST, America/New_York
    ("New York: 23 h spans the spring day", all_day(NYC), at("2026-03-08 00:00", NYC), 23 * H, [], at("2026-03-09 00:00", NYC)),
    ("New York: 25 h spans the fall day", all_day(NYC), at("2026-11-01 00:00", NYC), 25 * H, [], at("2026-11-02 00:00", NYC)),
    ("New York: 09-17 Saturday into spring Sunday", daily(NYC, "09:00", "17:00"), at("2026-03-07 16:00", NYC), 2 * H, [],
     at("2026-03-08 10:00", NYC)),
    ("New York: 09-17 Saturday into fall Sunday", daily(NYC, "09:00", "17:00"), at("2026-10-31 16:00", NYC), 2 * H, [],
     at("2026-11-01 10:00", NYC)),
    ("New York: 01:00-03:00 on spring day", sunday(NYC, "01:00", "03:00"), at("2026-03-08 00:00", NYC), H, [],
     at("2026-03-08 03:00", NYC)),
    ("New York: 1 h into the repeated hour", sunday(NYC, "01:00", "03:00"), at("2026-11-01 00:00", NYC), H, [],
     at("2026-11-01 01:00", NYC, fold=1)),
    ("New York: 01:00-03:00 on fall day", sunday(NYC, "01:00", "03:00"), at("2026-11-01 00:00", NYC), 3 * H, [],
     at("2026-11-01 03:00", NYC)),
    # pauses
    ("pause across the weekend", UTC_9_18, at("2026-03-06 17:00"), 2 * H,
     [(at("2026-03-06 17:30"), at("2026-03-09 09:30"))], at("2026-03-09 11:00")),
    ("overlapping pauses", UTC_9_18, at("2026-03-02 09:00"), H,
     [(at("2026-03-02 09:00"), at("2026-03-02 09:30")), (at("2026-03-02 09:15"), at("2026-03-02 10:00"))],
     at("2026-03-02 11:00")),
    ("pause started before the clock", UTC_9_18, at("2026-03-02 09:00"), H,
     [(at("2026-03-01 12:00"), at("2026-03-02 10:00"))], at("2026-03-02 11:00")),
    ("pause ending exactly at the deadline", UTC_9_18, at("2026-03-02 09:00"), H,
     [(at("2026-03-02 09:30"), at("2026-03-02 10:30"))], at("2026-03-02 11:00")),
    ("open-ended pause", UTC_9_18, at("2026-03-02 09:00"), 2 * H, [(at("2026-03-02 10:00"), OPEN)], None),
    # 24/7, never open, horizon
    ("24/7: start + target", None, at("2026-03-07 12:00"), 5 * H, [], at("2026-03-07 17:00")),
    ("24/7: plus paused time", None, at("2026-03-07 12:00"), 5 * H,
     [(at("2026-03-07 13:00"), at("2026-03-07 14:00")), (at("2026-03-07 13:30"), at("2026-03-07 14:30")),
      (at("2026-03-07 11:00"), at("2026-03-07 12:30"))], at("2026-03-07 19:00")),
    ("24/7: open pause", None, at("2026-03-07 12:00"), H, [(at("2026-03-07 12:30"), OPEN)], None),
    ("never open", NEVER, at("2026-03-02 12:00"), MIN, [], None),
]


@pytest.mark.parametrize(
    "cal, start, target, pauses, expected", [c[1:] for c in DEADLINE_CASES], ids=[c[0] for c in DEADLINE_CASES]
)
def test_deadline(cal: Calendar | None, start: int, target: int, pauses: list[tuple[int, int]], expected: int | None) -> None:
    got = deadline(cal, start, target, pauses)
    assert got == expected
    if got is not None:
        assert business_ms(cal, start, got, pauses) == target
        if target:
            assert business_ms(cal, start, got - 1, pauses) == target - 1  # earliest


@pytest.mark.parametrize(
    "horizon, expected",
    [
        (24 * H, None),  # runs out Tuesday 10:00, 25 h after the start
        (25 * H - 1, None),
        (25 * H, at("2026-03-03 10:00")),  # the horizon is inclusive
        (400 * DAY, at("2026-03-03 10:00")),
    ],
)
def test_deadline_horizon(horizon: int, expected: int | None) -> None:
    assert deadline(UTC_9_18, at("2026-03-02 09:00"), 10 * H, horizon_ms=horizon) == expected


def test_deadline_none_when_every_day_is_a_holiday_within_the_horizon() -> None:
    days = frozenset((date(2026, 3, 1) + timedelta(days=i)).isoformat() for i in range(40))
    cal = dataclasses.replace(UTC_9_18, holidays=days)
    assert deadline(cal, at("2026-03-02 09:00"), H, horizon_ms=30 * DAY) is None
    assert deadline(cal, at("2026-03-02 09:00"), H) == at("2026-04-10 10:00")  # first working day after them


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="target_ms must be >= 0"):
        deadline(UTC_9_18, 0, -1)
    with pytest.raises(ValueError, match="ends before it starts"):
        business_ms(UTC_9_18, 0, DAY, [(10, 5)])
    with pytest.raises(ValueError, match="ends before it starts"):
        deadline(None, 0, H, [(10, 5)])


# --------------------------------------------------------------------------- open_intervals

OPEN_CASES: list[tuple[str, Calendar | None, int, int, list[tuple[int, int]]]] = [
    ("split day", SPLIT, at("2026-03-02 00:00"), at("2026-03-03 00:00"),
     [(at("2026-03-02 09:00"), at("2026-03-02 12:00")), (at("2026-03-02 13:00"), at("2026-03-02 18:00"))]),
    ("touching shifts merge", Calendar("UTC", {0: (("12:00", "18:00"), ("09:00", "12:00"))}),
     at("2026-03-02 00:00"), at("2026-03-03 00:00"), [(at("2026-03-02 09:00"), at("2026-03-02 18:00"))]),
    ("all-day shifts merge across midnights", all_day("UTC"), at("2026-03-02 05:00"), at("2026-03-05 07:00"),
     [(at("2026-03-02 05:00"), at("2026-03-05 07:00"))]),
    ("overnight merges with Saturday morning", NIGHT_PLUS_SAT, at("2026-03-06 00:00"), at("2026-03-08 00:00"),
     [(at("2026-03-06 22:00"), at("2026-03-07 08:00"))]),
    ("overnight started before the range", NIGHT, at("2026-03-07 03:00"), at("2026-03-08 00:00"),
     [(at("2026-03-07 03:00"), at("2026-03-07 06:00"))]),
    ("clipped to the range", UTC_9_18, at("2026-03-02 10:00"), at("2026-03-02 11:00"),
     [(at("2026-03-02 10:00"), at("2026-03-02 11:00"))]),
    ("holiday skipped", HOLIDAY_WED, at("2026-03-03 00:00"), at("2026-03-06 00:00"),
     [(at("2026-03-03 09:00"), at("2026-03-03 18:00")), (at("2026-03-05 09:00"), at("2026-03-05 18:00"))]),
    ("Kolkata 09:00-18:00 is 03:30-12:30 UTC", Calendar(KOL, {0: (("09:00", "18:00"),)}),
     at("2026-03-02 00:00"), at("2026-03-03 00:00"), [(at("2026-03-02 03:30"), at("2026-03-02 12:30"))]),
    ("Berlin gap: 02:00-04:00 is 01:00-02:00 UTC", sunday(BER, "02:00", "04:00"),
     at("2026-03-28 00:00"), at("2026-03-30 00:00"), [(at("2026-03-29 01:00"), at("2026-03-29 02:00"))]),
    ("Berlin fold: 02:00-04:00 is 00:00-03:00 UTC", sunday(BER, "02:00", "04:00"),
     at("2026-10-24 00:00"), at("2026-10-26 00:00"), [(at("2026-10-25 00:00"), at("2026-10-25 03:00"))]),
    ("24/7", None, 5, 17, [(5, 17)]),
    ("24/7, empty range", None, 17, 5, []),
    ("never open", NEVER, at("2026-01-01 00:00"), at("2027-01-01 00:00"), []),
]


@pytest.mark.parametrize("cal, start, end, expected", [c[1:] for c in OPEN_CASES], ids=[c[0] for c in OPEN_CASES])
def test_open_intervals(cal: Calendar | None, start: int, end: int, expected: list[tuple[int, int]]) -> None:
    assert open_intervals(cal, start, end) == expected


# --------------------------------------------------------------------------- Calendar

def test_calendar_defaults_and_normalisation() -> None:
    assert Calendar().timezone == "UTC"
    assert dict(Calendar().weekly) == every(WEEKDAYS, ("09:00", "17:00"))
    source = {2: [("09:00", "17:00")], 6: []}
    cal = Calendar("UTC", source, holidays={"2026-03-04"})  # type: ignore[arg-type]
    source[2].append(("18:00", "19:00"))
    source[3] = [("09:00", "17:00")]
    assert dict(cal.weekly) == {2: (("09:00", "17:00"),)}  # a copy: closed days dropped, later edits ignored
    assert cal.holidays == frozenset({"2026-03-04"})
    with pytest.raises(TypeError):
        cal.weekly[1] = ()  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cal.timezone = "Europe/Berlin"  # type: ignore[misc]


def test_calendar_equality_and_hash() -> None:
    a = Calendar(BER, {0: (("09:00", "17:00"),)}, frozenset({"2026-12-25"}))
    b = Calendar(BER, {0: [("09:00", "17:00")], 3: ()}, frozenset({"2026-12-25"}))  # type: ignore[dict-item]
    assert a == b and hash(a) == hash(b)
    assert a != dataclasses.replace(a, holidays=frozenset())
    assert a != Calendar(BER, {0: (("09:00", "18:00"),)}, frozenset({"2026-12-25"}))
    assert len({a, b}) == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"timezone": "Europe"}, "unknown timezone 'Europe'"),
        ({"timezone": ""}, "timezone must be a non-empty IANA name"),
        ({"weekly": {7: (("09:00", "17:00"),)}}, "weekly key 7 is not a weekday"),
        ({"weekly": {-1: (("09:00", "17:00"),)}}, "weekly key -1"),
        ({"weekly": {"mon": (("09:00", "17:00"),)}}, "weekly key 'mon'"),
        ({"weekly": {True: (("09:00", "17:00"),)}}, "weekly key True"),
        ({"weekly": {0: "09:00-17:00"}}, r"weekly\[0\] must be a sequence"),
        ({"weekly": {0: (("09:00", "17:00"), ("25:00", "26:00"))}}, r"weekly\[0\]\[1\]: time '25:00' is out of range"),
        ({"weekly": {1: (("9am", "17:00"),)}}, r"weekly\[1\]\[0\]: time '9am' is not 'HH:MM'"),
        ({"weekly": {2: (("24:00", "06:00"),)}}, r"weekly\[2\]\[0\]: time '24:00': 24:00 is only allowed as a shift end"),
        ({"weekly": {3: (("09:00",),)}}, r"weekly\[3\]\[0\]: shift must be a \(start, end\) pair"),
        ({"weekly": {4: (("09:00", 1700),)}}, r"weekly\[4\]\[0\]: time must be a string"),
        ({"weekly": {5: (("09:00", "12:60"),)}}, "out of range"),
        ({"weekly": [(("09:00", "17:00"),)]}, "weekly must map weekday"),
        ({"holidays": frozenset({"2026-02-30"})}, "holiday '2026-02-30' is not a valid date"),
        ({"holidays": frozenset({"20261225"})}, "holiday must be a date string 'YYYY-MM-DD'"),
        ({"holidays": "2026-12-25"}, "not one string"),
    ],
)
def test_calendar_rejects_bad_fields(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Calendar(**kwargs)


# --------------------------------------------------------------------------- parse_calendar

GOOD_YAML: list[tuple[str, Mapping[str, Any], Calendar]] = [
    (
        "the documented example",
        {"timezone": BER, "hours": {"mon": ["09:00-12:00", "13:00-18:00"], "fri": ["22:00-06:00"]},
         "holidays": ["2026-12-25"]},
        Calendar(BER, {0: (("09:00", "12:00"), ("13:00", "18:00")), 4: (("22:00", "06:00"),)}, frozenset({"2026-12-25"})),
    ),
    (
        "weekdays shorthand",
        {"timezone": NYC, "hours": {"weekdays": ["09:00-17:00"]}},
        Calendar(NYC, every(WEEKDAYS, ("09:00", "17:00"))),
    ),
    (
        "a named day overrides weekdays, whatever the order",
        {"hours": {"fri": ["09:00-15:00"], "weekdays": ["09:00-17:00"], "sat": ["10:00-14:00"]}},
        Calendar("UTC", {**every(range(4), ("09:00", "17:00")), 4: (("09:00", "15:00"),), 5: (("10:00", "14:00"),)}),
    ),
    (
        "a named day can close a weekday",
        {"hours": {"weekdays": ["09:00-17:00"], "wed": []}},
        Calendar("UTC", every((0, 1, 3, 4), ("09:00", "17:00"))),  # type: ignore[arg-type]
    ),
    (
        "single string, null day, loose spacing and case",
        {"hours": {"Mon": "09:00 - 17:00", "tue": None, "SUN": [" 22:00-24:00 "]}},
        Calendar("UTC", {0: (("09:00", "17:00"),), 6: (("22:00", "24:00"),)}),
    ),
    (
        "unquoted YAML dates",
        {"hours": {"mon": ["9:00-17:00"]}, "holidays": [date(2026, 12, 25), "2026-12-26"]},
        Calendar("UTC", {0: (("9:00", "17:00"),)}, frozenset({"2026-12-25", "2026-12-26"})),
    ),
    ("never open", {"timezone": KOL, "hours": {}}, Calendar(KOL, {})),
    ("null hours and holidays", {"hours": None, "holidays": None}, Calendar("UTC", {})),
]


@pytest.mark.parametrize("data, expected", [c[1:] for c in GOOD_YAML], ids=[c[0] for c in GOOD_YAML])
def test_parse_calendar_good(data: Mapping[str, Any], expected: Calendar) -> None:
    assert parse_calendar(data) == expected


def test_parsed_calendar_runs_the_clock() -> None:
    cal = parse_calendar({"timezone": BER, "hours": {"weekdays": ["09:00-12:00", "13:00-18:00"], "fri": ["22:00-06:00"]},
                          "holidays": ["2026-12-25"]})
    # Thu 2026-12-24: 8 h; Fri 25th holiday (its night too); back Monday the 28th.
    assert business_ms(cal, at("2026-12-24 00:00", BER), at("2026-12-29 00:00", BER)) == 16 * H
    assert deadline(cal, at("2026-12-24 17:00", BER), 2 * H) == at("2026-12-28 10:00", BER)


BAD_YAML: list[tuple[str, Any, str]] = [
    ("not a mapping", [("hours", {})], "calendar must be a mapping, got list"),
    ("unknown top-level key", {"tz": "UTC", "hours": {}}, r"calendar: unknown key\(s\) \['tz'\]"),
    ("unknown timezone", {"timezone": "Mars/Olympus", "hours": {}}, "timezone: unknown timezone 'Mars/Olympus'"),
    ("timezone not a string", {"timezone": 5, "hours": {}}, "timezone: timezone must be a non-empty IANA name"),
    ("missing hours", {"timezone": "UTC"}, "'hours' is required"),
    ("hours is a list", {"hours": ["09:00-17:00"]}, "hours: expected a mapping of day -> shifts, got list"),
    ("unknown day", {"hours": {"monday": ["09:00-17:00"]}}, "hours: unknown day 'monday'; expected one of mon, tue"),
    ("range without end", {"hours": {"mon": ["09:00"]}}, r"hours.mon\[0\]: '09:00' is not 'HH:MM-HH:MM'"),
    ("range with three parts", {"hours": {"sun": ["09:00-10:00-11:00"]}}, r"hours.sun\[0\]: '09:00-10:00-11:00' is not"),
    ("bad hour in the second shift", {"hours": {"tue": ["09:00-12:00", "25:00-18:00"]}},
     r"hours.tue\[1\]: '25:00-18:00': time '25:00' is out of range"),
    ("bad minute", {"hours": {"wed": ["09:60-10:00"]}}, r"hours.wed\[0\]: '09:60-10:00': time '09:60' is out of range"),
    ("24:00 as a start", {"hours": {"thu": ["24:00-06:00"]}}, r"hours.thu\[0\]: .*24:00 is only allowed as a shift end"),
    ("hours without minutes", {"hours": {"weekdays": ["9-17"]}}, r"hours.weekdays\[0\]: '9-17': time '9' is not 'HH:MM'"),
    ("shift not a string", {"hours": {"fri": [900]}}, r"hours.fri\[0\]: expected a string 'HH:MM-HH:MM', got int 900"),
    ("day is a mapping", {"hours": {"sat": {"from": "09:00"}}}, "hours.sat: expected a list of 'HH:MM-HH:MM' strings"),
    ("holidays is one string", {"hours": {}, "holidays": "2026-12-25"}, "holidays: expected a list"),
    ("impossible holiday", {"hours": {}, "holidays": ["2026-02-30"]},
     r"holidays\[0\]: holiday '2026-02-30' is not a valid date"),
    ("holiday in another format", {"hours": {}, "holidays": ["2026-12-24", "25/12/2026"]},
     r"holidays\[1\]: holiday must be a date string 'YYYY-MM-DD', got '25/12/2026'"),
    ("compact ISO holiday", {"hours": {}, "holidays": ["20261225"]}, r"holidays\[0\]: holiday must be a date string"),
    ("holiday with a time", {"hours": {}, "holidays": [datetime(2026, 12, 25, 12, 0)]}, r"holidays\[0\]"),
]


@pytest.mark.parametrize("data, message", [c[1:] for c in BAD_YAML], ids=[c[0] for c in BAD_YAML])
def test_parse_calendar_bad(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_calendar(data)


# --------------------------------------------------------------------------- properties

TZS = ["UTC", BER, NYC, KOL]
Y0, Y1 = at("2026-01-01 00:00"), at("2027-01-01 00:00")
DST_INSTANTS = [at("2026-03-29 01:00"), at("2026-10-25 01:00"), at("2026-03-08 07:00"), at("2026-11-01 06:00")]

# Quarter hours hit the DST gaps (02:00-03:00) and folds (Berlin 02:00-03:00, New York 01:00-02:00).
hhmm = st.integers(0, 95).map(lambda q: f"{q // 4:02d}:{q % 4 * 15:02d}")
shifts = st.tuples(hhmm, st.one_of(hhmm, st.just("24:00")))  # end <= start makes an overnight shift
calendars = st.builds(
    Calendar,
    timezone=st.sampled_from(TZS),
    weekly=st.dictionaries(st.integers(0, 6), st.lists(shifts, min_size=1, max_size=3).map(tuple), max_size=7),
    holidays=st.frozensets(st.dates(date(2025, 12, 28), date(2027, 1, 4)).map(date.isoformat), max_size=4),
)
maybe_calendars = st.one_of(st.none(), calendars)
instants = st.one_of(
    st.integers(Y0, Y1),
    st.builds(int.__add__, st.sampled_from(DST_INSTANTS), st.integers(-3 * DAY, 3 * DAY)),
)
spans = st.integers(0, 20 * DAY)
# Pauses relative to the clock's start, to be shifted into place; some are open-ended.
rel_pauses = st.lists(
    st.tuples(st.integers(-2 * DAY, 20 * DAY), st.one_of(st.integers(0, 4 * DAY), st.just(None))), max_size=4
)

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def place(start: int, rel: list[tuple[int, int | None]]) -> list[tuple[int, int]]:
    return [(start + a, OPEN if n is None else start + a + n) for a, n in rel]


def minutes_of(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


def oracle_instant(tz: ZoneInfo, day: date, minute: int) -> int:
    """First occurrence of a wall time; inside a gap, of the first wall minute after it that exists (brute force)."""
    wall = datetime.combine(day, time()) + timedelta(minutes=minute)
    while True:
        real = []
        for fold in (0, 1):
            ms = round(wall.replace(tzinfo=tz, fold=fold).timestamp() * 1000)
            if datetime.fromtimestamp(ms / 1000, tz).replace(tzinfo=None) == wall:
                real.append(ms)
        if real:
            return min(real)
        wall += timedelta(minutes=1)


def oracle_shifts(cal: Calendar, start: int, end: int) -> list[tuple[int, int]]:
    """Every shift instance (unmerged) that may touch [start, end), from the day before to the day after."""
    tz = ZoneInfo(cal.timezone)
    first = datetime.fromtimestamp(start / 1000, tz).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end / 1000, tz).date() + timedelta(days=1)
    out = []
    day = first
    while day <= last:
        if day.isoformat() not in cal.holidays:
            for s, e in cal.weekly.get(day.weekday(), ()):
                s_min, e_min = minutes_of(s), minutes_of(e)
                if e_min <= s_min:
                    e_min += 1440
                out.append((oracle_instant(tz, day, s_min), oracle_instant(tz, day, e_min)))
        day += timedelta(days=1)
    return out


def oracle_open(instances: list[tuple[int, int]], t: int) -> bool:
    return any(s <= t < e for s, e in instances)


@PROPS
@given(maybe_calendars, instants, spans, spans, rel_pauses)
def test_business_ms_is_additive(cal: Calendar | None, a: int, d1: int, d2: int, rel: list[tuple[int, int | None]]) -> None:
    pauses = place(a, rel)
    b, c = a + d1, a + d1 + d2
    assert business_ms(cal, a, c, pauses) == business_ms(cal, a, b, pauses) + business_ms(cal, b, c, pauses)


@PROPS
@given(maybe_calendars, instants, spans, spans, rel_pauses)
def test_business_ms_is_monotone_in_end_and_bounded_by_wall_time(
    cal: Calendar | None, a: int, d1: int, d2: int, rel: list[tuple[int, int | None]]
) -> None:
    pauses = place(a, rel)
    shorter, longer = business_ms(cal, a, a + d1, pauses), business_ms(cal, a, a + d1 + d2, pauses)
    assert 0 <= shorter <= longer <= d1 + d2
    assert business_ms(cal, a + d1, a, pauses) == 0


@PROPS
@given(maybe_calendars, instants, spans, rel_pauses, st.integers(-2 * DAY, 20 * DAY), st.integers(0, 3 * DAY),
       st.integers(0, 120 * H))
def test_a_pause_never_adds_time_nor_brings_a_deadline_forward(
    cal: Calendar | None, a: int, span: int, rel: list[tuple[int, int | None]], p0: int, plen: int, target: int
) -> None:
    pauses = place(a, rel)
    more = pauses + [(a + p0, a + p0 + plen)]
    assert business_ms(cal, a, a + span, more) <= business_ms(cal, a, a + span, pauses)
    before, after = deadline(cal, a, target, pauses), deadline(cal, a, target, more)
    if before is None:
        assert after is None
    elif after is not None:
        assert after >= before


@PROPS
@given(instants, spans, st.sampled_from(TZS), st.integers(0, 300 * H))
def test_24_7_equals_wall_time(a: int, span: int, tz: str, target: int) -> None:
    assert business_ms(None, a, a + span) == span
    assert open_intervals(None, a, a + span) == ([(a, a + span)] if span else [])
    assert deadline(None, a, target) == a + target
    # An all-day calendar in any zone is wall time too, DST days included.
    assert business_ms(all_day(tz), a, a + span) == span
    assert deadline(all_day(tz), a, target) == a + target


@PROPS
@given(maybe_calendars, instants, st.integers(0, 200 * H), rel_pauses)
def test_deadline_is_the_earliest_instant_the_clock_runs_out(
    cal: Calendar | None, a: int, target: int, rel: list[tuple[int, int | None]]
) -> None:
    pauses = place(a, rel)
    horizon = 60 * DAY
    t = deadline(cal, a, target, pauses, horizon_ms=horizon)
    if t is None:
        assert business_ms(cal, a, a + horizon, pauses) < target
    else:
        assert a <= t <= a + horizon
        assert business_ms(cal, a, t, pauses) == target
        if target:
            assert business_ms(cal, a, t - 1, pauses) == target - 1


@PROPS
@given(calendars, instants, st.integers(0, 10 * DAY))
def test_open_intervals_lie_within_the_range_and_inside_shifts(cal: Calendar, a: int, span: int) -> None:
    b = a + span
    got = open_intervals(cal, a, b)
    instances = oracle_shifts(cal, a, b)
    for (s1, e1), (s2, _) in itertools.pairwise(got):
        assert e1 < s2  # sorted, disjoint, and touching intervals are merged
    for s, e in got:
        assert a <= s < e <= b
        for t in (s, (s + e) // 2, e - 1):
            assert oracle_open(instances, t), (s, e, t)
        if s > a:
            assert not oracle_open(instances, s - 1)  # maximal on the left
        if e < b:
            assert not oracle_open(instances, e)  # and on the right
    assert sum(e - s for s, e in got) == business_ms(cal, a, b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calendars, instants.map(lambda t: t // MIN * MIN), st.integers(0, 2 * 1440))
def test_business_ms_matches_a_minute_by_minute_count(cal: Calendar, a: int, minutes: int) -> None:
    # Every boundary is on a whole minute (quarter-hour shifts, whole-minute offsets), so sampling is exact.
    b = a + minutes * MIN
    instances = oracle_shifts(cal, a, b)
    expected = sum(MIN for t in range(a, b, MIN) if oracle_open(instances, t))
    assert business_ms(cal, a, b) == expected
