"""`tallyhub report` on a running hub: a real app's requests, counted exactly per endpoint."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import httpx

from .conftest import wait_for


def test_the_report_of_the_last_hour_counts_every_request(hub, start_app) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    app = start_app(hub.endpoint, key, OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=prod")
    with httpx.Client(base_url=app.url, headers={"Connection": "close"}) as client:
        for i in range(1, 6):
            assert client.get(f"/items/{i}", headers={"x-consumer": "acme-1"}).status_code == 200
        for _ in range(2):
            assert client.get("/items/not-a-number").status_code == 422
        for i in range(3):
            assert client.post("/items", json={"name": f"n{i}"}).status_code == 201
        for _ in range(2):
            assert client.get("/boom").status_code == 500
    total = 6 + 2 + 3 + 2  # + the start-up probe of /items/0
    wait_for(lambda: hub.sql("SELECT sum(requests) FROM requests") == [[str(total)]], 30, f"{total} requests")
    wait_for(lambda: hub.sql("SELECT sum(count) FROM server_errors") == [["2"]], 30, "the server errors")

    report = json.loads(hub.cli("report", "my-api", "--since", "1h", "--format", "json").stdout)
    assert (report["level"], report["minutes"], report["traffic"]) == ("minute", 60, True)
    endpoints = {(e["method"], e["route"]): e for e in report["endpoints"]}
    assert {k: (e["requests"], e["client_errors"], e["server_errors"]) for k, e in endpoints.items()} == {
        ("GET", "/items/{item_id}"): (8, 2, 0),
        ("POST", "/items"): (3, 0, 0),
        ("GET", "/boom"): (2, 0, 2),
    }
    assert endpoints["GET", "/boom"]["server_error_rate"] == 1.0
    assert all(0 < e["p50_ms"] <= e["p99_ms"] < 10_000 and 0 <= e["apdex"] <= 1 for e in endpoints.values())
    assert report["summary"]["requests"] == total
    ((error,),) = [[(e["route"], e["exception_type"], e["errors"]) for e in report["server_errors"]]]
    assert error == ("/boom", "RuntimeError", 2)
    assert report["server_errors"][0]["stacktrace"].startswith("Traceback")
    assert [(c["consumer"], c["name"], c["requests"], c["new"]) for c in report["consumers"]] == [
        ("acme-1", "Acme", 5, True)
    ]

    # the same through the env, as CSV, and as a table
    rows = csv.DictReader(
        io.StringIO(hub.cli("report", "my-api", "--env", "prod", "--format", "csv", "--section", "endpoints").stdout)
    )
    assert {(r["method"], r["route"]): int(r["requests"]) for r in rows} == {
        ("GET", "/items/{item_id}"): 8,
        ("POST", "/items"): 3,
        ("GET", "/boom"): 2,
    }
    table = hub.cli("report", "my-api", "--since", "1h", "--format", "table").stdout
    assert table.startswith("my-api, all envs: ")
    assert f"{total} requests on 3 endpoints" in table
    assert "/items/{item_id}" in table and "RuntimeError" in table and "acme-1" in table

    # another env: no traffic; an unknown app: the apps
    assert "No traffic" in hub.cli("report", "my-api", "--env", "staging").stdout
    unknown = hub.cli("report", "my-app", check=False)
    assert unknown.returncode == 1 and "unknown app 'my-app'; apps: my-api" in unknown.stderr

    # `tallyhub sql` with the query on stdin, while the hub runs
    sql = subprocess.run(
        [sys.executable, "-m", "tallyhub", "sql", "-"],
        input="SELECT sum(requests) FROM requests",
        env={**os.environ, "TALLYHUB_DATA_DIR": str(hub.data_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (sql.returncode, sql.stdout) == (0, f"{total}\n"), sql.stderr
