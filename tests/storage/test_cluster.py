"""Cluster mode: the migrations rendered for a ClickHouse cluster.

What this machine allows: every rendered statement is parsed by ClickHouse's own parser (chDB's
``EXPLAIN AST``); the layout runs on one chDB node configured with a one-shard cluster, where
Distributed tables work (the shard is local) — with MergeTree engines, against the same data
on the plain single-node schema; and the Replicated tables are created on chDB's in-memory test
Keeper (created only: their replicas never leave read-only mode in chDB, so nothing is inserted).
``ON CLUSTER`` itself only parses: chDB refuses distributed DDL.

Run as a script (``python test_cluster.py MODE DIR``), this file is the child process of the
chDB runs: chDB hosts one engine per process, and these need a configuration of their own.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tallyhub.collector_processor.cli import main as cli
from tallyhub.storage.cluster import (
    SHARDING_KEYS,
    ClusterRenderError,
    apply_retention_on_cluster,
    render_for_cluster,
)
from tallyhub.storage.migrate import SCHEMA_MIGRATIONS, available, migrate, shipped_sharded_tables, statements
from tallyhub.storage.retention import TTL_EXPRESSIONS

REPO = Path(__file__).resolve().parents[2]

CLUSTER = "tallyhub_cluster"


def shipped() -> list[str]:
    return [SCHEMA_MIGRATIONS, *(statement for _, _, sql in available() for statement in statements(sql))]


def rendered_everything(**options: Any) -> list[str]:
    extra = [
        "CREATE DATABASE IF NOT EXISTS `analytics`",
        *(f"ALTER TABLE {t} MODIFY TTL {c} + INTERVAL 3 MONTH" for t, c in TTL_EXPRESSIONS.items()),
        "OPTIMIZE TABLE requests FINAL",
        "DROP TABLE IF EXISTS requests_daily SYNC",
        "DROP VIEW IF EXISTS traffic",
        "DROP FUNCTION IF EXISTS tallyhub_apdex",
    ]
    return [r for s in [*shipped(), *extra] for r in render_for_cluster(s, CLUSTER, "analytics", **options)]


# --- rendering ---------------------------------------------------------------------------------


def test_a_table_becomes_a_replicated_local_table_and_a_distributed_one() -> None:
    local, distributed = render_for_cluster(
        "CREATE TABLE IF NOT EXISTS openapi\n(\n    app String,\n    env String,\n    started_at DateTime64(3)\n)\n"
        "ENGINE = ReplacingMergeTree(started_at)\nORDER BY (app, env)\nTTL toDateTime(started_at) + INTERVAL 12 MONTH\n"
        "SETTINGS non_replicated_deduplication_window = 10000, index_granularity = 8192",
        "c1",
        "analytics",
    )
    assert local == (
        "CREATE TABLE IF NOT EXISTS openapi_local ON CLUSTER c1\n(\n    app String,\n    env String,\n"
        "    started_at DateTime64(3)\n)\n"
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/openapi_local', '{replica}', "
        "started_at)\nORDER BY (app, env)\nTTL toDateTime(started_at) + INTERVAL 12 MONTH\n"
        "SETTINGS replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800, "
        "index_granularity = 8192"
    )
    assert distributed == (
        "CREATE TABLE IF NOT EXISTS openapi ON CLUSTER c1 AS openapi_local\n"
        "ENGINE = Distributed('c1', 'analytics', 'openapi_local', cityHash64(app, env))"
    )


def test_a_new_table_is_sharded_by_its_order_by_and_other_engines_stay_per_server() -> None:
    _, distributed = render_for_cluster(
        "CREATE TABLE x (a String, t DateTime) ENGINE = SummingMergeTree ORDER BY (a, t)", "c", "db"
    )
    assert distributed.endswith("Distributed('c', 'db', 'x_local', cityHash64(a, t))")
    assert render_for_cluster("CREATE TABLE m (a UInt8) ENGINE = Memory", "c", "db") == [
        "CREATE TABLE m ON CLUSTER c (a UInt8) ENGINE = Memory"
    ]
    with pytest.raises(ClusterRenderError, match="tuple"):
        render_for_cluster("CREATE TABLE y (a UInt8) ENGINE = MergeTree ORDER BY tuple()", "c", "db")


def test_the_local_single_node_variant_keeps_the_engines() -> None:
    local, distributed = render_for_cluster(
        "CREATE TABLE requests (app String, route String) ENGINE = MergeTree ORDER BY app "
        "SETTINGS non_replicated_deduplication_window = 10",
        "c",
        "db",
        replicated=False,
        on_cluster=False,
    )
    assert local == (
        "CREATE TABLE requests_local\n(app String, route String)\nENGINE = MergeTree\nORDER BY app "
        "SETTINGS non_replicated_deduplication_window = 10"
    )
    assert distributed == (
        "CREATE TABLE requests AS requests_local\n"
        "ENGINE = Distributed('c', 'db', 'requests_local', cityHash64(app, route))"
    )


def test_materialized_views_work_on_the_local_tables() -> None:
    (mv,) = render_for_cluster(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS requests_hourly_mv TO requests_hourly AS\n"
        "SELECT toStartOfHour(minute) AS hour, sum(requests) AS requests, 'FROM requests' AS s\n"
        "FROM requests GROUP BY hour",
        "c",
        "db",
    )
    assert mv == (
        "CREATE MATERIALIZED VIEW IF NOT EXISTS requests_hourly_mv ON CLUSTER c TO requests_hourly_local AS\n"
        "SELECT toStartOfHour(minute) AS hour, sum(requests) AS requests, 'FROM requests' AS s\n"
        "FROM requests_local GROUP BY hour"
    )


def test_views_read_the_distributed_tables_with_global_subqueries() -> None:
    (view,) = render_for_cluster(
        "CREATE VIEW IF NOT EXISTS v AS SELECT r.app FROM requests AS r LEFT JOIN (SELECT app FROM apps) AS a "
        "ON a.app = r.app ARRAY JOIN [1] AS one WHERE (r.app, r.route) NOT IN (SELECT app, route FROM "
        "expected_client_errors) AND r.app IN (SELECT name FROM apps) AND r.app GLOBAL IN (SELECT 'x') "
        "AND r.route != 'a JOIN b'",
        "c",
        "db",
    )
    assert view == (
        "CREATE VIEW IF NOT EXISTS v ON CLUSTER c AS SELECT r.app FROM requests AS r GLOBAL LEFT JOIN (SELECT app "
        "FROM apps) AS a ON a.app = r.app ARRAY JOIN [1] AS one WHERE (r.app, r.route) GLOBAL NOT IN (SELECT app, "
        "route FROM expected_client_errors) AND r.app GLOBAL IN (SELECT name FROM apps) AND r.app GLOBAL IN "
        "(SELECT 'x') AND r.route != 'a JOIN b'"
    )


def test_backfills_go_through_the_distributed_tables_synchronously() -> None:
    assert render_for_cluster("INSERT INTO requests_hourly\nSELECT * FROM requests", "c", "db") == [
        "INSERT INTO requests_hourly SETTINGS insert_distributed_sync = 1\nSELECT * FROM requests"
    ]
    assert render_for_cluster("INSERT INTO apps (name) SETTINGS async_insert = 0 VALUES ('a')", "c", "db") == [
        "INSERT INTO apps (name) SETTINGS insert_distributed_sync = 1, async_insert = 0 VALUES ('a')"
    ]


def test_functions_alters_and_drops_go_on_cluster() -> None:
    assert render_for_cluster("CREATE OR REPLACE FUNCTION f AS (x) -> x + 1", "c", "db") == [
        "CREATE OR REPLACE FUNCTION f ON CLUSTER c AS (x) -> x + 1"
    ]
    assert render_for_cluster("ALTER TABLE requests MODIFY TTL minute + INTERVAL 3 MONTH", "c", "db") == [
        "ALTER TABLE requests_local ON CLUSTER c MODIFY TTL minute + INTERVAL 3 MONTH"
    ]
    # a column changes on the local tables and on the Distributed table, which has columns of its own
    assert render_for_cluster("ALTER TABLE apps ADD COLUMN IF NOT EXISTS x UInt8", "c", "db") == [
        "ALTER TABLE apps_local ON CLUSTER c ADD COLUMN IF NOT EXISTS x UInt8",
        "ALTER TABLE apps ON CLUSTER c ADD COLUMN IF NOT EXISTS x UInt8",
    ]
    assert render_for_cluster("ALTER TABLE v MODIFY COLUMN x UInt16", "c", "db") == [
        "ALTER TABLE v ON CLUSTER c MODIFY COLUMN x UInt16"
    ]
    assert render_for_cluster("DROP TABLE IF EXISTS requests SYNC", "c", "db") == [
        "DROP TABLE IF EXISTS requests ON CLUSTER c SYNC",
        "DROP TABLE IF EXISTS requests_local ON CLUSTER c SYNC",
    ]
    assert render_for_cluster("CREATE DATABASE IF NOT EXISTS `db`", "c", "db") == [
        "CREATE DATABASE IF NOT EXISTS `db` ON CLUSTER c"
    ]
    assert render_for_cluster("DROP VIEW v", "{cluster}", "db") == ["DROP VIEW v ON CLUSTER '{cluster}'"]


@pytest.mark.parametrize(
    ("statement", "cluster", "database", "error"),
    [
        ("CREATE TABLE t ON CLUSTER c (a UInt8) ENGINE = MergeTree ORDER BY a", "c", "db", "already ON CLUSTER"),
        ("CREATE TABLE t (a UInt8) ENGINE = ReplicatedMergeTree ORDER BY a", "c", "db", "already replicated"),
        ("CREATE MATERIALIZED VIEW v ENGINE = MergeTree ORDER BY a AS SELECT 1 AS a", "c", "db", "needs TO"),
        ("RENAME TABLE a TO b", "c", "db", "no cluster rendering"),
        ("SELECT 1", "c; DROP", "db", "invalid cluster name"),
        ("SELECT 1", "c", "db`", "invalid database name"),
    ],
)
def test_what_cannot_be_rendered_is_refused(statement: str, cluster: str, database: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        render_for_cluster(statement, cluster, database)


def order_by_columns(statement: str) -> set[str]:
    order_by = re.search(r"ORDER BY \(?([^)\n]+)\)?", statement)
    assert order_by is not None
    return {c.strip() for c in order_by.group(1).split(",")}


def test_every_sharding_key_is_made_of_order_by_columns() -> None:
    """Rows that FINAL or a merge must combine share their ORDER BY values: they are on one shard."""
    tables = {}
    for statement in shipped():
        if m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\(.*ENGINE = \w*MergeTree", statement, re.DOTALL):
            tables[m.group(1)] = order_by_columns(statement)
    assert set(tables) == shipped_sharded_tables() == set(SHARDING_KEYS)
    for table, columns in tables.items():
        key = re.fullmatch(r"cityHash64\((.+)\)", SHARDING_KEYS[table])
        assert key is not None and {c.strip() for c in key.group(1).split(",")} <= columns, table
    # requests and its rollups are sharded alike: a rollup row's inputs are all on its shard
    assert SHARDING_KEYS["requests"] == SHARDING_KEYS["requests_hourly"] == SHARDING_KEYS["requests_daily"]


# --- ClickHouse's parser ---------------------------------------------------------------------------


def format_query(ch, sql: str) -> str:
    return ch.query("SELECT formatQuerySingleLine({sql:String})", parameters={"sql": sql}).result_rows[0][0]


def test_every_rendered_statement_parses_as_clickhouse_sql(ch) -> None:
    rendered = rendered_everything()
    assert len(rendered) > len(shipped())
    for sql in rendered:
        ch.command("EXPLAIN AST " + sql)  # raises on a syntax error
        formatted = format_query(ch, sql)
        assert f"ON CLUSTER {CLUSTER}" in formatted or formatted.startswith("INSERT INTO"), formatted
    # and the parser does refuse what is not SQL
    with pytest.raises(Exception, match="Syntax error"):
        ch.command("EXPLAIN AST CREATE TABLE t ON CLUSTER c AS t_local ENGINE = Distributed('c', 'db', 't_local',")


def test_the_parsed_replicated_tables_keep_their_engine_arguments(ch) -> None:
    for sql in rendered_everything():
        if "ENGINE = Replicated" in sql:
            formatted = format_query(ch, sql)
            path = r"'/clickhouse/tables/\{shard\}/\{database\}/\w+_local', '\{replica\}'"
            assert re.search(rf"ENGINE = Replicated\w*MergeTree\({path}", formatted), formatted


# --- runs on chDB --------------------------------------------------------------------------------


def run_child(mode: str, workdir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, mode, str(workdir)], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_cluster_layout_on_one_node_stores_and_answers_as_the_plain_schema(tmp_path: Path) -> None:
    out = run_child("sharded", tmp_path)
    assert out["applied"] == [name for _, name, _ in available()] and out["again"] == []
    assert out["engines"]["requests"] == "Distributed" and out["engines"]["requests_local"] == "MergeTree"
    assert out["engines"]["requests_hourly_mv"] == "MaterializedView"
    # every table and every view has rows, and the same as on the plain schema
    assert out["differences"] == {}
    assert all(n > 0 for n in out["rows"].values()), out["rows"]
    assert set(out["rows"]) >= {"requests", "requests_hourly", "consumer_activity", "endpoint_overview_daily"}
    # a batch inserted again with its token is stored once, rollups included
    assert out["replayed"] == {"plain": [5, 5, 5], "sharded": [5, 5, 5]}
    # retention changes the local tables, once
    assert set(out["retention"]) == set(TTL_EXPRESSIONS) and out["retention_again"] == []
    assert "toIntervalMonth(3)" in out["requests_local_ddl"]


def test_the_replicated_tables_are_created_by_clickhouse(tmp_path: Path) -> None:
    out = run_child("replicated", tmp_path)
    engines = out["engines"]
    for table in shipped_sharded_tables():
        assert engines[table] == "Distributed", table
        assert engines[table + "_local"].startswith("Replicated"), table
    assert engines["openapi_local"] == "ReplicatedReplacingMergeTree"
    assert out["replicas"]["requests_local"] == ["/clickhouse/tables/01/analytics/requests_local", "r1"]
    assert (
        "replicated_deduplication_window = 10000, replicated_deduplication_window_seconds = 604800"
        in (out["requests_local_ddl"])
    )


# --- the command line --------------------------------------------------------------------------------


def test_the_cluster_option_reaches_the_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["migrate", "--data-dir", str(tmp_path), "--cluster", "c1"])
    assert result.exit_code != 0 and "cluster mode needs a ClickHouse server URL" in result.output
    monkeypatch.setenv("TALLYHUB_CLUSTER", "c1")
    monkeypatch.setenv("TALLYHUB_CLICKHOUSE_PASSWORD", "env-secret-77")
    result = runner.invoke(cli, ["apps", "list", "--storage-url", "clickhouse://me:url-secret-66@127.0.0.1:1/db"])
    assert result.exit_code != 0 and "cannot open clickhouse://me:***@127.0.0.1:1/db" in result.output
    assert "url-secret-66" not in result.output and "env-secret-77" not in result.output


# --- the child process ---------------------------------------------------------------------------------

_CONFIG = """<clickhouse>
    <tcp_port>9000</tcp_port>
    <remote_servers>
        <single><shard><replica><host>localhost</host><port>9000</port></replica></shard></single>
    </remote_servers>
    <macros><shard>01</shard><replica>r1</replica></macros>
    <zookeeper><implementation>testkeeper</implementation></zookeeper>
