"""The dashboard's web app in-process (Starlette's test client) on a real chDB: what is refused
before any number is read."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tallyhub.dashboard.app import Dashboard, _safe_next, create_app
from tallyhub.dashboard.sessions import COOKIE, Sessions
from tallyhub.storage.apps import create_app as create_hub_app


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
