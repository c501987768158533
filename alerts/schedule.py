"""When a rule is due: every N minutes (counted from the Unix epoch, so that every hub agrees), or
at the minutes a cron schedule matches (UTC, read by ``croniter``)."""

from __future__ import annotations

from datetime import datetime

from croniter import croniter  # type: ignore[import-untyped]

from tallyhub.alerts.rules import Rule, RuleError


def check_cron(where: str, expression: str) -> None:
    """Five fields (minute hour day month weekday), as crontab(5) writes them."""
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise RuleError(
            f"{where}: cron {expression!r}: give five fields, minute hour day month weekday (e.g. '*/5 * * * *')"
        )


def is_due(rule: Rule, minute: datetime) -> bool:
    """Whether the rule is evaluated at ``minute`` (a whole minute, aware)."""
    if rule.cron:
        return bool(croniter.match(rule.cron, minute))
    return int(minute.timestamp()) // 60 % (rule.every_s // 60) == 0