</clickhouse>
"""
"""One shard, this node (tcp_port makes localhost:9000 local: no connection is made), and an
in-memory Keeper for the Replicated tables."""

NOW = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0, tzinfo=None)
FROM, TO = NOW - dt.timedelta(days=3), NOW + dt.timedelta(hours=1)
WINDOW = f"app = 'shop', env = '', from = '{FROM}', to = '{TO}'"
VIEWS = {
    "instance_uptime": "instance_uptime",
    **{v: f"{v}({WINDOW}, apdex_t = 0.5)" for v in ("endpoint_overview", "endpoint_overview_hourly")},
    "endpoint_overview_daily": f"endpoint_overview_daily({WINDOW}, apdex_t = 0.5)",
    **{
        v: f"{v}({WINDOW})"
        for v in (
            "traffic",
            "traffic_hourly",
            "traffic_daily",
            "consumer_activity",
            "validation_error_overview",
            "server_error_overview",
        )
    },
}


def _random_rows(client: Any, table: str) -> str:
    """INSERT … SELECT of 60 seeded random rows for ``table``, the same on every database: small
    integers as numbers (sums stay exact), recent times, a few apps, envs, routes and statuses."""
    n = "rowNumberInAllBlocks()"
    by_name = {
        "app": f"['shop', 'blog'][1 + {n} % 2]",
        "env": f"['prod', 'dev'][1 + intDiv({n}, 2) % 2]",
        "route": f"['/a', '/b', '/c'][1 + {n} % 3]",
        "method": f"['GET', 'POST'][1 + intDiv({n}, 3) % 2]",
        "status": f"[200, 404, 500][1 + {n} % 5 % 3]",
        "instance": f"['i-1', 'i-2'][1 + {n} % 2]",
    }
    by_type = [
        (r"DateTime", f"toDateTime('{NOW}', 'UTC') - toIntervalMinute({n} * 37)"),
        (r"Float64", f"toFloat64({n} % 7)"),
        (r"^(SimpleAggregateFunction\(sumMap, )?Map\(Int32", f"map(toInt32(-100 + {n} % 4), toUInt64(1 + {n} % 3))"),
        (r"^(SimpleAggregateFunction\(\w+, )?U?Int(8|16|32|64)\)?$", f"1 + {n} % 5"),
    ]
    columns = client.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
        "AND default_kind != 'ALIAS' ORDER BY position",
        parameters={"t": table},
    ).result_rows
    replace = []
    for name, type_ in columns:
        expr = by_name.get(name) or next((e for p, e in by_type if re.search(p, type_) and "Tuple" not in type_), None)
        if expr is not None and "Array" not in type_:
            replace.append(f"CAST({expr} AS {type_}) AS {name}")
    structure = ", ".join(f"`{name}` {type_}" for name, type_ in columns).replace("'", "''")
    return (
        f"INSERT INTO {table} SELECT * REPLACE ({', '.join(replace)}) "
        f"FROM generateRandom('{structure}', 42, 6, 3) LIMIT 60"
    )


def grafana_panels() -> dict[str, str]:
    """deploy/grafana's panel queries for the app `shop` over the last 6 hours (minutes) and the 3
    days of the random rows (hourly rollups), the plugin's macros expanded: in cluster rendering
    they must answer as on the plain schema."""

    def load(path: Path) -> Any:  # by path: this child runs as a script, the repository not on sys.path
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    dashboards = load(REPO / "deploy" / "grafana" / "dashboards.py")
    expand = load(REPO / "tests" / "deploy" / "grafana_macros.py").expand
    end = TO.replace(tzinfo=dt.UTC)
    return {
        f"grafana:{title} ({hours} h)": expand(
            sql, end - dt.timedelta(hours=hours), end, 60, {"app": "shop", "env": "__all"}
        )
        for title, _kind, sql, _grid, _columns in dashboards.PANELS
        for hours in (6, 72)
    }


_KEEP_OPEN: list[Any] = []
"""The child's clients, never closed: closing chDB with a Replicated table (its Keeper session) hangs."""


