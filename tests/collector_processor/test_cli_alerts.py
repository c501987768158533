"""`tallyhub alerts add|list|show|test|rm` as a user runs them (embedded ClickHouse, no hub), with a
real webhook receiver for `test`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tallyhub.alerts.notify.send import verify_signature
from tallyhub.collector_processor.cli import main
from tallyhub.storage import alert_queries as q
from tallyhub.storage.backend import ClientRunner
from tests.alerts.receivers import Receiver


@pytest.fixture
def alerts(ch, chdb_url: str, database: str, tmp_path: Path):
    def run(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Result:
        result = CliRunner().invoke(
            main,
            ["alerts", *args, "--storage-url", chdb_url, "--database", database, "--data-dir", str(tmp_path)],
            env={"COLUMNS": "80", **(env or {})},  # a terminal 80 columns wide
            terminal_width=80,
        )
        assert result.exit_code == code, result.output
        return result

    return run


def test_add_list_show_rm(alerts, runner: ClientRunner) -> None:
    added = alerts(
        "add", "slow-items", "--app", "shop", "--env", "production", "--endpoint", "GET /items/{id}", "--metric", "p95",
        "--threshold", "0.5", "--window", "15m", "--pending", "5m", "--notify", "slack:https://hooks.slack.com/services/T/B/secret",
    )  # fmt: skip
    assert added.stdout == (
        "added alert rule slow-items: shop env production GET /items/{id}: p95 > 0.5 over 15m, every 1m\n"
    )
    alerts("add", "down", "--app", "shop", "--metric", "heartbeat")
    assert (
        "it notifies no one"
        in alerts("add", "quiet", "--app", "shop", "--metric", "requests", "--op", "<", "--threshold", "1").stderr
    )
    assert alerts("list").stdout.splitlines() == [  # at 80 columns: the widest condition cut
        "RULE        APP              CONDITION                        STATE  SINCE (UTC)",
        "down        shop             heartbeat >= 3                   -      -",
        "quiet       shop             requests < 1 over 5m             -      -",
        "slow-items  shop/production  GET /items/{id} p95 > 0.5 over…  -      -",
    ]
    shown = alerts("show", "slow-items").stdout
    assert "condition  p95 > 0.5 over 15m, every 1m\n" in shown
    assert "delays     pending 5m, keep firing 0s\n" in shown
    assert "notifies   slack:https://hooks.slack.com/***\n" in shown and "secret" not in shown
    assert "state      not evaluated yet\nhistory: none yet\nnotifications: none yet\n" in shown
    listed = json.loads(alerts("list", "--json").stdout)
    assert [r["name"] for r in listed] == ["down", "quiet", "slow-items"] and listed[0]["threshold"] == 3.0

    assert (
        "exists already (--replace replaces it)"
        in alerts("add", "down", "--app", "shop", "--metric", "heartbeat", code=1).output
    )
    assert (
        "replaced alert rule down"
        in alerts("add", "down", "--app", "shop", "--metric", "heartbeat", "--threshold", "10", "--replace").stdout
    )
    assert alerts("rm", "quiet").stdout == "removed alert rule quiet\n"
    assert [row["name"] for row in q.stored_rules(runner)] == ["down", "slow-items"]
    assert "no alert rule named 'quiet'" in alerts("rm", "quiet", code=1).output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metric", "p95"], "threshold is required"),
        (["--metric", "p95", "--threshold", "1", "--window", "2d"], "whole minutes from 1m to 24h"),
        (["--metric", "p95", "--threshold", "1", "--notify", "sms:123"], "unknown channel 'sms'"),
        (["--metric", "health_check"], "needs url"),
        (["--metric", "latency", "--threshold", "1"], "'latency' is not one of"),
    ],
)
def test_bad_rules_are_refused(alerts, args: list[str], message: str) -> None:
    assert message in alerts("add", "r", "--app", "shop", *args, code=2 if "latency" in args else 1).output


def test_test_sends_a_sample_to_every_channel_and_says_how_it_went(alerts, receiver: Receiver, closed_url: str) -> None:
    alerts(
        "add",
        "errors",
        "--app",
        "shop",
        "--metric",
        "error_rate",
        "--threshold",
        "0.05",
        "--notify",
        f"webhook:{receiver.url}",
    )
    sent = alerts("test", "errors", env={"TALLYHUB_WEBHOOK_SECRET": "k"})
    assert sent.stdout == f"webhook:http://127.0.0.1:{receiver.server.server_address[1]}/***: delivered\n"
    (request,) = receiver.requests
    body = json.loads(request.body)
    assert (body["state"], body["rule"], body["condition"]) == ("test", "errors", "error_rate > 0.05 over 5m")
    assert verify_signature(
        "k", request.headers["x-tallyhub-timestamp"], request.body, request.headers["x-tallyhub-signature"]
    )

    alerts("add", "errors", "--app", "shop", "--metric", "error_rate", "--threshold", "0.05", "--replace",
           "--notify", f"webhook:{receiver.url}", "--notify", f"webhook:{closed_url}")  # fmt: skip
    failed = alerts("test", "errors", code=1)
    assert failed.stdout.splitlines()[0].endswith(": delivered")
    refused = f"failed: webhook:{closed_url.rsplit('/', 1)[0]}/***: connection refused; is the receiver running"
    assert failed.stdout.splitlines()[1] == refused + " on that host and port?"
    assert "1 of 2 channels failed" in failed.stderr
    alerts("add", "quiet", "--app", "shop", "--metric", "requests", "--threshold", "1")
    assert "notifies no one" in alerts("test", "quiet", code=1).output
