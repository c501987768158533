"""Storage URLs, connecting to a ClickHouse server, and the SQL that migrate() sends to one.

No ClickHouse server can run here: the URLs are parsed by a pure function, a failed connection
is a real one (to a closed port), and the statements a server would get are recorded by a
stand-in for the clickhouse-connect client (the one fake of these tests)."""

from __future__ import annotations

import logging
import re
import traceback
from pathlib import Path
from typing import Any

import pytest

from tallyhub.storage.apps import create_app
from tallyhub.storage.backend import (
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
    ClientRunner,
    ReadOnlyQueryError,
    StorageConnectionError,
    StorageUrlError,
    connection_settings,
    open_client,
    redact_url,
)
from tallyhub.storage.cluster import render_for_cluster
from tallyhub.storage.migrate import SCHEMA_MIGRATIONS, available, migrate, statements
from tests.conftest import free_port


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "clickhouse://user:pass@ch.example:8123/analytics",
            {"interface": "http", "host": "ch.example", "port": 8123, "username": "user", "password": "pass",
             "secure": False, "database": "analytics"},
        ),
        (
            "clickhouse://ch.example",
            {"interface": "http", "host": "ch.example", "port": 8123, "password": "", "secure": False},
        ),
        (
            "http://ch.example:18123/",
            {"interface": "http", "host": "ch.example", "port": 18123, "password": "", "secure": False},
        ),
        (
            "https://user@ch.example/tallyhub",
            {"interface": "https", "host": "ch.example", "port": 8443, "username": "user", "password": "",
             "secure": True, "database": "tallyhub"},
        ),
        (
            "clickhouses://u:p@ch.example:9443",
            {"interface": "https", "host": "ch.example", "port": 9443, "username": "u", "password": "p",
             "secure": True},
        ),
        (
            "clickhouse://ch.example/db?secure=true&verify=false",
            {"interface": "https", "host": "ch.example", "port": 8443, "password": "", "secure": True,
             "database": "db", "verify": False},
        ),
        (
            "https://ch.example?ca_cert=/etc/ssl/ch.pem&client_cert=/c.pem&client_cert_key=/k.pem&connect_timeout=3",
            {"interface": "https", "host": "ch.example", "port": 8443, "password": "", "secure": True,
             "ca_cert": "/etc/ssl/ch.pem", "client_cert": "/c.pem", "client_cert_key": "/k.pem",
             "connect_timeout": 3.0},
        ),
        (
            "clickhouse://us%40er:p%40ss%3Aw@[::1]:8123/my%2Ddb",
            {"interface": "http", "host": "::1", "port": 8123, "username": "us@er", "password": "p@ss:w",
             "secure": False, "database": "my-db"},
        ),
        ("chdb:///var/lib/tallyhub/clickhouse", {"dsn": "chdb:///var/lib/tallyhub/clickhouse"}),
    ],
)  # fmt: skip
def test_storage_urls_become_clickhouse_connect_arguments(url: str, expected: dict[str, Any]) -> None:
    assert connection_settings(url, environ={}) == expected


def test_the_password_comes_from_a_file_when_neither_the_url_nor_the_environment_has_it(tmp_path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-file\n")  # as `echo` and Kubernetes' stringData write it
    environ = {PASSWORD_FILE_ENV: str(secret)}
    assert connection_settings("clickhouse://user@ch.example/db", environ)["password"] == "from-file"
    assert connection_settings("clickhouse://ch.example", {**environ, PASSWORD_ENV: "env"})["password"] == "env"
    with pytest.raises(StorageUrlError, match="cannot read the ClickHouse password from") as error:
        connection_settings("clickhouse://ch.example", {PASSWORD_FILE_ENV: str(tmp_path / "missing")})
    assert "No such file" in str(error.value)


def test_the_password_comes_from_the_environment_when_the_url_has_none() -> None:
    environ = {PASSWORD_ENV: "from-env"}
    assert connection_settings("clickhouse://user@ch.example/db", environ)["password"] == "from-env"
    assert connection_settings("clickhouse://ch.example", environ)["password"] == "from-env"
    assert connection_settings("clickhouse://user:in-url@ch.example", environ)["password"] == "in-url"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://ch.example", "unsupported storage URL scheme"),
        ("clickhouse:///db", "no host"),
        ("clickhouse://ch.example:port", "invalid port"),
        ("clickhouse://ch.example/a/b", "path is a database name"),
        ("https://ch.example?secure=false", "contradicts"),
        ("https://ch.example?verify=maybe", "expected true or false"),
        ("https://ch.example?connect_timeout=soon", "expected seconds"),
        ("https://ch.example?sslmode=require", "unknown storage URL option 'sslmode'"),
    ],
)
def test_bad_storage_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(StorageUrlError, match=message):
        connection_settings(url, environ={})


