"""`tallyhub demo` as a newcomer runs it: a real process whose data shows up in ClickHouse within
seconds, and that stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tallyhub.collector_processor.query_api import HubRunner
from tallyhub.collector_processor.receive.auth import generate_key
from tests.e2e.conftest import REPO, Hub, wait_for


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def snapshot(runner: HubRunner) -> dict[str, Any]:
    """What a user looks at first: requests per route and status, server errors, consumers."""

    def rows(sql: str) -> list[dict[str, Any]]:
        out = runner.raw(sql, fmt="JSONEachRow", readonly=True).decode()
        return [json.loads(line) for line in out.splitlines()]

    return {
        "requests": rows(
            "SELECT route, status, sum(requests) AS n FROM requests WHERE app = 'demo' GROUP BY ALL ORDER BY ALL"
        ),
        "server_errors": rows(
            "SELECT route, exception_type, any(stacktrace) AS stacktrace, sum(count) AS n FROM server_errors "
            "WHERE app = 'demo' GROUP BY ALL"
        ),
        "consumers": rows("SELECT identifier, name, `group` FROM consumers FINAL WHERE app = 'demo' ORDER BY ALL"),
    }


def complete(data: dict[str, Any]) -> bool:
    statuses = {int(r["status"]) for r in data["requests"]}
    return (
        len({r["route"] for r in data["requests"]}) >= 8
        and any(200 <= s < 300 for s in statuses)
        and {401, 403, 404, 422, 500} <= statuses
        and any(r["stacktrace"] for r in data["server_errors"])
        and len({r["group"] for r in data["consumers"]}) >= 3
    )


@pytest.mark.timeout(120)
def test_demo_fills_clickhouse_and_stops_on_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo-data"
    log = tmp_path / "demo.log"
    command = [sys.executable, "-m", "tallyhub", "demo", "--data-dir", str(data_dir), "--rate", "60"]
    command += ["--export-interval", "1", "--dashboard-address", "127.0.0.1:0"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        match = wait_for(
            lambda: re.search(r"bookshop API: (http://\S+)", log.read_text()) or process.poll() is not None, 60, "start"
        )
        assert process.poll() is None, log.read_text()
        app_url = match.group(1)
        dashboard = re.search(r"^dashboard: (http://127\.0\.0\.1:\d+)(/\S*)", log.read_text(), re.M)
        assert dashboard, log.read_text()
        assert httpx.get(f"{app_url}/health").json() == {"status": "ok"}

        runner = HubRunner.find(data_dir)
        assert runner is not None
        last: dict[str, Any] = {}

        def ready() -> bool:
            last.update(snapshot(runner))
            return complete(last)

        try:
            wait_for(ready, 45, "requests, errors and consumers in ClickHouse", interval_s=1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; stored so far: {json.dumps(last, indent=1)[:4000]}") from None

        routes = {r["route"] for r in last["requests"]}
        assert {"/books", "/books/{book_id}", "/search", "/orders", "/health", "/reports/sales"} <= routes
        assert all(not r["route"].startswith("/books/1") for r in last["requests"])  # templates, never raw paths
        crash = next(r for r in last["server_errors"] if r["stacktrace"])
        assert crash["exception_type"] in ("tallyhub.demo.bookshop.PaymentGatewayError", "KeyError")
        assert crash["stacktrace"].startswith("Traceback (most recent call last)")
        groups = {r["group"] for r in last["consumers"]}
        assert groups == {"customers", "partners", "internal"}
        assert all(r["name"] for r in last["consumers"])

        # `tallyhub sql` finds the demo's running hub through its data directory, as the demo says
        sql = subprocess.run(
            [sys.executable, "-m", "tallyhub", "sql", "--data-dir", str(data_dir), "SELECT count() FROM consumers"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sql.returncode == 0 and int(sql.stdout) >= 3, sql.stderr

        # and the dashboard shows it, once signed in by the printed link
        with httpx.Client(base_url=dashboard.group(1)) as browser:
            assert browser.get(dashboard.group(2), follow_redirects=True).status_code == 200
            apps = browser.get("/api/apps", params={"range": "15m"}).json()["apps"]
        assert [a["requests"] > 0 for a in apps if a["app"] == "demo"] == [True]

        assert children_of(process.pid) == []
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log.read_text()
        assert time.monotonic() - started < 10
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{app_url}/health", timeout=2)
        assert not (data_dir / "hub.json").exists()
        assert "Traceback" not in log.read_text().split("stopping the demo")[-1]
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.timeout(120)
def test_the_demo_against_a_hub_elsewhere_as_the_compose_file_runs_it(tmp_path: Path) -> None:
    """Two processes sharing one app-keys file (a secret): `tallyhub serve --app-keys-file` and
    `tallyhub demo --hub`; the demo's traffic reaches the hub under the app `demo`."""
    keys = tmp_path / "app-keys"
    keys.write_text(f"demo={generate_key()}\n")
    hub = Hub(tmp_path / "data", "--app-keys-file", str(keys))
    hub.start()
    log = tmp_path / "demo.log"
    command = [sys.executable, "-m", "tallyhub", "demo", "--hub", hub.endpoint, "--rate", "40"]
    environment = {**os.environ, "TALLYHUB_APP_KEYS_FILE": str(keys)}
    command += ["--export-interval", "1"]
    demo = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "bookshop API" in log.read_text() or demo.poll() is not None, 60, "the demo")
        assert demo.poll() is None, log.read_text()
        assert f"exporting to {hub.endpoint}" in log.read_text()
        wait_for(lambda: hub.sql("SELECT count() FROM requests WHERE app = 'demo'") != [["0"]], 45, "demo traffic")
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(15) == 0, log.read_text()
        assert not (tmp_path / "tallyhub-demo-data").exists()  # no hub of its own
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        hub.stop()
