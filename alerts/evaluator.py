"""One evaluation of the alert rules: which are due, what they measure, how their states move, what
is recorded and what is notified. Time comes in as an argument (``tick(now)``): the scheduler
passes the clock's, tests pass their own.

Order of writes, so that a hub stopped (or killed) at any point neither loses nor repeats a
notification: the transitions are recorded in ``alert_history`` first (with the notification and
its channels), then the states, then the notifications are handed to the outbox. At start the
states are read back, a transition newer than its rule's stored state wins (the hub stopped between
the two writes), and every recorded notification that a channel has neither delivered nor given up
on is handed to the outbox again (``resume``). A notification's id is derived from its rule, state
and time, so a receiver can drop the rare one delivered twice (delivered, then the hub killed before
the delivery was recorded).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tallyhub.alerts.notify.channels import ChannelSpec, parse_channel
from tallyhub.alerts.notify.message import Notification
from tallyhub.alerts.rules import HEALTH_CHECK, HEARTBEAT, REQUEST_METRICS, RESOURCE_METRICS, Rule, RuleError
from tallyhub.alerts.rules import rule_from_json as parse_stored_rule
from tallyhub.alerts.schedule import is_due
from tallyhub.alerts.states import RuleState, Transition, advance
from tallyhub.storage import alert_queries as q
from tallyhub.storage.apps import SqlRunner
from tallyhub.storage.dashboard_queries import instance_resources
from tallyhub.storage.uptime_queries import latest_checks

logger = logging.getLogger("tallyhub.alerts")

LAG = timedelta(minutes=1)
"""Windows end a minute before the current one: a client exports each minute's numbers within the
next 60 s, so the last minute read is complete."""
HEARTBEAT_LOOKBACK = timedelta(days=7)
"""How far back a heartbeat rule looks for the last export; an app silent longer reads as silent so long."""
HEARTBEAT_RECENT = timedelta(hours=1)
"""Heartbeats are read over the last hour first, and only the apps with a rule on an app or
environment not seen in it are read again over ``HEARTBEAT_LOOKBACK``: the same values (an export
seen in the last hour is later than any before it), without reading 7 days of every app's minutes
each minute (200 apps, 7 days of minutes: ~0.9 s of CPU, against ~0.15; `benchmarks/alerts.py`)."""
CHECKS_WITHIN = timedelta(minutes=10)
"""A health check rule reads the latest check of the last 10 minutes; none (the hub was down): no data."""
RESUME_WITHIN = timedelta(days=1)
"""At start, notifications of the last day that were not delivered are sent again."""

Submit = Callable[[ChannelSpec, Notification], None]


def minute_of(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(second=0, microsecond=0)


def load_rules(runner: SqlRunner) -> list[Rule]:
    """The stored rules; one that no longer parses (stored by a newer tallyhub) is skipped, logged."""
    rules = []
    for row in q.stored_rules(runner):
        try:
            rules.append(parse_stored_rule(row["rule"]))
        except (RuleError, ValueError, TypeError) as exc:
            logger.error("alert rule %s cannot be read and is not evaluated: %s", row["name"], exc)
    return rules


def measure(runner: SqlRunner, rules: Sequence[Rule], minute: datetime) -> dict[str, float | None]:
    """Each rule's value at ``minute``: request and resource metrics over the window ending ``LAG``
    before it; heartbeats in minutes since the last export; health checks 1 (healthy) or 0."""
    end = minute - LAG
    values: dict[str, float | None] = {}
    for window_s, members in _by_window(rule for rule in rules if rule.metric in REQUEST_METRICS).items():
        scopes = {rule.name: _scope(rule) for rule in members}
        measured = q.request_values(runner, set(scopes.values()), end - timedelta(seconds=window_s), end)
        values |= {rule.name: measured[scopes[rule.name]][rule.metric] for rule in members}
    for window_s, members in _by_window(rule for rule in rules if rule.metric in RESOURCE_METRICS).items():
        rows = instance_resources(runner, sorted({r.app for r in members}), end - timedelta(seconds=window_s), end)
        for rule in members:
            found = [row[rule.metric] for row in rows if row["app"] == rule.app and rule.env in ("", row["env"])]
            found = [value for value in found if value is not None]
            values[rule.name] = max(found) if found else None
    heartbeats = [rule for rule in rules if rule.metric == HEARTBEAT]
    if heartbeats:
        last = q.last_exports(runner, {rule.app for rule in heartbeats}, minute, HEARTBEAT_RECENT)
        unseen = {rule.app for rule in heartbeats if not any(_exported(rule, key) for key in last)}
        if unseen:
            last |= q.last_exports(runner, unseen, minute, HEARTBEAT_LOOKBACK)
        for rule in heartbeats:
            seen = [t for key, t in last.items() if _exported(rule, key)]
            silent_since = max(seen) if seen else minute - HEARTBEAT_LOOKBACK
            values[rule.name] = max((minute - silent_since).total_seconds(), 0) / 60
    checks = [rule for rule in rules if rule.metric == HEALTH_CHECK]
    if checks:
        latest = latest_checks(runner, sorted({rule.app for rule in checks}), since=minute - CHECKS_WITHIN)
        for rule in checks:
            results = [r for (app, env, url), r in latest.items() if (app, url) == (rule.app, rule.url)]
            results = [r for r in results if rule.env in ("", r.env)]
            values[rule.name] = float(max(results, key=lambda r: r.time).ok) if results else None
    return values


def _by_window(rules: Iterable[Rule]) -> dict[int, list[Rule]]:
    """Rules by their window (seconds): each window's are measured together."""
    grouped: dict[int, list[Rule]] = {}
    for rule in rules:
        grouped.setdefault(rule.window_s, []).append(rule)
    return grouped