def test_errors_about_a_url_do_not_show_its_password() -> None:
    with pytest.raises(StorageUrlError) as caught:
        connection_settings("clickhouse://user:s3cret@ch.example?nope=1", environ={})
    assert "s3cret" not in str(caught.value) and "user:***@ch.example" in str(caught.value)


def test_redacted_urls() -> None:
    assert redact_url("clickhouse://user:s3cret@ch.example:8123/db?secure=1") == (
        "clickhouse://user:***@ch.example:8123/db?secure=1"
    )
    assert redact_url("https://ch.example/db") == "https://ch.example/db"
    assert redact_url("chdb:///data/clickhouse") == "chdb:///data/clickhouse"


@pytest.mark.parametrize("where", ["url", "environment"])
@pytest.mark.parametrize("scheme", ["clickhouse", "https"])
def test_a_failed_connection_never_shows_nor_logs_the_password(
    where: str, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    password = "pw-Zq8#never-shown"  # '#' percent-encoded in the URL
    port = free_port()  # nothing listens there
    if where == "url":
        url, environ = f"{scheme}://tallyhub:pw-Zq8%23never-shown@127.0.0.1:{port}/db?verify=false", {}
    else:
        url, environ = f"{scheme}://tallyhub@127.0.0.1:{port}/db?verify=false", {PASSWORD_ENV: password}
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StorageConnectionError) as caught:
        open_client(url, create=True, environ=environ)
    shown = "".join(traceback.format_exception(caught.value))
    assert f"127.0.0.1:{port}" in str(caught.value)  # a connection error, not a refused argument
    assert password not in shown and "pw-Zq8%23" not in shown
    assert password not in caplog.text and "pw-Zq8%23" not in caplog.text


def test_cluster_mode_needs_a_server() -> None:
    with pytest.raises(StorageUrlError, match="cluster mode needs a ClickHouse server"):
        open_client("chdb:///tmp/nowhere", cluster="tallyhub")


class _Result:
    def __init__(self) -> None:
        self.result_rows: list[tuple] = []  # an empty server: no migration applied yet


class RecordingClient:
    """What migrate() needs of a clickhouse-connect client; records what it sends, as a server would
    get it. The server it stands for is empty, of the mode it is asked about."""

    def __init__(self, database: str, schema_migrations_engine: str) -> None:
        self.database = database
        self.engine = schema_migrations_engine
        self.sent: list[str] = []
        self.inserts: list[tuple[str, list, Any]] = []

    def command(self, sql: str, parameters: Any = None, settings: Any = None) -> Any:
        if sql.startswith("SELECT engine FROM system.tables"):
            return self.engine
        self.sent.append(sql)
        return ""

    def query(self, sql: str, parameters: Any = None, settings: Any = None) -> _Result:
        assert sql == "SELECT version FROM schema_migrations"
        return _Result()

    def insert(self, table: str, data: list, column_names: Any = None, settings: Any = None) -> None:
        self.inserts.append((table, data, settings))


def shipped_statements() -> list[str]:
    return [statement for _, _, sql in available() for statement in statements(sql)]


def test_migrate_sends_the_migrations_as_written_to_one_server() -> None:
    client = RecordingClient("tallyhub", schema_migrations_engine="MergeTree")
    applied = migrate(client)  # type: ignore[arg-type]
    assert applied == [name for _, name, _ in available()]
    assert client.sent == [SCHEMA_MIGRATIONS, *shipped_statements()]
    assert [(t, d[0][0], s) for t, d, s in client.inserts] == [
        ("schema_migrations", v, None) for v, _, _ in available()
    ]


