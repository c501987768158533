"""The hub's alerting, running: the rules file read at start, the evaluation every minute, the
health checks, the outbox, each on its own thread. ``Hub`` starts and stops it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tallyhub.alerts.evaluator import Evaluator, load_rules
from tallyhub.alerts.health_checks import HealthChecker, HealthTarget
from tallyhub.alerts.notify.channels import NotifySettings
from tallyhub.alerts.notify.outbox import Delivery, Outbox
from tallyhub.alerts.rules import HEALTH_CHECK, Rule, RuleError, rules_from_toml
from tallyhub.storage import alert_queries as q
from tallyhub.storage.apps import SqlRunner
from tallyhub.storage.uptime_queries import record_checks

logger = logging.getLogger("tallyhub.alerts")

OFFSET_S = 20.0
"""Seconds past each minute at which rules are evaluated: after that minute's health checks (5 s,
a retry, 5 s)."""


class LockedRunner:
    """One query at a time on a runner shared by the evaluation, the health checks and the outbox's
    workers (a ClickHouse session takes one query at a time)."""

    def __init__(self, runner: SqlRunner) -> None:
        self._runner = runner
        self._lock = threading.Lock()

    def raw(
        self, sql: str, parameters: Mapping[str, Any] | None = None, fmt: str = "TabSeparated", readonly: bool = False
    ) -> bytes:
        with self._lock:
            return self._runner.raw(sql, parameters, fmt, readonly)


def sync_rules_file(runner: SqlRunner, path: Path) -> list[Rule]:
    """Make the rules of the rules file the stored rules from that file: new and changed ones saved,
    those no longer in it removed (rules added with the CLI stay, unless the file has one of that
    name: the file's wins). Raises ``RuleError`` for a file that cannot be read or has a bad rule."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(f"cannot read the alert rules file {path}: {exc.strerror}") from None
    rules = rules_from_toml(text, str(path))
    stored = {row["name"]: row for row in q.stored_rules(runner)}
    for rule in rules:
        row = stored.get(rule.name)
        if row is None or row["rule"] != rule.to_json() or row["source"] != "file":
            q.save_rule(runner, rule.name, rule.app, rule.metric, rule.to_json(), "file")
    gone = [name for name, row in stored.items() if row["source"] == "file" and name not in {r.name for r in rules}]
    if gone:
        q.remove_rules(runner, gone)
    logger.info("alert rules file %s: %d rules (%d removed)", path, len(rules), len(gone))
    return rules


class Alerts:
    def __init__(
        self,
        runner: SqlRunner,
        notify: NotifySettings,
        dashboard_url: Callable[[Rule], str] = lambda _rule: "",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        health_interval_s: float = 60.0,
        **outbox_options: Any,
    ) -> None:
        """``outbox_options``: ``Outbox``'s retry settings (attempts, backoff_s, …)."""
        self.runner = LockedRunner(runner)
        self.clock = clock
        self.outbox = Outbox(notify, self._record, **outbox_options)
        self.evaluator = Evaluator(self.runner, self.outbox.submit, dashboard_url)
        self.checker = HealthChecker(self._health_targets, self._record_checks, interval_s=health_interval_s)
        self.rules_at_start = 0
        self.last_evaluation: datetime | None = None
        self.last_error = ""
        """What the last evaluation failed with ("" when it did not)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tallyhub-alerts", daemon=True)

    def start(self) -> None:
        rules = load_rules(self.runner)
        self.rules_at_start = len(rules)
        # the states, read now while storage answers: `status` shows what fires from the start
        firing = sum(state.state == "firing" for state in self.evaluator.states.values())
        logger.info(
            "alerts: %d rules (%d health checks, %d firing), evaluated at %d s past each minute "
            "(`tallyhub alerts list`)",
            len(rules),
            sum(rule.metric == HEALTH_CHECK for rule in rules),
            firing,
            OFFSET_S,
        )
        self.evaluator.resume(self.clock())
        self.checker.start()
        self._thread.start()

    def stop(self) -> None:
        self.stop_schedules()
        self.outbox.stop()

    def stop_schedules(self) -> None:
        """Stop evaluating every minute and the health checks (the outbox goes on delivering)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.checker.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.clock()
            wait = (OFFSET_S - now.second - now.microsecond / 1e6) % 60 or 60
            if self._stop.wait(wait):
                return
            self.evaluate(self.clock())

    def evaluate(self, now: datetime) -> None:
        """One evaluation, as the schedule runs it: a failure (ClickHouse away) is logged and kept for
        `tallyhub status`, and the next minute tries again."""
        try:
            self.evaluator.tick(now)
            self.last_error = ""
        except Exception as exc:
            self.last_error = f"{now:%H:%M} UTC: {type(exc).__name__}: {str(exc)[:300]}"
            logger.exception("alert evaluation failed (is ClickHouse up?); retrying at the next minute")
        self.last_evaluation = now

    def status(self) -> dict[str, Any]:
        """For `tallyhub status`, from memory (it answers while ClickHouse is away): the rules, which
        fire, the last evaluation and its error."""
        rules = self.evaluator.rule_count
        return {
            "rules": self.rules_at_start if rules is None else rules,
            "firing": self.evaluator.firing(),
            "last evaluation": self.last_evaluation.isoformat(timespec="seconds") if self.last_evaluation else "",
            "last error": self.last_error,
        }

    def _record(self, delivery: Delivery) -> None:
        q.record_deliveries(
            self.runner,
            [
                {
                    "time": delivery.at,
                    "notification_id": delivery.notification_id,
                    "rule": delivery.rule,
                    "state": delivery.state,
                    "channel": delivery.channel,
                    "channel_id": delivery.channel_id,
                    "attempt": delivery.attempt,
                    "ok": delivery.ok,
                    "final": delivery.final,
                    "error": delivery.error,
                    "duration_ms": round(delivery.duration_s * 1000, 3),
                }
            ],
        )

    def _health_targets(self) -> Sequence[HealthTarget]:
        rules = load_rules(self.runner)
        return sorted({HealthTarget(r.app, r.env, r.url) for r in rules if r.metric == HEALTH_CHECK}, key=str)

    def _record_checks(self, results: list[Any]) -> None:
        record_checks(self.runner, results)
