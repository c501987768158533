"""The hub's query endpoint on real chDB: read-only queries beside writes, what the read-only path
refuses, hub.json, and the addresses it listens on."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tallyhub.collector_processor.cli import main
from tallyhub.collector_processor.query_api import (
    HUB_FILE,
    HubRunner,
    QueryAddressError,
    QueryServer,
    check_query_address,
)
from tallyhub.storage.apps import create_app, list_apps, revoke_app
from tallyhub.storage.backend import SessionlessRunner
from tallyhub.storage.report_queries import build_report
from tallyhub.storage.window import resolve_window


@pytest.fixture
def hub(ch, chdb_url: str, database: str, data_dir: Path) -> Iterator[HubRunner]:
    """A QueryServer as the hub runs it, found by `tallyhub` commands through hub.json."""
    server = QueryServer(SessionlessRunner(chdb_url, database), "127.0.0.1:0", lambda: {"uptime s": 1.0})
    server.start()
    server.publish(data_dir)
    found = HubRunner.find(data_dir)
    assert found is not None
    yield found
    server.stop()


def test_writes_work_after_read_only_queries_through_the_hub(hub: HubRunner) -> None:
    create_app(hub, "other", "hash-0")
    for _ in range(3):
        assert hub.raw("SELECT count() FROM apps", readonly=True) == b"1\n"  # `tallyhub sql`
        with pytest.raises(RuntimeError, match="READONLY"):
            hub.raw("INSERT INTO apps (name) SELECT 'x'", readonly=True)
        report = build_report(hub, "other", resolve_window(datetime.now(UTC), "1h", None, None))  # `tallyhub report`
        assert report["traffic"] is False
    create_app(hub, "shop", "hash-1")  # `tallyhub apps create`
    hub.raw("INSERT INTO expected_client_errors (app, method, route) SELECT 'shop', 'GET', '/a'")  # `sql --write`
    assert hub.raw("SELECT count() FROM expected_client_errors", readonly=True) == b"1\n"
    revoke_app(hub, "shop")
    assert [a["name"] for a in list_apps(hub)] == ["other", "shop"]


def test_no_query_sets_anything_for_the_next(hub: HubRunner) -> None:
    """Each query has a client of its own, like ClickHouse's HTTP interface without a session."""
    assert hub.raw("SELECT getSetting('readonly')", readonly=True) == b"1\n"
    assert hub.raw("SELECT getSetting('readonly')") == b"0\n"
    errors: list[BaseException] = []

    def reads_and_writes(i: int) -> None:
        try:
            hub.raw("SELECT count() FROM apps", readonly=True)
            create_app(hub, f"app-{i}", f"hash-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reads_and_writes, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(list_apps(hub)) == 6


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT 1 INTO OUTFILE '{out}'", "INTO OUTFILE is refused in read-only queries"),
        ("SELECT file('{out}')", "file() is refused in read-only queries"),
        ("DESCRIBE file('{out}', 'CSVWithNames')", "table function file() is refused in read-only queries"),
        ("SELECT * FROM url('http://127.0.0.1:9/', 'CSV')", "table function url() is refused in read-only queries"),
    ],
)
def test_the_hub_refuses_files_and_urls_in_read_only_queries(
    hub: HubRunner, tmp_path: Path, sql: str, message: str
) -> None:
    out = tmp_path / "out.csv"
    with pytest.raises(RuntimeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hub.raw(sql.format(out=out), readonly=True)
    assert not out.exists()
    assert hub.raw("SELECT 1") == b"1\n"  # and writes are still allowed


def test_tallyhub_sql_says_why_through_the_hub(hub: HubRunner, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.tsv"
    result = CliRunner().invoke(main, ["sql", "--data-dir", str(data_dir), f"SELECT 1 INTO OUTFILE '{out}'"])
    assert result.exit_code == 1 and "INTO OUTFILE is refused in read-only queries" in result.output
    assert "tallyhub sql '…' > FILE" in result.output and not out.exists()
    result = CliRunner().invoke(main, ["apps", "create", "shop", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("thk_")


# --- hub.json ----------------------------------------------------------------------------------------


def test_hub_json_is_the_owners_alone(hub: HubRunner, data_dir: Path) -> None:
    path = data_dir / HUB_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["token"] == hub.token
    assert [p.name for p in data_dir.iterdir()] == [HUB_FILE]  # no temporary file left


def test_a_stale_hub_json_link_is_replaced_not_followed(ch, chdb_url: str, database: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    target = tmp_path / "elsewhere.json"
    target.write_text("someone else's file\n")
    (data_dir / HUB_FILE).symlink_to(target)
    server = QueryServer(SessionlessRunner(chdb_url, database), "127.0.0.1:0")
    server.start()
    try:
        path = server.publish(data_dir)
    finally:
        server.stop()
    assert target.read_text() == "someone else's file\n"
    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["token"] == server.token


def test_hub_json_is_private_whatever_the_umask(ch, chdb_url: str, database: str, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        server = QueryServer(SessionlessRunner(chdb_url, database), "127.0.0.1:0")
        server.start()
        path = server.publish(tmp_path)
        server.stop()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- the address -------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1:8124", "127.0.0.2:0", "localhost:8124", "[::1]:8124"])
def test_loopback_addresses_are_accepted(address: str) -> None:
    check_query_address(address)


@pytest.mark.parametrize("address", ["0.0.0.0:8124", ":8124", "192.0.2.10:8124", "[::]:8124"])
def test_other_addresses_are_refused_unless_allowed(address: str) -> None:
    with pytest.raises(QueryAddressError, match="not a loopback address") as caught:
        check_query_address(address)
    assert "hub's own ClickHouse credentials" in str(caught.value) and "--allow-remote-query" in str(caught.value)
    check_query_address(address, allow_remote=True)


def test_serve_refuses_a_remote_query_address_before_it_starts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    args = ["serve", "--data-dir", str(data_dir), "--query-address", "0.0.0.0:0", "--grpc-address", "127.0.0.1:0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "--query-address 0.0.0.0:0 is not a loopback address" in result.output
    assert "--allow-remote-query" in result.output
    assert not data_dir.exists()  # refused before anything was opened


def test_the_endpoint_answers_only_with_its_token_and_says_what_it_serves(hub: HubRunner) -> None:
    """On the hub's web stack (Starlette + uvicorn, as the dashboard): the token first, then the routes."""
    assert hub.status() == {"uptime s": 1.0}
    no_token = httpx.post(f"{hub.url}/", content=b"SELECT 1")
    assert no_token.status_code == 403 and no_token.headers["x-clickhouse-exception-code"] == "516"
    assert no_token.text.startswith("Code: 516. DB::Exception: default: Authentication failed")
    assert "the token of `tallyhub sql`" in no_token.text
    headers = {"X-Tallyhub-Token": hub.token}
    unknown = httpx.get(f"{hub.url}/nope", headers=headers)
    assert (unknown.status_code, unknown.text) == (404, "GET /status or /dashboard-link, or POST / with SQL\n")
    assert httpx.put(f"{hub.url}/", headers=headers, content=b"SELECT 1").status_code == 405
    answer = httpx.post(
        f"{hub.url}/?default_format=JSONEachRow&param_x=7", headers=headers, content=b"SELECT {x:UInt8} AS x"
    )
    assert (answer.status_code, answer.text, answer.headers["x-clickhouse-format"]) == (200, '{"x":7}\n', "JSONEachRow")
    assert answer.headers["content-type"] == "application/x-ndjson; charset=UTF-8"