def test_migrate_sends_the_cluster_rendering_of_every_statement() -> None:
    client = RecordingClient("analytics", schema_migrations_engine="Distributed")
    migrate(client, "prod_cluster")  # type: ignore[arg-type]
    expected = [
        r
        for s in [SCHEMA_MIGRATIONS, *shipped_statements()]
        for r in render_for_cluster(s, "prod_cluster", "analytics")
    ]
    assert client.sent == expected
    assert client.sent[:2] == [
        "CREATE TABLE IF NOT EXISTS schema_migrations_local ON CLUSTER prod_cluster\n"
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))\n"
        "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/schema_migrations_local', '{replica}')\n"
        "ORDER BY version",
        "CREATE TABLE IF NOT EXISTS schema_migrations ON CLUSTER prod_cluster AS schema_migrations_local\n"
        "ENGINE = Distributed('prod_cluster', 'analytics', 'schema_migrations_local', cityHash64(version))",
    ]
    for sql in client.sent:
        assert " ON CLUSTER prod_cluster" in sql or sql.startswith("INSERT INTO"), sql
        assert "non_replicated_deduplication_window" not in sql
    # the versions are recorded through the Distributed table, on the shards before migrate() returns
    assert {s["insert_distributed_sync"] for _, _, s in client.inserts} == {1}


@pytest.mark.parametrize(("cluster", "engine"), [(None, "Distributed"), ("prod_cluster", "MergeTree")])
def test_a_database_stays_in_the_mode_it_was_created_in(cluster: str | None, engine: str) -> None:
    client = RecordingClient("tallyhub", schema_migrations_engine=engine)
    with pytest.raises(RuntimeError, match="cluster"):
        migrate(client, cluster)  # type: ignore[arg-type]
    assert client.inserts == []


# --- read-only queries, on chDB ----------------------------------------------------------------------


def test_read_only_is_a_clients_own_and_never_reaches_another(ch, chdb_url: str, database: str) -> None:
    """What clickhouse-connect's chDB backend does with a per-query readonly (the bug this avoids):
    it sticks to that client, which refuses writes from then on; a client opened read-only is
    read-only from the start, and nothing of it reaches the other clients of the engine."""
    stuck = open_client(chdb_url, database)
    stuck.raw_query("SELECT 1", settings={"readonly": 1})
    with pytest.raises(Exception, match="READONLY"):
        stuck.raw_query("INSERT INTO apps (name) SELECT 'stuck'")
    stuck.close()
    reader = open_client(chdb_url, database, readonly=True)
    writer = open_client(chdb_url, database)
    try:
        assert reader.raw_query("SELECT getSetting('readonly')") == b"1\n"
        assert writer.raw_query("SELECT getSetting('readonly')") == b"0\n"
        with pytest.raises(Exception, match="Cannot modify 'readonly' setting in readonly mode"):
            reader.raw_query("SELECT 1 SETTINGS readonly = 0")
        writer.raw_query("INSERT INTO apps (name) SELECT 'written'")
        assert reader.raw_query("SELECT name FROM apps") == b"written\n"
    finally:
        reader.close()
        writer.close()


def test_writes_work_after_any_number_of_read_only_queries(runner: ClientRunner) -> None:
    for _ in range(3):
        assert runner.raw("SELECT count() FROM apps", readonly=True) == b"0\n"
        with pytest.raises(Exception, match="READONLY"):
            runner.raw("INSERT INTO apps (name) SELECT 'x'", readonly=True)
    create_app(runner, "shop", "hash")
    runner.raw("INSERT INTO expected_client_errors (app, method, route) SELECT 'shop', 'GET', '/a'")
    assert runner.raw("SELECT count() FROM expected_client_errors", readonly=True) == b"1\n"
    runner.raw("-- a comment first\n insert INTO expected_client_errors (app, method, route) VALUES ('s', 'GET', '/b')")
    assert runner.raw("SELECT count() FROM expected_client_errors", readonly=True) == b"2\n"


