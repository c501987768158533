"""Time windows for the reads of `tallyhub report` and the dashboard.

A window is ``[start, end)`` in UTC on whole units of its level (the table it is read from:
``requests`` per minute, ``requests_hourly``, ``requests_daily``), chosen from its length. The
dashboard also splits it into ``step``-wide buckets for its time series.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFAULT_SINCE = "1h"
MAX_SPAN = timedelta(days=3660)
MAX_POINTS = 2000
"""The most points a dashboard time series has: ``Window.step`` is the smallest step that keeps to it."""

RANGES = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "12mo": timedelta(days=365),
}
"""The dashboard's ``range`` values."""
DEFAULT_RANGE = "24h"


class WindowError(ValueError):
    """A window that cannot be read: bad duration, range or time, or a start not before the end."""


@dataclass(frozen=True)
class Level:
    """Which tables a window is read from: the finest one whose size stays reasonable."""

    name: str
    unit: timedelta
    table: str
    column: str
    endpoint_view: str
    steps: tuple[int, ...]
    """The widths (seconds) a time series' points may have at this level, smallest first."""
    by_endpoint: str
    """The table of this level without the consumer, ordered by endpoint first (migration 0013)."""


MINUTE = Level(
    "minute",
    timedelta(minutes=1),
    "requests",
    "minute",
    "endpoint_overview",
    (60, 120, 300, 600, 900, 1800),
    "requests",
)
HOUR = Level(
    "hour",
    timedelta(hours=1),
    "requests_hourly",
    "hour",
    "endpoint_overview_hourly",
    (3600, 7200, 10800, 21600, 43200),
    "requests_hourly_by_endpoint",
)
DAY = Level(
    "day",
    timedelta(days=1),
    "requests_daily",
    "day",
    "endpoint_overview_daily",
    (86400, 7 * 86400),
    "requests_daily_by_endpoint",
)


def choose_level(span: timedelta) -> Level:
    """Minutes up to a day, hours up to 30 days, days beyond."""
    if span <= timedelta(days=1):
        return MINUTE
    if span <= timedelta(days=30):
        return HOUR
    return DAY


