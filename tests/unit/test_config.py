"""Windows, business days across time zones and DST, and the settings/YAML loader."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agents.config import QueueConfig, bucket_start, day_end_epoch, day_of, in_rolling_window, window_buckets
from ccmon.errors import ConfigError
from ccmon.settings import load_metrics_config, load_settings, parse_duration


def ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


@pytest.mark.parametrize(
    "ts, width, start",
    [(0, 60, 0), (59_999, 60, 0), (60_000, 60, 60), (1795428059_999, 60, 1795428000), (1795428000_000, 300, 1795428000)],
)
def test_bucket_start(ts: int, width: int, start: int) -> None:
    assert bucket_start(ts, width) == start


def test_window_buckets_cover_exactly_the_overlapping_buckets() -> None:
    now = ms("2026-11-23T10:15:30+00:00")
    b = window_buckets(60, 900, now)
    assert b[0] == bucket_start(now - 900_000, 60)  # 10:00:30 lies inside the 10:00 bucket
    assert b[-1] == bucket_start(now, 60) and len(b) == 16
    assert all(in_rolling_window(x, 60, 900, now) for x in b)
    assert not in_rolling_window(b[0] - 60, 60, 900, now) and not in_rolling_window(b[-1] + 60, 60, 900, now)
    aligned = ms("2026-11-23T10:15:00+00:00")
    assert len(window_buckets(60, 900, aligned)) == 16  # 10:00 … 10:15, the 10:15 bucket has just begun


@pytest.mark.parametrize(
    "when, tz, reset, day",
    [
        ("2026-11-23T23:30:00+00:00", "UTC", "00:00", "2026-11-23"),
        ("2026-11-23T23:30:00+00:00", "Europe/Berlin", "00:00", "2026-11-24"),
        ("2026-11-23T04:30:00+00:00", "America/New_York", "00:00", "2026-11-22"),
        ("2026-11-23T05:30:00+00:00", "UTC", "06:00", "2026-11-22"),
        ("2026-11-23T06:00:00+00:00", "UTC", "06:00", "2026-11-23"),
        # DST: Berlin springs forward on 2026-03-29 at 02:00 local; the day still starts at local midnight
        ("2026-03-28T23:00:00+00:00", "Europe/Berlin", "00:00", "2026-03-29"),
        ("2026-03-28T22:59:59+00:00", "Europe/Berlin", "00:00", "2026-03-28"),
        ("2026-10-24T22:00:00+00:00", "Europe/Berlin", "00:00", "2026-10-25"),
        ("2026-11-01T04:00:00+00:00", "America/New_York", "00:00", "2026-11-01"),
        ("2026-11-01T03:59:59+00:00", "America/New_York", "00:00", "2026-10-31"),
    ],
)
def test_day_of_follows_the_local_reset(when: str, tz: str, reset: str, day: str) -> None:
    assert day_of(ms(when), QueueConfig(timezone=tz, daily_reset=reset)) == day


def test_day_end_is_the_next_local_reset_even_across_dst() -> None:
    q = QueueConfig(timezone="Europe/Berlin")
    end = day_end_epoch("2026-03-29", q)  # a 23-hour day
    assert datetime.fromtimestamp(end, ZoneInfo("Europe/Berlin")).isoformat() == "2026-03-30T00:00:00+02:00"
    assert end - day_end_epoch("2026-03-28", q) == 23 * 3600


def test_parse_duration() -> None:
    assert [parse_duration(x) for x in ("30s", "15m", "1h", "2d")] == [30, 900, 3600, 172800]
    with pytest.raises(ValueError, match="e.g. 15m"):
        parse_duration("15 minutes")


def test_yaml_layers_queue_over_defaults(tmp_path: Path) -> None:
    p = tmp_path / "q.yaml"
    p.write_text("windows: [5m, 30m]\ndefaults: {sl_threshold_seconds: 15}\nqueues:\n  vip: {short_abandon_seconds: 2}\n")
    cfg = load_metrics_config(p)
    assert cfg.windows == (("5m", 300), ("30m", 1800)) and cfg.window_names == ("5m", "30m", "today")
    assert cfg.queue("vip") == QueueConfig(sl_threshold_seconds=15, short_abandon_seconds=2)
    assert cfg.queue("other") == QueueConfig(sl_threshold_seconds=15)


@pytest.mark.parametrize(
    "text, message",
    [
        ("queues:\n  a: {timezone: Mars/Base}\n", "unknown timezone"),
        ("queues:\n  a: {daily_reset: '25:00'}\n", "must be HH:MM"),
        ("queues:\n  a: {sl_threshold: 5}\n", "Extra inputs"),
        ("windows: [today]\n", "always present"),
        ("windows: [15 minutes]\n", "e.g. 15m"),
        ("defaults: [1, 2\n", "not valid YAML"),
    ],
)
def test_bad_yaml_says_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "q.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_metrics_config(p)


def test_missing_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_metrics_config(tmp_path / "nope.yaml")


def test_env_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCMON_TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("CCMON_PARTITIONS", "12")
    s = load_settings()
    assert s.topic("calls") == "acme.calls" and s.deadletter_topic == "acme.deadletter" and s.partitions == 12
    monkeypatch.setenv("CCMON_PARTITIONS", "zero")
    with pytest.raises(ConfigError, match="CCMON_PARTITIONS"):
        load_settings()