def test_a_runner_without_a_read_only_client_runs_no_read_only_query(ch) -> None:
    with pytest.raises(ValueError, match="no read-only client"):
        ClientRunner(ch).raw("SELECT 1", readonly=True)


def test_what_read_only_queries_may_do(runner: ClientRunner) -> None:
    create_app(runner, "shop", "hash")
    assert runner.raw("SELECT name FROM apps WHERE name = {n:String}", {"n": "shop"}, readonly=True) == b"shop\n"
    assert runner.raw("SELECT count() FROM numbers(3)", readonly=True) == b"3\n"  # a read-only table function
    assert runner.raw("SELECT format('{}-{}', 'a', 'b')", readonly=True) == b"a-b\n"  # not the table function
    assert b"key_hash\tString" in runner.raw("DESCRIBE apps", readonly=True)
    assert b"apps" in runner.raw("SHOW TABLES", readonly=True).split()
    assert runner.raw("EXISTS apps", readonly=True) == b"1\n"
    assert runner.raw("SELECT count() FROM requests_hourly", fmt="JSONEachRow", readonly=True) == b'{"count()":0}\n'


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.csv"
    path.write_text("topsecret,password123\n1,2\n")
    return path


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT 1 INTO OUTFILE '{out}'", "INTO OUTFILE is refused in read-only queries"),
        ("SELECT name FROM apps INTO OUTFILE '{out}' AND STDOUT FORMAT CSV", "INTO OUTFILE is refused"),
        ("SHOW TABLES INTO OUTFILE '{out}'", "INTO OUTFILE is refused"),
        ("DESCRIBE apps INTO OUTFILE '{out}'", "INTO OUTFILE is refused"),
        ("EXPLAIN SELECT 1 INTO OUTFILE '{out}'", "INTO OUTFILE is refused"),
        ("SELECT 1 PARALLEL WITH SELECT 2 INTO OUTFILE '{out}'", "INTO OUTFILE is refused"),
        ("SELECT file('{secret}')", "file() is refused in read-only queries: it reads files"),
        ("DESCRIBE (SELECT file('{secret}') AS f)", "file() is refused"),
        ("SELECT * FROM file('{secret}', 'CSV')", "table function file() is refused in read-only queries"),
        ("DESCRIBE file('{secret}', 'CSVWithNames')", "table function file() is refused"),
        ("DESCRIBE url('http://127.0.0.1:{port}/', 'CSV')", "table function url() is refused"),
        ("SELECT * FROM url('http://127.0.0.1:{port}/', 'CSV')", "table function url() is refused"),
        ("SELECT * FROM s3('http://127.0.0.1:{port}/bucket/key.csv') AS s", "table function s3() is refused"),
        ("SELECT * FROM apps JOIN remote('127.0.0.1:{port}', system.one) AS r ON 1", "table function remote()"),
        ("SELECT * FROM view(SELECT * FROM file('{secret}'))", "table function file() is refused"),
        ("SELECT 1; SELECT 1 INTO OUTFILE '{out}'", "Multi-statements are not allowed"),
    ],
)
def test_what_read_only_queries_may_not_do(
    runner: ClientRunner, secret_file: Path, tmp_path: Path, sql: str, message: str
) -> None:
    out = tmp_path / "out.tsv"
    query = sql.format(out=out, secret=secret_file, port=free_port())
    with pytest.raises(ReadOnlyQueryError, match=re.escape(message)) as caught:
        runner.raw(query, readonly=True)
    assert not out.exists()
    assert "topsecret" not in str(caught.value) and "parseQuery" not in str(caught.value)


def test_a_syntax_error_reads_as_clickhouses_own(runner: ClientRunner) -> None:
    with pytest.raises(ReadOnlyQueryError) as caught:
        runner.raw("SELEC 1", readonly=True)
    assert str(caught.value).startswith("Code: 62. DB::Exception: Syntax error")
    assert str(caught.value).endswith("(SYNTAX_ERROR)") and "formatQuery" not in str(caught.value)
