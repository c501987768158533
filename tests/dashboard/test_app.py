"""The dashboard's web app in-process (Starlette's test client) on a real chDB: what is refused
before any number is read, and the answers that depend on the dashboard's "now" (alerts, uptime,
instances that are down)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from tallyhub.alerts.rules import Rule, parse_rule
from tallyhub.dashboard.app import Dashboard, _safe_next, create_app
from tallyhub.dashboard.sessions import COOKIE, Sessions
from tallyhub.storage import alert_queries as aq
from tallyhub.storage.apps import create_app as create_hub_app
from tallyhub.storage.uptime_queries import CheckResult, record_checks
from tallyhub.storage.writer import INSTANCE_COLUMNS, insert_rows


@pytest.fixture
def client(runner) -> TestClient:
    sessions = Sessions()
    create_hub_app(runner, "shop", "0" * 64)
    client = TestClient(create_app(Dashboard(runner, sessions)), follow_redirects=False)
    client.cookies.set(COOKIE, sessions.open("ada"))
    return client


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    response = client.get("/api/traffic?app=shop&range=1h")
    assert response.status_code == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    "query, status, message",
    [
        ("app=nope", 404, "no app 'nope'"),
        ("", 400, "app is missing"),
        ("app=shop&range=forever", 400, "unknown range"),
        ("app=shop&status=2XX", 400, "unknown status class"),
        ("app=shop&method=GET", 400, "method and route go together"),
        ("app=shop&consumer=" + "x" * 2000, 400, "too long"),
    ],
)
def test_bad_queries_get_a_message(client: TestClient, query: str, status: int, message: str) -> None:
    response = client.get(f"/api/traffic?{query}")
    assert response.status_code == status and message in response.json()["error"]


def test_settings_must_be_json_and_valid(client: TestClient) -> None:
    assert client.put("/api/settings/app", content=b"apdex_t=1").status_code == 415
    bad = client.put("/api/settings/app", json={"app": "shop", "apdex_t": -1})
    assert bad.status_code == 400 and "apdex_t" in bad.json()["error"]
    unknown = client.put("/api/settings/endpoint", json={"app": "shop", "method": "GET", "route": "/x", "color": 1})
    assert unknown.status_code == 400 and "unknown settings: color" in unknown.json()["error"]
    assert client.put("/api/settings/app", json={"app": "shop", "apdex_t": 0.25}).json()["apdex_t"] == 0.25
    assert client.get("/api/latency?app=shop&range=1h").json()["apdex_t"] == 0.25


def test_csv_needs_a_table_of_the_answer(client: TestClient) -> None:
    response = client.get("/api/endpoints?app=shop&format=csv&table=nope")
    assert response.status_code == 400 and "endpoints" in response.json()["error"]


@pytest.mark.parametrize(
    "target, expected",
    [
        ("/apps/shop/traffic?range=1h", "/apps/shop/traffic?range=1h"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil", "/"),
        (None, "/"),
        ("", "/"),
    ],
)
def test_after_signing_in_only_pages_of_this_site(target: str | None, expected: str) -> None:
    assert _safe_next(target) == expected


def test_the_request_log_answers_say_what_the_quota_refused_today_and_refuse_bad_filters(runner) -> None:
    from tallyhub.collector_processor.receive.quota import RequestLogQuota

    sessions = Sessions()
    create_hub_app(runner, "shop", "1" * 64)
    quota = RequestLogQuota(2, lambda app: 0)
    quota.take("shop", 5)  # 3 refused
    client = TestClient(create_app(Dashboard(runner, sessions, over_quota_today=quota.refused_today)))
    client.cookies.set(COOKIE, sessions.open("ada"))
    answer = client.get("/api/requests?app=shop&range=1h").json()
    assert (answer["requests"], answer["over_quota_today"]) == ([], 3)
    assert client.get("/api/requests?app=shop&range=1h&status=teapot").status_code == 400
    assert client.get("/api/requests?app=shop&range=1h&limit=5000").status_code == 400
    missing = client.get("/api/request?app=shop&id=00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and "no logged request" in missing.json()["error"]


# -- alerts, uptime and instances that are down, at a fixed "now" ------------------------------------------

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
SLACK = "slack:https://hooks.slack.com/services/T0001/B0001/s3cr3tT0k3n"


def _rule(name: str, metric: str, **values: Any) -> Rule:
    return parse_rule({"name": name, "app": "shop", "metric": metric, **values})


@pytest.fixture
def alerting(runner) -> TestClient:
    """The app `shop` with three rules (firing, pending, never evaluated), their history and
    notifications, and a day of health checks ending in an incident."""
    sessions = Sessions()
    create_hub_app(runner, "shop", "2" * 64)
    rules = [
        _rule("errors", "error_rate", threshold=0.05, channels=[SLACK, "email:ops@example.com"], description="5xx"),
        _rule("slow", "p95", threshold=0.5, window="10m", pending="5m", endpoint="GET /items/{id}"),
        _rule("up", "health_check", url="https://shop.example/health", env="prod"),
    ]
    for rule in rules:
        aq.save_rule(runner, rule.name, rule.app, rule.metric, rule.to_json(), "file")
    aq.save_rule(runner, "other-app", "blog", "p95", _rule("other-app", "p95", threshold=1).to_json(), "cli")
    t = [NOW - timedelta(minutes=m) for m in (30, 20, 5)]
    state = {"breach_since": None, "clear_since": None, "evaluated_at": NOW}
    aq.save_states(
        runner,
        {
            "errors": state | {"state": "firing", "since": t[1], "value": 0.125},
            "slow": state | {"state": "pending", "since": t[2], "value": 0.75},
        },
    )
    row = {"app": "shop", "env": "", "metric": "error_rate", "threshold": 0.05, "condition": rules[0].condition()}
    aq.record_history(runner, [
        row | {"time": t[0], "rule": "errors", "before": "ok", "after": "pending", "value": 0.1,
               "since": aq.sql_time(t[0]), "notification_id": "", "notification": "", "channels": []},
        row | {"time": t[1], "rule": "errors", "before": "pending", "after": "firing", "value": 0.125,
               "since": aq.sql_time(t[0]), "notification_id": "n1", "notification": "{}", "channels": [SLACK]},
    ])  # fmt: skip
    aq.record_deliveries(runner, [
        {"time": t[1], "notification_id": "n1", "rule": "errors", "state": "firing", "channel": SLACK, "attempt": 1,
         "ok": False, "final": False, "error": "HTTP 500", "duration_ms": 3.0},
    ])  # fmt: skip
    checks = [
        CheckResult(NOW - timedelta(hours=h), "shop", "prod", "https://shop.example/health", ok=h > 1, status=200)
        for h in range(24)
    ]  # 24 checks in the last day; the latest two failed: an ongoing incident
    record_checks(runner, checks)
    client = TestClient(create_app(Dashboard(runner, sessions, now=lambda: NOW)), follow_redirects=False)
    client.cookies.set(COOKIE, sessions.open("ada"))
    return client


def test_the_alerts_answer_the_apps_rules_states_history_and_notifications(alerting: TestClient) -> None:
    response = alerting.get("/api/alerts?app=shop")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    assert "s3cr3t" not in response.text and "/services/" not in response.text  # the Slack URL's secret path
    answer = response.json()
    assert answer["now"] == int(NOW.timestamp())
    assert [(r["name"], r["state"]) for r in answer["rules"]] == [
        ("errors", "firing"),
        ("slow", "pending"),
        ("up", "not evaluated"),
    ]
    errors, slow, up = answer["rules"]
    assert errors == {
        "name": "errors",
        "source": "file",
        "env": "",
        "metric": "error_rate",
        "op": ">",
        "threshold": 0.05,
        "condition": "error_rate > 0.05 over 5m",
        "scope": "",
        "schedule": "every 1m",
        "pending_s": 0,
        "keep_firing_s": 0,
        "channels": ["slack:https://hooks.slack.com/***", "email:ops@example.com"],
        "description": "5xx",
        "state": "firing",
        "since": (NOW - timedelta(minutes=20)).timestamp(),
        "value": 0.125,
        "evaluated_at": NOW.timestamp(),
        "deliveries": [
            {
                "notification_id": "n1",
                "channel": "slack:https://hooks.slack.com/***",
                "time": (NOW - timedelta(minutes=20)).timestamp(),
                "state": "firing",
                "attempt": 1,
                "ok": False,
                "final": False,
                "error": "HTTP 500",
            }
        ],
    }
    assert (slow["condition"], slow["scope"], slow["pending_s"]) == ("p95 > 0.5 over 10m", "GET /items/{id}", 300)
    assert (up["condition"], up["scope"], up["env"], up["since"], up["value"]) == (
        "health_check < 1",
        "https://shop.example/health",
        "prod",
        None,
        None,
    )
    assert [(h["rule"], h["before"], h["after"], h["value"]) for h in answer["history"]] == [
        ("errors", "pending", "firing", 0.125),
        ("errors", "ok", "pending", 0.1),
    ]
    only = alerting.get("/api/alerts?app=shop&rule=nothing").json()
    assert only["history"] == [] and len(only["rules"]) == 3
    table = alerting.get("/api/alerts?app=shop&format=csv&table=rules")
    assert table.status_code == 200 and "s3cr3t" not in table.text and table.text.startswith("name,source,env")


def test_the_uptime_answer_over_24h_7d_30d_with_the_latest_checks(alerting: TestClient) -> None:
    answer = alerting.get("/api/uptime?app=shop").json()
    assert answer["now"] == int(NOW.timestamp())
    day = answer["uptime"]["24h"]
    assert (day["checks"], day["failed"], day["uptime"]) == (24, 2, pytest.approx(22 / 24))
    assert answer["uptime"]["30d"]["checks"] == 24
    (incident,) = day["incidents"]
    assert incident == {
        "url": "https://shop.example/health",
        "env": "prod",
        "start": int((NOW - timedelta(hours=1)).timestamp()),
        "end": None,
        "checks": 2,
        "error": "",
    }
    (latest,) = answer["checks"]
    assert (latest["url"], latest["ok"], latest["time"]) == ("https://shop.example/health", False, NOW.timestamp())
    assert alerting.get("/api/uptime?app=shop&env=staging").json()["checks"] == []


@pytest.mark.parametrize("path", ["/api/alerts", "/api/uptime"])
def test_alerts_and_uptime_need_a_session_and_a_known_app(alerting: TestClient, path: str) -> None:
    missing = alerting.get(f"{path}?app=nope")
    assert missing.status_code == 404 and "no app 'nope'" in missing.json()["error"]
    assert alerting.get(path).status_code == 400
    alerting.cookies.clear()
    refused = alerting.get(f"{path}?app=shop")
    assert refused.status_code == 401 and "sign in" in refused.json()["error"]
    assert alerting.get("/apps/shop/alerts").status_code == 401


def test_the_alerts_page_is_served(alerting: TestClient) -> None:
    assert alerting.get("/apps/shop/alerts?rule=errors").status_code == 200
    assert alerting.get("/apps/nope/alerts").status_code == 404


def test_an_instance_that_has_not_exported_for_3_minutes_is_down(runner) -> None:
    """Instances without requests or heartbeats: last seen when they started."""
    sessions = Sessions()
    create_hub_app(runner, "shop", "3" * 64)
    for name, started in (("early", NOW - timedelta(minutes=10)), ("late", NOW - timedelta(minutes=2, seconds=30))):
        row = {"app": "shop", "env": "prod", "service": "api", "instance": name, "host": "h", "pid": 1}
        row |= {"versions": {}, "started_at": started.replace(tzinfo=None), "received_at": started.replace(tzinfo=None)}
        insert_rows(runner.client, "instances", [[row[c] for c in INSTANCE_COLUMNS]], name)
    clock = [NOW]
    client = TestClient(create_app(Dashboard(runner, sessions, now=lambda: clock[0])))
    client.cookies.set(COOKIE, sessions.open("ada"))

    def states() -> set[tuple[str, bool, bool]]:
        found = client.get("/api/instances?app=shop&range=1h").json()["instances"]
        return {(i["instance"], i["down"], i["stale"]) for i in found}

    assert states() == {("early", True, True), ("late", False, False)}
    clock[0] = NOW + timedelta(minutes=1)  # "late": last seen 3 min 30 s ago, down (and not yet stale: 5 min)
    assert states() == {("early", True, True), ("late", True, False)}
