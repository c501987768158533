"""When rules are due: intervals counted from the epoch, cron schedules in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tallyhub.alerts.rules import parse_rule
from tallyhub.alerts.schedule import is_due

MIDNIGHT = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)  # a Monday


def due_minutes(values: dict, hours: int = 2) -> list[int]:
    rule = parse_rule({"name": "r", "app": "shop", "metric": "requests", "threshold": 1} | values)
    return [m for m in range(hours * 60) if is_due(rule, MIDNIGHT + timedelta(minutes=m))]


def test_every_minute_by_default_and_every_n_minutes() -> None:
    assert due_minutes({}) == list(range(120))
    assert due_minutes({"every": "15m"}) == [0, 15, 30, 45, 60, 75, 90, 105]
    assert due_minutes({"every": "1h"}) == [0, 60]


def test_a_cron_schedule_in_utc() -> None:
    assert due_minutes({"cron": "*/20 1 * * *"}) == [60, 80, 100]
    assert due_minutes({"cron": "0 9 * * 1-5"}, hours=24 * 7) == [9 * 60 + day * 1440 for day in range(5)]
