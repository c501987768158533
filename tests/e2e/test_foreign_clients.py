"""Foreign clients: OpenTelemetry's own instrumentation, with the SDK's defaults (cumulative
temporality, explicit buckets, older metric names in milliseconds), into the real hub."""

from __future__ import annotations

import sys
import time

import httpx
import pytest

from .conftest import wait_for

OTEL_APP = [sys.executable, "-m", "uvicorn", "tests.e2e.otel_fastapi_app:app", "--port", "{port}"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_stock_opentelemetry_fastapi_instrumentation_counts_exactly(hub, start_app, protocol: str) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    endpoint = hub.endpoint if protocol == "grpc" else f"http://127.0.0.1:{hub.http_port}"
    app = start_app(endpoint, key, OTEL_APP, TEST_OTLP_PROTOCOL=protocol)
    with httpx.Client(base_url=app.url) as client:
        for i in range(1, 8):
            assert client.get(f"/items/{i}").status_code == 200
        for _ in range(3):
            assert client.get("/items/not-a-number").status_code == 422
        for i in range(4):
            assert client.post("/items", json={"n": i}).status_code == 201
    expected = {
        ("GET", "/items/{item_id}", "200"): 7 + 1,
        ("GET", "/items/{item_id}", "422"): 3,
        ("POST", "/items", "201"): 4,
    }
    total = sum(expected.values())  # + the start-up probe of /items/0

    def stored() -> dict:
        rows = hub.sql("SELECT method, route, toString(status), sum(requests) FROM requests GROUP BY ALL")
        return {(m, r, s): int(n) for m, r, s, n in rows}

    wait_for(lambda: sum(stored().values()) >= total, 30, f"{total} requests")
    time.sleep(1.5)  # more cumulative exports arrive: they must add nothing
    assert stored() == expected
    ((duration_sum, requests),) = hub.sql("SELECT sum(duration_sum), sum(requests) FROM requests")
    assert 0 < float(duration_sum) / int(requests) < 1  # milliseconds became seconds
    # what is not an HTTP server metric is kept too
    assert ["http.server.active_requests"] in hub.sql("SELECT DISTINCT name FROM metrics")