def _child(mode: str, workdir: Path) -> dict[str, Any]:
    import clickhouse_connect

    from tallyhub.storage.apps import create_app
    from tallyhub.storage.backend import ClientRunner
    from tallyhub.storage.writer import REQUEST_COLUMNS, TABLE_COLUMNS, insert_batch

    (workdir / "config.xml").write_text(_CONFIG)
    options = {"config-file": str(workdir / "config.xml")}
    path = str(workdir / "clickhouse")
    boot = clickhouse_connect.get_client(interface="chdb", path=path, chdb_options=options)
    for db in ("plain", "analytics"):
        boot.command(f"CREATE DATABASE {db}")
    plain = clickhouse_connect.get_client(interface="chdb", path=path, database="plain", chdb_options=options)
    sharded = clickhouse_connect.get_client(
        interface="chdb", path=path, database="analytics", chdb_options=options, settings={"insert_distributed_sync": 1}
    )
    _KEEP_OPEN.extend((boot, plain, sharded))

    def engines() -> dict[str, str]:
        return dict(sharded.query("SELECT name, engine FROM system.tables WHERE database = 'analytics'").result_rows)

    if mode == "replicated":
        for statement in shipped():
            for sql in render_for_cluster(statement, "single", "analytics", on_cluster=False):
                # a Replicated table stays read-only in chDB: no INSERT, and an ALTER waits for it forever
                if not sql.startswith(("INSERT", "ALTER")):
                    sharded.command(sql)
        replicas = sharded.query("SELECT table, zookeeper_path, replica_name FROM system.replicas").result_rows
        return {
            "engines": engines(),
            "replicas": {t: [p, r] for t, p, r in replicas},
            "requests_local_ddl": sharded.command("SHOW CREATE TABLE requests_local"),
        }

    out: dict[str, Any] = {"applied": migrate(sharded, "single", replicated=False, on_cluster=False)}
    out["again"] = migrate(sharded, "single", replicated=False, on_cluster=False)
    out["engines"] = engines()
    migrate(plain)
    out["replayed"] = {}
    for name, client in (("plain", plain), ("sharded", sharded)):
        for table in (*TABLE_COLUMNS, "health_checks"):
            client.command(_random_rows(client, table))
        create_app(ClientRunner(client), "shop", "hash-of-the-key")
        client.command("INSERT INTO expected_client_errors (app, method, route) VALUES ('shop', 'GET', '/b')")
        values = dict.fromkeys(REQUEST_COLUMNS, "") | {
            "minute": NOW, "app": "replay", "method": "GET", "route": "/r", "status": 200, "requests": 5,
            "duration_sum": 1.0, "duration_min": 0.1, "duration_max": 0.3, "duration_buckets": {-50: 5},
            "request_size_sum": 0.0, "request_size_buckets": {}, "response_size_sum": 0.0, "response_size_buckets": {},
        }  # fmt: skip
        batch = {"requests": [[values[c] for c in REQUEST_COLUMNS]]}
        insert_batch(client, batch, "queue:7-7")
        insert_batch(client, batch, "queue:7-7")  # replayed after a crash: same token
        out["replayed"][name] = [
            client.command(f"SELECT sum(requests) FROM {t} WHERE app = 'replay'")
            for t in ("requests", "requests_hourly", "requests_daily")
        ]
    out["differences"], out["rows"] = {}, {}
    queries = {t: t for t in (*TTL_EXPRESSIONS, "apps", "expected_client_errors")} | VIEWS | grafana_panels()
    for name, source in queries.items():
        results = []
        for client, db in ((plain, "plain"), (sharded, "analytics")):
            if name.startswith("grafana:"):
                sql = f"SELECT * FROM ({source}) ORDER BY ALL"
            elif name in VIEWS:
                sql = f"SELECT * FROM {source} ORDER BY ALL"
            else:
                local = name if db == "plain" else f"{name}_local"
                engine = client.command(
                    f"SELECT engine FROM system.tables WHERE database = '{db}' AND name = '{local}'"
                )
                columns = {"apps": "name, key_hash", "expected_client_errors": "app, method, route"}.get(name, "*")
                final = "" if engine == "MergeTree" else " FINAL"
                sql = f"SELECT {columns} FROM {name}{final} ORDER BY ALL"
            results.append(client.raw_query(sql, fmt="TSV").decode())
        if results[0] != results[1]:
            out["differences"][name] = results
        out["rows"][name] = results[1].count("\n")
    out["retention"] = apply_retention_on_cluster(sharded, 3, "single", on_cluster=False)
    out["retention_again"] = apply_retention_on_cluster(sharded, 3, "single", on_cluster=False)
    out["requests_local_ddl"] = sharded.command("SHOW CREATE TABLE requests_local")
    return out


if __name__ == "__main__":
    result = _child(sys.argv[1], Path(sys.argv[2]))
    print(json.dumps(result, default=str), flush=True)
    os._exit(0)  # without closing chDB (see _KEEP_OPEN)