def _exported(rule: Rule, key: tuple[str, str]) -> bool:
    """Whether an export of ``key`` (app, env) is one that heartbeat ``rule`` watches."""
    app, env = key
    return app == rule.app and rule.env in ("", env)


def _scope(rule: Rule) -> q.Scope:
    method, route = rule.method_route
    return q.Scope(rule.app, rule.env, method, route, rule.consumer, rule.consumer_group)


def notification_of(transition: Transition, dashboard_url: str = "") -> Notification:
    rule = transition.rule
    return Notification(
        id=f"{rule.name}:{transition.after}:{int(transition.at.timestamp())}",
        rule=rule.name,
        state=transition.after,
        app=rule.app,
        env=rule.env,
        scope=rule.scope(),
        metric=rule.metric,
        condition=rule.condition(),
        value=transition.value,
        threshold=rule.threshold,
        at=transition.at,
        since=transition.since,
        dashboard_url=dashboard_url,
    )


def notification_from_json(text: str) -> Notification:
    values: dict[str, Any] = json.loads(text)
    for key in ("at", "since"):
        values[key] = datetime.fromisoformat(values[key])
    return Notification(**values)


def notification_json(notification: Notification) -> str:
    values = asdict(notification)
    for key in ("at", "since"):
        values[key] = values[key].isoformat()
    return json.dumps(values, sort_keys=True)


class Evaluator:
    """Evaluates the stored rules at each ``tick``; keeps the states between ticks and stores them."""

    def __init__(
        self, runner: SqlRunner, submit: Submit, dashboard_url: Callable[[Rule], str] = lambda _rule: ""
    ) -> None:
        self._runner = runner
        self._submit = submit
        self._dashboard_url = dashboard_url
        self._states: dict[str, RuleState] | None = None
        self.rule_count: int | None = None
        """How many rules the last evaluation read (None before the first)."""

    @property
    def states(self) -> dict[str, RuleState]:
        if self._states is None:
            self._states = load_states(self._runner)
        return self._states

    def firing(self) -> list[str]:
        """The rules firing, as the states in memory say (no query: `tallyhub status` answers while
        ClickHouse is away); none before the states are first read."""
        return sorted(name for name, state in (self._states or {}).items() if state.state == "firing")

    def resume(self, now: datetime) -> int:
        """Hand the outbox again every notification of the last day that a channel has neither
        delivered nor given up on; returns how many (notification, channel) pairs."""
        count = 0
        for text, channels, done in q.notifications_since(self._runner, now - RESUME_WITHIN):
            notification = notification_from_json(text)
            for channel in channels:
                spec = parse_channel(channel)
                if spec.fingerprint() not in done:
                    self._submit(spec, notification)
                    count += 1
        if count:
            logger.info("alerts: %d notifications not delivered before the hub stopped are sent again", count)
        return count

    def tick(self, now: datetime) -> list[Transition]:
        """Evaluate the rules due at ``now``'s minute; record and notify what changed."""
        minute = minute_of(now)
        rules = load_rules(self._runner)
        self.rule_count = len(rules)
        due = [rule for rule in rules if is_due(rule, minute)]
        if not due:
            return []
        values = measure(self._runner, due, minute)
        states = self.states
        transitions = []
        changed: dict[str, RuleState] = {}
        for rule in due:
            state, transition = advance(rule, states.get(rule.name, RuleState()), values.get(rule.name), minute)
            changed[rule.name] = state
            if transition is not None:
                transitions.append(transition)
        notifications = {
            t.rule.name: notification_of(t, self._dashboard_url(t.rule)) for t in transitions if t.notifies
        }
        q.record_history(self._runner, [_history_row(t, notifications.get(t.rule.name)) for t in transitions])
        q.save_states(self._runner, {name: asdict(state) for name, state in changed.items()})
        states.update(changed)
        for transition in transitions:
            notification = notifications.get(transition.rule.name)
            logger.info(
                "alert %s: %s → %s (%s; value %s)",
                transition.rule.name,
                transition.before,
                transition.after,
                transition.rule.condition(),
                "no data" if transition.value is None else f"{transition.value:g}",
            )
            if notification is not None:
                for channel in transition.rule.channels:
                    self._submit(parse_channel(channel), notification)
        return transitions


def load_states(runner: SqlRunner) -> dict[str, RuleState]:
    """The stored states, each replaced by its rule's latest recorded transition where that is newer
    (the hub stopped between recording a transition and storing the state)."""
    states = {rule: RuleState(**row) for rule, row in q.load_states(runner).items()}
    for rule, row in q.latest_transitions(runner).items():
        state = states.get(rule, RuleState())
        if state.since is None or row["time"] > state.since:
            breach_since = row["since"] if row["after"] in ("pending", "firing") else None
            states[rule] = replace(
                state, state=row["after"], since=row["time"], breach_since=breach_since, clear_since=None
            )
    return states


def _history_row(transition: Transition, notification: Notification | None) -> dict[str, Any]:
    rule = transition.rule
    return {
        "time": transition.at,
        "rule": rule.name,
        "app": rule.app,
        "env": rule.env,
        "metric": rule.metric,
        "before": transition.before,
        "after": transition.after,
        "value": transition.value,
        "threshold": rule.threshold,
        "condition": rule.condition(),
        "since": q.sql_time(transition.since),
        "notification_id": notification.id if notification else "",
        "notification": notification_json(notification) if notification else "",
        "channels": list(rule.channels) if notification else [],
    }
