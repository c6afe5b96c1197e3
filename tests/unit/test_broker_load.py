"""``ccmon run`` tells the user when the embedded broker has filled up enough to take half a core."""

from __future__ import annotations

import os

from ccmon.services import process_usage
from ccmon.supervisor import BROKER_BUSY, BROKER_WARN_EVERY, BROKER_WINDOW, BrokerLoad


def feed(load: BrokerLoad, share: float, start: float = 0.0, minutes: int = 1, rss: float = 400.0) -> list[str]:
    """One sample a second at ``share`` of a core; the warnings that came out."""
    out = []
    for t in range(int(BROKER_WINDOW * minutes) + 1):
        now = start + t
        line = load.check(now, (now * share, rss))
        if line:
            out.append(line)
    return out


def test_a_quiet_broker_says_nothing() -> None:
    assert feed(BrokerLoad(), BROKER_BUSY - 0.05, minutes=5) == []


def test_a_busy_broker_is_reported_once_a_window_has_passed_with_what_to_do() -> None:
    load = BrokerLoad()
    assert [load.check(float(t), (t * 0.8, 300.0)) for t in range(int(BROKER_WINDOW))] == [None] * int(BROKER_WINDOW)
    line = load.check(BROKER_WINDOW, (BROKER_WINDOW * 0.8, 300.0))
    assert line is not None
    assert "80% of a core" in line and "300 MiB" in line
    assert "Restart `ccmon run`" in line and "CCMON_KAFKA_BOOTSTRAP" in line


def test_the_warning_repeats_at_most_once_an_hour() -> None:
    load = BrokerLoad()
    assert len(feed(load, 0.9, minutes=30)) == 1
    later = feed(load, 0.9, start=BROKER_WARN_EVERY + BROKER_WINDOW, minutes=2)
    assert len(later) == 1


def test_an_unreadable_process_says_nothing() -> None:
    assert BrokerLoad().check(0.0, None) is None
    assert process_usage(2**22 + 12345) is None  # no such pid (above Linux's pid_max)


def test_usage_of_a_live_process_is_read_from_proc() -> None:
    usage = process_usage(os.getpid())
    assert usage is not None
    cpu, rss = usage
    assert cpu > 0 and 5 < rss < 10_000
