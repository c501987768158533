"""The hub's alerting, wired: a hub started with a rules file stores its rules, health-checks the
rule's URL (a real app on loopback that goes down and comes back), evaluates on the stored checks
and notifies a real webhook receiver; a bad rules file stops the start with what is wrong."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tallyhub.alerts.rules import RuleError
from tallyhub.collector_processor.hub import Hub, HubSettings
from tallyhub.storage import alert_queries as q
from tallyhub.storage.uptime_queries import uptime
from tests.alerts.receivers import Receiver
from tests.conftest import free_port


class HealthApp:
    """A loopback app whose /healthz answers ``status``."""

    def __init__(self) -> None:
        self.status = 200
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(app.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/healthz"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def health_app() -> Iterator[HealthApp]:
    app = HealthApp()
    yield app
    app.server.shutdown()
    app.server.server_close()


def settings(tmp_path: Path, chdb_url: str, database: str, rules: str) -> HubSettings:
    rules_file = tmp_path / "alerts.toml"
    rules_file.write_text(rules)
    return HubSettings(
        data_dir=tmp_path / "data",
        storage_url=chdb_url,
        database=database,
        grpc_address=f"127.0.0.1:{free_port()}",
        http_address="",
        query_address=f"127.0.0.1:{free_port()}",
        dashboard_address="",
        alert_rules_file=rules_file,
    )


def test_a_health_checked_app_goes_down_and_comes_back(
    tmp_path: Path, chdb_url: str, database: str, ch, health_app: HealthApp, receiver: Receiver
) -> None:
    rules = f"""
[[rule]]
name = "shop-health"
app = "shop"
metric = "health_check"
url = "{health_app.url}"
channels = ["webhook:{receiver.url}"]

[[rule]]
name = "shop-down"
app = "shop"
metric = "heartbeat"
"""
    hub = Hub(settings(tmp_path, chdb_url, database, rules))
    hub.start()
    try:
        assert hub.alerts is not None
        runner = hub.alerts.runner
        assert [(r["name"], r["source"]) for r in q.stored_rules(runner)] == [
            ("shop-down", "file"),
            ("shop-health", "file"),
        ]
        hub.alerts.stop_schedules()  # the test runs the checks and the evaluations, at its own times
        checker, evaluator = hub.alerts.checker, hub.alerts.evaluator
        checker.retry_delay_s = 0.05
        now = datetime.now(UTC)

        (healthy,) = checker.run_once()
        assert (healthy.ok, healthy.status, healthy.url) == (True, 200, health_app.url)
        assert {(t.rule.name, t.after) for t in evaluator.tick(now)} == {("shop-down", "firing")}  # never exported
        health_app.status = 503
        (down,) = checker.run_once()
        assert (down.ok, down.status, down.attempts, down.error) == (False, 503, 2, "HTTP 503")
        assert [(t.rule.name, t.after) for t in evaluator.tick(now + timedelta(minutes=1))] == [
            ("shop-health", "firing")
        ]
        health_app.status = 204
        checker.run_once()
        assert [(t.rule.name, t.after) for t in evaluator.tick(now + timedelta(minutes=2))] == [
            ("shop-health", "resolved")
        ]
        assert hub.status()["alerts"] == {"rules": 2, "firing": ["shop-down"], "last evaluation": "", "last error": ""}
        firing, resolved = (json.loads(r.body) for r in receiver.wait_for(2))
        assert (firing["state"], firing["scope"], resolved["state"]) == ("firing", health_app.url, "resolved")
        day = uptime(runner, "shop", datetime.now(UTC) + timedelta(minutes=1))["24h"]
        assert (day["checks"], day["failed"]) == (3, 1)
        assert [incident["error"] for incident in day["incidents"]] == ["HTTP 503"]
    finally:
        hub.stop()


def test_the_rules_file_is_the_truth_for_its_rules_at_each_start(
    tmp_path: Path, chdb_url: str, database: str, ch
) -> None:
    first = settings(tmp_path, chdb_url, database, '[[rule]]\nname = "a"\napp = "shop"\nmetric = "heartbeat"\n')
    hub = Hub(first)
    hub.start()
    assert hub.alerts is not None
    q.save_rule(
        hub.alerts.runner,
        "from-cli",
        "shop",
        "heartbeat",
        '{"name": "from-cli", "app": "shop", "metric": "heartbeat", "threshold": 3}',
        "cli",
    )
    hub.stop()
    assert first.alert_rules_file is not None
    first.alert_rules_file.write_text('[[rule]]\nname = "b"\napp = "shop"\nmetric = "p95"\nthreshold = 1\n')
    hub = Hub(first)
    hub.start()
    try:
        assert hub.alerts is not None
        assert [r["name"] for r in q.stored_rules(hub.alerts.runner)] == ["b", "from-cli"]
    finally:
        hub.stop()


def test_a_bad_rules_file_stops_the_start(tmp_path: Path, chdb_url: str, database: str, ch) -> None:
    bad = settings(tmp_path, chdb_url, database, '[[rule]]\nname = "x"\napp = "shop"\nmetric = "p95"\nop = "=="\n')
    with pytest.raises(RuleError, match=r"alerts.toml: rule 'x': threshold is required"):
        Hub(bad).start()
    assert not (tmp_path / "data" / "hub.json").exists()
