"""A rule's state and how one evaluation moves it. Pure: no clock, no I/O.

``ok`` → ``pending`` (the condition holds; waiting out the pending period) → ``firing`` (notified)
→ ``resolved`` (the condition has been clear for the keep-firing period; notified) → ``pending`` or
``firing`` again when it holds again. A pending rule whose condition clears goes back to ``ok``
without a notification. No data (a rate or a percentile of no requests) never makes a condition
hold: a rule on it stays, or goes back, to ok.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from tallyhub.alerts.rules import Rule

STATES = ("ok", "pending", "firing", "resolved")
NOTIFYING = ("firing", "resolved")
"""The transitions into these states notify the rule's channels."""


@dataclass(frozen=True)
class RuleState:
    state: str = "ok"
    since: datetime | None = None
    """When the rule entered this state."""
    breach_since: datetime | None = None
    """When the condition began to hold (pending, firing); None while it does not."""
    clear_since: datetime | None = None
    """Firing: when the condition stopped holding (the keep-firing period runs from here)."""
    value: float | None = None
    evaluated_at: datetime | None = None


@dataclass(frozen=True)
class Transition:
    rule: Rule
    before: str
    after: str
    at: datetime
    value: float | None
    since: datetime
    """Firing: when the condition began to hold; resolved: when it stopped; else ``at``."""

    @property
    def notifies(self) -> bool:
        return self.after in NOTIFYING


def holds(rule: Rule, value: float | None) -> bool:
    """Whether the rule's condition holds for ``value`` (None or NaN: no data, never)."""
    if value is None or math.isnan(value):
        return False
    if rule.op == ">":
        return value > rule.threshold
    if rule.op == ">=":
        return value >= rule.threshold
    if rule.op == "<":
        return value < rule.threshold
    return value <= rule.threshold


def advance(rule: Rule, previous: RuleState, value: float | None, now: datetime) -> tuple[RuleState, Transition | None]:
    """The state after an evaluation at ``now`` that measured ``value``, and the transition made (if any)."""
    breached = holds(rule, value)
    current = replace(previous, value=value, evaluated_at=now)
    state = previous.state

    def move(after: str, since: datetime, breach_since: datetime | None) -> tuple[RuleState, Transition]:
        moved = replace(current, state=after, since=now, breach_since=breach_since, clear_since=None)
        return moved, Transition(rule, state, after, now, value, since)

    if state == "firing":
        if breached:
            return replace(current, clear_since=None), None
        clear_since = previous.clear_since or now
        if now - clear_since >= timedelta(seconds=rule.keep_firing_s):
            return move("resolved", clear_since, breach_since=None)
        return replace(current, clear_since=clear_since), None
    if not breached:
        if state == "pending":
            return move("ok", now, breach_since=None)
        return current, None
    breach_since = previous.breach_since if state == "pending" and previous.breach_since else now
    if now - breach_since >= timedelta(seconds=rule.pending_s):
        return move("firing", breach_since, breach_since=breach_since)
    if state == "pending":
        return current, None
    return move("pending", now, breach_since=breach_since)
