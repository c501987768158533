"""ClickHouse's own clients on the hub's query endpoint, as Grafana or a notebook would use it:
clickhouse-connect (Python) and @clickhouse/client (Node.js), signed in as a dashboard user with
ClickHouse's conventions, reading the embedded database; writes refused; a wrong password refused."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tallyhub.collector_processor.query_api import QueryServer
from tallyhub.dashboard.passwords import hash_password
from tallyhub.storage.apps import create_app
from tallyhub.storage.backend import SessionlessRunner
from tallyhub.storage.users import save_user

PASSWORD = "correct horse battery staple"


@pytest.fixture
def endpoint(ch, chdb_url: str, database: str) -> Iterator[tuple[str, int, str]]:
    runner = SessionlessRunner(chdb_url, database)
    save_user(runner, "alice", hash_password(PASSWORD))
    create_app(runner, "shop", "hash-1")
    server = QueryServer(runner, "127.0.0.1:0")
    server.start()
    host, _, port = server.url.removeprefix("http://").rpartition(":")
    yield host, int(port), database
    server.stop()


def test_clickhouse_connect_reads_as_a_dashboard_user(endpoint) -> None:
    host, port, database = endpoint
    client = clickhouse_connect.get_client(
        host=host, port=port, username="alice", password=PASSWORD, database=database, compress=False
    )
    assert client.command("SELECT 1") == 1
    assert client.query("SELECT name FROM apps FINAL ORDER BY name").result_rows == [("shop",)]
    parameterized = client.query("SELECT {n:UInt32} * 2 AS twice", parameters={"n": 21})
    assert parameterized.result_rows == [(42,)] and parameterized.column_names == ("twice",)
    frame = client.query_df("SELECT number AS n, toString(number) AS s FROM numbers(3)")
    assert frame["n"].tolist() == [0, 1, 2] and frame["s"].tolist() == ["0", "1", "2"]
    with pytest.raises(DatabaseError, match=r"164|READONLY|read-only"):
        client.command("INSERT INTO apps (name, key_hash, created_at) SELECT 'x', 'y', now64(3)")
    assert client.query("SELECT count() FROM apps").result_rows == [(1,)]
    client.close()
    with pytest.raises(DatabaseError, match=r"516|Authentication failed"):
        clickhouse_connect.get_client(host=host, port=port, username="alice", password="wrong", compress=False)


NODE_SCRIPT = """
const { createClient } = require('@clickhouse/client');
(async () => {
  const client = createClient({
    url: process.argv[2], username: 'alice', password: process.argv[3], database: process.argv[4],
  });
  const ping = await client.ping();
  const names = await client.query({ query: 'SELECT name FROM apps FINAL ORDER BY name', format: 'JSONEachRow' });
  const rows = await names.json();
  const plus = await client.query({ query: 'SELECT {n:UInt32} + 1 AS m', query_params: { n: 41 }, format: 'JSON' });
  const bound = await plus.json();
  let refused = '';
  try { await client.command({ query: "INSERT INTO apps (name, key_hash, created_at) SELECT 'x', 'y', now64(3)" }); }
  catch (e) { refused = String(e.code || e.message); }
  console.log(JSON.stringify({ ping: ping.success, rows, bound: bound.data, refused }));
  await client.close();
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.fixture(scope="module")
def node_client(tmp_path_factory) -> Path:
    """@clickhouse/client installed from npm into a directory of its own."""
    if shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed (apt-get install nodejs npm)")
    directory = tmp_path_factory.mktemp("node")
    result = subprocess.run(
        ["npm", "install", "--silent", "--no-audit", "--no-fund", "@clickhouse/client@^1"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (directory / "query.js").write_text(NODE_SCRIPT)
    return directory


@pytest.mark.slow
def test_the_official_nodejs_client_reads_as_a_dashboard_user(endpoint, node_client: Path) -> None:
    host, port, database = endpoint
    result = subprocess.run(
        ["node", "query.js", f"http://{host}:{port}", PASSWORD, database],
        cwd=node_client,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["ping"] is True
    assert answer["rows"] == [{"name": "shop"}]
    assert answer["bound"] == [{"m": 42}]
    assert answer["refused"] == "164"
