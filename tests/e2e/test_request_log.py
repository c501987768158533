"""The request log end to end: a uvicorn app with request logging on → the hub → request_log in
chDB, masked, searchable with `tallyhub logs`, kept 15 days."""

from __future__ import annotations

import json
import signal

import httpx

from tallyhub.instrumentation.masking import MASK

from .conftest import wait_for

COLUMNS = "method, url_path, url_query, route, status, consumer, request_headers, request_body, response_body"


def test_logged_requests_arrive_masked_and_the_cli_finds_them(hub, start_app, monkeypatch) -> None:
    key = hub.cli("apps", "create", "shop").stdout.strip()
    app = start_app(hub.endpoint, key, TALLYHUB_REQUEST_LOGGING="1", OTEL_SERVICE_NAME="shop")
    with httpx.Client(base_url=app.url, headers={"Connection": "close"}) as http:
        created = http.post(
            "/items?api_key=k-1&page=3",
            json={"name": "widget", "password": "hunter2"},
            headers={"Authorization": "Bearer abc", "X-Request-Source": "test"},
        )
        assert created.status_code == 201
        assert http.get("/items/5", headers={"x-consumer": "acme"}).status_code == 200
        assert http.get("/boom").status_code == 500
        assert http.get("/healthz").status_code == 404  # a probe's path: not logged, still counted
    assert app.stop() in (0, -signal.SIGTERM)  # the last batch goes out at shutdown

    def logged() -> list[dict]:
        return hub.sql_rows(f"SELECT {COLUMNS} FROM request_log WHERE app = 'shop' ORDER BY time")

    wait_for(lambda: len(logged()) >= 4, 30, "the logged requests")
    rows = {(r["method"], r["url_path"]): r for r in logged()}
    assert set(rows) == {("GET", "/items/0"), ("POST", "/items"), ("GET", "/items/5"), ("GET", "/boom")}
    post = rows["POST", "/items"]
    assert post["url_query"] == f"api_key={MASK}&page=3"
    assert post["request_headers"]["authorization"] == MASK
    assert post["request_headers"]["x-request-source"] == "test"
    assert json.loads(post["request_body"]) == {"name": "widget", "password": MASK}
    assert json.loads(post["response_body"]) == {"name": "widget", "password": MASK}
    assert (post["route"], post["status"]) == ("/items", 201)
    assert rows["GET", "/items/5"]["consumer"] == "acme"

    errors = hub.cli("logs", "shop", "--status", "5xx", "--format", "detail").stdout
    assert "GET /boom  →  500" in errors and "Exception: RuntimeError: an unhandled error" in errors
    assert 'raise RuntimeError("an unhandled error")' in errors and "/items" not in errors.split("Exception")[0]
    monkeypatch.setenv("COLUMNS", "160")
    table = hub.cli("logs", "shop", "--method", "POST").stdout.splitlines()
    assert table[0].split() == ["TIME", "(UTC)", "METHOD", "STATUS", "MS", "PATH", "CONSUMER", "CLIENT", "IP"]
    assert len(table) == 2 and f"/items?api_key={MASK}&page=3" in table[1]
    monkeypatch.setenv("COLUMNS", "72")
    narrow = hub.cli("logs", "shop").stdout.splitlines()
    assert len(narrow) == 5 and max(map(len, narrow)) <= 72 and "…" in "".join(narrow)
    assert hub.cli("logs", "shop", "--status", "teapot", check=False).returncode == 2


def test_the_request_log_keeps_15_days_on_chdb(hub) -> None:
    create = hub.sql("SELECT create_table_query FROM system.tables WHERE name = 'request_log'")[0][0]
    assert "TTL toDateTime(time) + toIntervalDay(15)" in create
    hub.cli(
        "sql",
        "--write",
        "INSERT INTO request_log (time, app, request_id, url_path) VALUES "
        "(now64(3) - INTERVAL 16 DAY, 'shop', generateUUIDv4(), '/old'), "
        "(now64(3) - INTERVAL 14 DAY, 'shop', generateUUIDv4(), '/recent')",
    )
    hub.cli("sql", "--write", "OPTIMIZE TABLE request_log FINAL")
    assert hub.sql("SELECT url_path FROM request_log ORDER BY url_path") == [["/recent"]]


def test_past_the_daily_quota_logged_requests_get_partial_success_and_metrics_still_arrive(tmp_path, start_app) -> None:
    from .conftest import Hub

    hub = Hub(tmp_path / "data", "--request-log-quota", "4", "--receivers", "1")
    hub.start()
    try:
        key = hub.cli("apps", "create", "shop").stdout.strip()
        app = start_app(hub.endpoint, key, TALLYHUB_REQUEST_LOGGING="1")
        with httpx.Client(base_url=app.url, headers={"Connection": "close"}) as http:
            for i in range(1, 9):
                assert http.get(f"/items/{i}").status_code == 200
        assert app.stop() in (0, -signal.SIGTERM)
        requests = "SELECT sum(requests) FROM requests WHERE app = 'shop'"
        wait_for(lambda: hub.sql(requests) == [["9"]], 30, "every request counted")  # 8 + the start-up probe
        status = json.loads(hub.cli("status", "--json").stdout)
        assert status["counters"]["logged_requests_over_the_quota_partial_success"] == 5
        assert hub.sql("SELECT count() FROM request_log WHERE app = 'shop'") == [["4"]]
        assert "reached its request log quota of 4 a day" in app.log.read_text()
    finally:
        hub.stop()
