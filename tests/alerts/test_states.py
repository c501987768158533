"""How evaluations move a rule's state: pending period, keep-firing period, no data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tallyhub.alerts.rules import parse_rule
from tallyhub.alerts.states import RuleState, advance, holds

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def run(rule_values: dict, values: list[float | None]) -> list[tuple[int, str, str]]:
    """Evaluate once a minute with ``values``; the transitions made: (minute, before, after)."""
    rule = parse_rule({"name": "r", "app": "shop", "metric": "error_rate", "threshold": 0.1} | rule_values)
    state = RuleState()
    moves = []
    for i, value in enumerate(values):
        state, transition = advance(rule, state, value, minutes(i))
        if transition is not None:
            moves.append((i, transition.before, transition.after))
    return moves


def test_without_delays_a_rule_fires_and_resolves_at_once() -> None:
    assert run({}, [0.0, 0.5, 0.5, 0.0, 0.0]) == [(1, "ok", "firing"), (3, "firing", "resolved")]


def test_the_pending_period_must_pass_before_firing() -> None:
    moves = run({"pending": "2m"}, [0.5, 0.5, 0.0, 0.5, 0.5, 0.5, 0.5])
    assert moves == [(0, "ok", "pending"), (2, "pending", "ok"), (3, "ok", "pending"), (5, "pending", "firing")]


def test_keep_firing_waits_for_the_condition_to_stay_clear() -> None:
    moves = run({"keep_firing": "2m"}, [0.5, 0.0, 0.5, 0.0, 0.0, 0.0])
    assert moves == [(0, "ok", "firing"), (5, "firing", "resolved")]


def test_a_resolved_rule_can_fire_again_and_notifications_carry_when_it_began() -> None:
    rule = parse_rule({"name": "r", "app": "shop", "metric": "p95", "threshold": 1, "pending": "1m"})
    state = RuleState()
    transitions = []
    for i, value in enumerate([2.0, 2.0, 0.5, 3.0, 3.0]):
        state, transition = advance(rule, state, value, minutes(i))
        transitions.append(transition)
    firing, resolved, firing_again = transitions[1], transitions[2], transitions[4]
    assert (firing.after, firing.since, firing.notifies) == ("firing", minutes(0), True)
    assert (resolved.after, resolved.since, resolved.value) == ("resolved", minutes(2), 0.5)
    assert (firing_again.before, firing_again.after, firing_again.since) == ("pending", "firing", minutes(3))
    assert transitions[0] is not None and not transitions[0].notifies  # ok → pending


def test_no_data_never_holds() -> None:
    below = parse_rule({"name": "r", "app": "shop", "metric": "apdex", "op": "<", "threshold": 0.9})
    assert not holds(below, None)
    assert not holds(below, float("nan"))
    assert holds(below, 0.5)
    assert run({}, [0.5, None]) == [(0, "ok", "firing"), (1, "firing", "resolved")]


def test_every_operator() -> None:
    for op, expected in (
        (">", [False, False, True]),
        (">=", [False, True, True]),
        ("<", [True, False, False]),
        ("<=", [True, True, False]),
    ):
        rule = parse_rule({"name": "r", "app": "shop", "metric": "requests", "op": op, "threshold": 10})
        assert [holds(rule, v) for v in (9, 10, 11)] == expected
