"""Alert rules as users write them: on the CLI, in a rules file, and as stored; bad ones refused
with a message that says what to write instead."""

from __future__ import annotations

import pytest

from tallyhub.alerts.rules import Rule, RuleError, parse_rule, rule_from_json, rules_from_toml


def test_a_rule_with_durations_as_text_and_its_readable_forms() -> None:
    rule = parse_rule(
        {
            "name": "slow-items",
            "app": "shop",
            "env": "production",
            "endpoint": "GET /items/{id}",
            "metric": "p95",
            "op": ">=",
            "threshold": "0.5",
            "window": "15m",
            "pending": "5m",
            "keep_firing": "1h30m",
            "channels": ["slack:https://hooks.slack.com/services/T/B/x"],
        }
    )
    assert (rule.window_s, rule.every_s, rule.pending_s, rule.keep_firing_s) == (900, 60, 300, 5400)
    assert rule.method_route == ("GET", "/items/{id}")
    assert rule.condition() == "p95 >= 0.5 over 15m"
    assert rule.scope() == "GET /items/{id}"
    assert rule.schedule() == "every 1m"
    assert rule_from_json(rule.to_json()) == rule


def test_heartbeat_and_health_check_defaults() -> None:
    heartbeat = parse_rule({"name": "down", "app": "shop", "metric": "heartbeat"})
    assert (heartbeat.op, heartbeat.threshold) == (">=", 3.0)
    assert heartbeat.condition() == "heartbeat >= 3"
    check = parse_rule({"name": "health", "app": "shop", "metric": "health_check", "url": "http://127.0.0.1:9/healthz"})
    assert (check.op, check.threshold) == ("<", 1.0)
    assert check.scope() == "http://127.0.0.1:9/healthz"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"treshold": 1}, "unknown key 'treshold'"),
        ({"metric": "latency"}, "unknown metric 'latency' (one of: requests"),
        ({"op": "=="}, "unknown condition '=='"),
        ({"threshold": "high"}, "could not convert"),
        ({"threshold": "nan"}, "the threshold must be a number"),
        ({"name": "no spaces"}, "invalid rule name"),
        ({"app": ""}, "app is required"),
        ({"endpoint": "/items"}, "write it as METHOD /route"),
        ({"consumer": "acme", "consumer_group": "partners"}, "not both"),
        ({"window": "30s"}, "whole minutes from 1m to 24h"),
        ({"window": "2d"}, "whole minutes from 1m to 24h"),
        ({"window": "soon"}, "not a duration"),
        ({"every": "90s"}, "the interval must be whole minutes"),
        ({"cron": "every monday"}, "give five fields"),
        ({"cron": "61 * * * *"}, "give five fields"),
        ({"channels": ["pager:123"]}, "unknown channel 'pager'"),
        ({"channels": ["webhook:ftp://example.com/x"]}, "webhook"),
        ({"url": "http://127.0.0.1/healthz"}, "url is for health_check rules only"),
    ],
)
def test_bad_rules_are_refused_with_what_is_wrong(change: dict, message: str) -> None:
    values = {"name": "errors", "app": "shop", "metric": "error_rate", "threshold": 0.05} | change
    with pytest.raises(RuleError, match=None) as caught:
        parse_rule(values)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"metric": "heartbeat", "endpoint": "GET /x"}, "measured per app and environment"),
        ({"metric": "cpu", "threshold": 0.9, "consumer": "acme"}, "measured per app and environment"),
        ({"metric": "health_check"}, "needs url"),
        ({"metric": "health_check", "url": "localhost:8000"}, "give an http:// or https:// URL"),
    ],
)
def test_uptime_and_resource_rules_take_no_narrowing(values: dict, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule({"name": "r", "app": "shop"} | values)
    assert message in str(caught.value)


def test_a_cron_schedule() -> None:
    rule = parse_rule(
        {"name": "r", "app": "shop", "metric": "requests", "op": "<", "threshold": 1, "cron": "0 9 * * 1-5"}
    )
    assert rule.schedule() == "cron 0 9 * * 1-5"


RULES_FILE = """
[[rule]]
name = "errors"
app = "shop"
metric = "error_rate"
threshold = 0.05
window = "5m"
channels = ["webhook:https://hooks.example.com/tallyhub"]

[[rule]]
name = "down"
app = "shop"
env = "production"
metric = "heartbeat"
"""


def test_a_rules_file() -> None:
    errors, down = rules_from_toml(RULES_FILE, "alerts.toml")
    assert errors == Rule(
        name="errors",
        app="shop",
        metric="error_rate",
        threshold=0.05,
        window_s=300,
        channels=("webhook:https://hooks.example.com/tallyhub",),
    )
    assert (errors.source, down.source) == ("file", "file")
    assert (down.metric, down.env, down.threshold) == ("heartbeat", "production", 3.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rule]]\nname = ", "alerts.toml: not valid TOML"),
        ("[rules]\nname = 'x'", "unknown table 'rules'"),
        ("rule = 1", "write each rule as a [[rule]] table"),
        (RULES_FILE + '\n[[rule]]\nname = "down"\napp = "x"\nmetric = "heartbeat"\n', "down more than once"),
        ('[[rule]]\nname = "x"\napp = "shop"\nmetric = "p95"\n', "alerts.toml: rule 'x': threshold is required"),
    ],
)
def test_a_bad_rules_file_says_where(text: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        rules_from_toml(text, "alerts.toml")
    assert message in str(caught.value)