@dataclass(frozen=True)
class Window:
    """[start, end) in UTC, on whole units of ``level``; ``now`` bounds the elapsed minutes."""

    start: datetime
    end: datetime
    level: Level
    now: datetime

    @property
    def minutes(self) -> int:
        """Minutes of the window that have begun (at least 1): what requests per minute divide by."""
        elapsed = min(self.end, _ceil(self.now, MINUTE.unit)) - self.start
        return max(elapsed // timedelta(minutes=1), 1)

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    @property
    def step(self) -> int:
        """Seconds per point of a time series: the level's smallest step that keeps to MAX_POINTS."""
        span = int(self.span.total_seconds())
        fitting = [step for step in self.level.steps if -(-span // step) <= MAX_POINTS]
        return fitting[0] if fitting else self.level.steps[-1]

    def buckets(self) -> list[int]:
        """The start (Unix seconds) of every point of a time series: from ``start``, one per ``step``,
        the last one the bucket that holds ``end - 1``."""
        return list(range(int(self.start.timestamp()), int(self.end.timestamp()), self.step))

    def previous(self) -> Window:
        """The window of the same length just before this one."""
        return Window(self.start - self.span, self.start, self.level, self.now)

    def parameters(self) -> dict[str, int]:
        # Unix seconds: a DateTime parameter given as text would be read in the server's time zone.
        return {"from": int(self.start.timestamp()), "to": int(self.end.timestamp())}

    def describe(self) -> dict[str, int | str]:
        """The window as the dashboard's answers carry it."""
        return {**self.parameters(), "step": self.step, "level": self.level.name}


_DURATION_PART = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNIX_SECONDS = re.compile(r"\d{1,11}(?:\.\d+)?")


def parse_duration(text: str) -> timedelta:
    """``30m``, ``1h``, ``7d``, ``2w``, ``90s``, or a sum of them: ``1d12h``, ``1h 30m``."""
    compact = text.strip().lower()
    parts = _DURATION_PART.findall(compact)
    if not compact or _DURATION_PART.sub("", compact).strip():
        raise WindowError(f"not a duration: {text!r} (e.g. 30m, 1h, 7d, 2w, 1d12h; units s, m, h, d, w)")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise WindowError(f"the duration must be positive: {text!r}")
    if seconds > MAX_SPAN.total_seconds():
        raise WindowError(f"the duration is too long: {text!r} (at most {MAX_SPAN.days} days)")
    return timedelta(seconds=seconds)


def parse_instant(text: str, option: str = "time") -> datetime:
    """ISO 8601 (``2026-11-01``, ``2026-11-01T10:00``, ``2026-11-01 10:00:00+02:00``, ``…Z``); UTC
    when it has no offset."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise WindowError(
            f"{option}: not an ISO 8601 time: {text!r} (e.g. 2026-11-01, 2026-11-01T10:00, 2026-11-01T10:00:00+02:00)"
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_time(text: str, option: str) -> datetime:
    """The dashboard's ``from`` / ``to``: Unix seconds or ISO 8601, within what a ClickHouse
    ``DateTime`` holds (1970 to 2105)."""
    if _UNIX_SECONDS.fullmatch(text.strip()):
        value = datetime.fromtimestamp(float(text), UTC)
    else:
        try:
            value = parse_instant(text, option)
        except WindowError:
            raise WindowError(
                f"{option}: not a time: {text!r} (send Unix seconds, or ISO 8601 such as 2026-11-01T10:00:00Z)"
            ) from None
    if not 1970 <= value.year <= 2105:
        raise WindowError(f"{option}: out of range: {text!r} (from 1970 to 2105)")
    return value


def _floor(t: datetime, unit: timedelta) -> datetime:
    seconds = int(unit.total_seconds())
    ts = int(t.timestamp()) // seconds * seconds  # Unix days are UTC days
    return datetime.fromtimestamp(ts, UTC)


def _ceil(t: datetime, unit: timedelta) -> datetime:
    floor = _floor(t, unit)
    return floor if floor == t else floor + unit


def _between(start: datetime, end: datetime, now: datetime) -> Window:
    """From ``start`` to ``end``, both widened to whole units of the level their span asks for."""
    if end - start > MAX_SPAN:
        raise WindowError(f"the window is too long (at most {MAX_SPAN.days} days)")
    level = choose_level(end - start)
    return Window(_floor(start, level.unit), _ceil(end, level.unit), level, now)


def _last(duration: timedelta, end: datetime, now: datetime) -> Window:
    """The last ``duration`` up to ``end``, the current unit included: the end rounded up, the
    start ``duration`` before it (rounded down)."""
    level = choose_level(duration)
    aligned_end = _ceil(end, level.unit)
    return Window(_floor(aligned_end - duration, level.unit), aligned_end, level, now)


def resolve_window(now: datetime, since: str | None = None, start: str | None = None, end: str | None = None) -> Window:
    """The window to report on, aligned to its level's units.

    ``--since D`` (default 1h): the last D up to now (or ``--to``), the current unit included: the
    end is rounded up to a whole unit and the start is D before it (rounded down). ``--from``
    (``--to`` defaults to now): both widened to whole units. The level comes from the window's
    length as asked: minutes up to a day, hours up to 30 days, days beyond.
    """
    if since is not None and start is not None:
        raise WindowError("give --since, or --from (and --to), not both")
    end_t = parse_instant(end, "--to") if end is not None else now
    if start is not None:
        start_t = parse_instant(start, "--from")
        if start_t >= end_t:
            raise WindowError("--from must be before --to" if end is not None else "--from is in the future")
        return _between(start_t, end_t, now)
    return _last(parse_duration(since if since is not None else DEFAULT_SINCE), end_t, now)


def dashboard_window(
    now: datetime, range_: str | None = None, start: str | None = None, end: str | None = None
) -> Window:
    """The window of a dashboard request: ``range`` (one of RANGES, default 24h: the last so long up
    to now, or up to ``to``), or ``from`` (and ``to``, default now) as Unix seconds or ISO 8601."""
    if range_ is not None and start is not None:
        raise WindowError("give range, or from (and to), not both")
    end_t = parse_time(end, "to") if end is not None else now
    if start is None:
        name = DEFAULT_RANGE if range_ is None else range_.strip()
        if name not in RANGES:
            raise WindowError(f"unknown range {range_!r}: send one of {', '.join(RANGES)}, or from and to")
        return _last(RANGES[name], end_t, now)
    start_t = parse_time(start, "from")
    if start_t >= end_t:
        raise WindowError("from must be before to" if end is not None else "from is in the future")
    return _between(start_t, end_t, now)
