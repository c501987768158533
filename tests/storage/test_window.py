"""The dashboard's windows (`storage/window.py`): ranges, from/to as ISO 8601 or Unix seconds, the
level, the series step and its buckets, the previous window, and what is refused."""

from __future__ import annotations

import datetime as dt

import pytest

from tallyhub.storage.window import DAY, HOUR, MINUTE, Window, WindowError, dashboard_window

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 26, 12, 34, 20, tzinfo=UTC)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("range_", "start", "end", "level", "step", "points"),
    [
        ("15m", "2026-11-26 12:20", "2026-11-26 12:35", MINUTE, 60, 15),
        ("1h", "2026-11-26 11:35", "2026-11-26 12:35", MINUTE, 60, 60),
        ("6h", "2026-11-26 06:35", "2026-11-26 12:35", MINUTE, 60, 360),
        (None, "2026-11-25 12:35", "2026-11-26 12:35", MINUTE, 60, 1440),  # 24h, the default
        ("7d", "2026-11-19 13:00", "2026-11-26 13:00", HOUR, 3600, 168),
        ("30d", "2026-10-27 13:00", "2026-11-26 13:00", HOUR, 3600, 720),
        ("12mo", "2025-11-27 00:00", "2026-11-27 00:00", DAY, 86400, 365),
    ],
)
def test_ranges(range_: str | None, start: str, end: str, level, step: int, points: int) -> None:
    window = dashboard_window(NOW, range_)
    assert (window.start, window.end, window.level, window.step) == (at(start), at(end), level, step)
    buckets = window.buckets()
    assert len(buckets) == points and buckets[0] == int(at(start).timestamp())
    assert buckets[-1] + step == int(at(end).timestamp())  # the last bucket holds to - 1
    assert window.describe() == {
        "from": int(at(start).timestamp()),
        "to": int(at(end).timestamp()),
        "step": step,
        "level": level.name,
    }


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-11-20T10:15:00Z", "2026-11-20T12:10:30Z"),
        ("1795169700", "1795176630"),  # the same as Unix seconds
        ("1795169700.5", "2026-11-20T14:10:30+02:00"),
    ],
)
def test_from_and_to_as_iso_8601_or_unix_seconds(start: str, end: str) -> None:
    window = dashboard_window(NOW, start=start, end=end)
    assert (window.start, window.end, window.level) == (at("2026-11-20 10:15"), at("2026-11-20 12:11"), MINUTE)


def test_to_defaults_to_now_and_a_range_may_end_at_to() -> None:
    assert dashboard_window(NOW, start="2026-11-26T12:00:10Z").end == at("2026-11-26 12:35")
    window = dashboard_window(NOW, "1h", end="2026-11-20T12:00:00Z")
    assert (window.start, window.end) == (at("2026-11-20 11:00"), at("2026-11-20 12:00"))


@pytest.mark.parametrize(
    ("days", "level", "step"),
    [
        (1, MINUTE, 60),
        (30, HOUR, 3600),
        (2000, DAY, 86400),  # 2000 points: still one a day
        (2001, DAY, 7 * 86400),
        (3660, DAY, 7 * 86400),
    ],
)
def test_the_step_is_the_smallest_that_keeps_to_2000_points(days: int, level, step: int) -> None:
    end = at("2026-11-26 00:00")
    window = Window(end - dt.timedelta(days=days), end, level, NOW)
    assert window.step == step
    assert len(window.buckets()) <= 2000


def test_coarser_steps_of_a_level() -> None:
    end = at("2026-11-26 00:00")
    assert Window(end - dt.timedelta(days=3), end, MINUTE, NOW).step == 5 * 60
    assert Window(end - dt.timedelta(days=100), end, HOUR, NOW).step == 2 * 3600
    assert Window(end - dt.timedelta(days=400), end, HOUR, NOW).step == 6 * 3600


def test_the_previous_window_is_as_long_and_just_before() -> None:
    window = dashboard_window(NOW, "1h")
    previous = window.previous()
    assert (previous.start, previous.end, previous.level) == (at("2026-11-26 10:35"), window.start, MINUTE)
    assert previous.minutes == 60


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"range_": "2h"}, "unknown range '2h': send one of 15m, 1h, 6h, 24h, 7d, 30d, 12mo"),
        ({"range_": ""}, "unknown range"),
        ({"range_": "1h", "start": "2026-11-20"}, "range, or from"),
        ({"start": "2026-11-21T00:00:00Z", "end": "2026-11-20T00:00:00Z"}, "from must be before to"),
        ({"start": "1795169700", "end": "1795169700"}, "from must be before to"),
        ({"start": "2026-11-27"}, "from is in the future"),
        ({"start": "2000-01-01"}, "too long"),
        ({"start": "yesterday"}, "from: not a time: 'yesterday'"),
        ({"start": "-5"}, "from: not a time"),
        ({"start": "1e9"}, "from: not a time"),
        ({"end": "2026-13-01"}, "to: not a time"),
        ({"start": "1969-12-31T00:00:00Z"}, "from: out of range"),
        ({"end": "99999999999"}, "to: out of range"),
        ({"start": "2026-11-20'; DROP TABLE requests --"}, "from: not a time"),
    ],
)
def test_malformed_windows(args: dict, error: str) -> None:
    with pytest.raises(WindowError, match=error):
        dashboard_window(NOW, **args)
