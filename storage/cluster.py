"""Cluster mode: the single-node migrations rendered for a ClickHouse cluster.

Every MergeTree-family table ``x`` becomes ``x_local`` (the Replicated variant of its engine, one
replica set per shard) plus ``x`` (a Distributed table over ``x_local`` on every node), so that
the hub, the views and users read and write the same names as on one node. Materialized views
run where the rows land: they read ``requests_local`` and write ``requests_hourly_local``. Views,
functions and the database are created ``ON CLUSTER``; ``ALTER`` and ``OPTIMIZE`` go to the
``_local`` tables ``ON CLUSTER`` (an ``ALTER`` of columns to the Distributed table too, which has
columns of its own); ``INSERT … SELECT`` backfills go through the Distributed tables,
synchronously. Subqueries and joins in views and backfills become ``GLOBAL`` (a Distributed table
inside a query on a Distributed table is otherwise refused: ``distributed_product_mode``).

The sharding key of a table keeps together the rows that ClickHouse must see on one shard: a
function of its ORDER BY columns (``FINAL`` and the Replacing/Aggregating merges only combine
rows of one shard), never ``rand()`` (a batch inserted again with its deduplication token must
split over the shards as it did the first time, or the shards drop the wrong rows), and the same
for ``requests`` and its rollups, so that a rollup row's inputs all land on one shard.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from tallyhub.storage.retention import TTL_EXPRESSIONS, has_ttl, request_log_ttl

logger = logging.getLogger("tallyhub.storage")

LOCAL_SUFFIX = "_local"
REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/"
"""ZooKeeper/Keeper path of a replicated table, the table's name appended; ``{shard}`` and
``{replica}`` are macros every server of the cluster defines, ``{database}`` ClickHouse's own."""

SYNC_INSERT_SETTING = "insert_distributed_sync"
"""Inserts into a Distributed table reach the shards before the insert returns, with their
``insert_deduplication_token`` (alias of ``distributed_foreground_insert`` since ClickHouse 23.x)."""

DEDUPLICATION_SECONDS = 7 * 24 * 3600
"""How long a Replicated table remembers an insert (its token) to drop it when it comes again."""

SHARDING_KEYS = {
    # one app's traffic spreads over the shards by route; a route's minutes and rollups stay together
    "requests": "cityHash64(app, route)",
    "requests_hourly": "cityHash64(app, route)",
    "requests_daily": "cityHash64(app, route)",
    "requests_hourly_by_endpoint": "cityHash64(app, route)",
    "requests_daily_by_endpoint": "cityHash64(app, route)",
    "validation_errors": "cityHash64(app, route)",
    "server_errors": "cityHash64(app, route)",
    "endpoints": "cityHash64(app, route)",
    "expected_client_errors": "cityHash64(app, route)",
    "consumers": "cityHash64(app, identifier)",
    "instances": "cityHash64(app, instance)",
    "openapi": "cityHash64(app, env)",
    "metrics": "cityHash64(app, name)",
    "request_log": "cityHash64(app, request_id)",
    "health_checks": "cityHash64(app, url)",
    "alert_rules": "cityHash64(name)",
    "alert_states": "cityHash64(rule)",
    "alert_history": "cityHash64(rule)",
    "alert_deliveries": "cityHash64(rule)",
    "apps": "cityHash64(name)",
    "app_settings": "cityHash64(app)",
    "endpoint_settings": "cityHash64(app, route)",
    "dashboard_users": "cityHash64(name)",
    "schema_migrations": "cityHash64(version)",
}
"""The sharding key per table; a table missing here is sharded by cityHash64 of its ORDER BY."""

_IDENT = r"(?:`[^`]+`|[A-Za-z_][A-Za-z0-9_]*)"
_NAME = rf"{_IDENT}(?:\.{_IDENT})?"
_CREATE = re.compile(
    rf"^CREATE\s+(?P<replace>OR\s+REPLACE\s+)?(?P<kind>TABLE|MATERIALIZED\s+VIEW|VIEW|FUNCTION|DATABASE)\s+"
    rf"(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<name>{_NAME})\s*",
    re.IGNORECASE,
)
_INSERT = re.compile(rf"^INSERT\s+INTO\s+(?:TABLE\s+)?(?P<name>{_NAME})\s*(?P<columns>\([^()]*\))?\s*", re.IGNORECASE)
_ALTER = re.compile(rf"^(?P<verb>ALTER\s+TABLE|OPTIMIZE\s+TABLE)\s+(?P<name>{_NAME})\s*", re.IGNORECASE)
_COLUMN_CHANGE = re.compile(r"^(?:ADD|DROP|MODIFY|RENAME|COMMENT)\s+COLUMN\b", re.IGNORECASE)
"""ALTERs that change a sharded table's columns: on its ``_local`` table, then on its Distributed one."""
_DROP = re.compile(
    rf"^DROP\s+(?P<kind>TABLE|VIEW|FUNCTION|DICTIONARY)\s+(?P<ie>IF\s+EXISTS\s+)?(?P<name>{_NAME})\s*",
    re.IGNORECASE,
)
_ENGINE = re.compile(r"^ENGINE\s*=\s*(?P<engine>[A-Za-z]+)\s*", re.IGNORECASE)
_MERGE_TREE = re.compile(
    r"^(?:Replacing|Aggregating|Summing|Collapsing|VersionedCollapsing|Graphite|Coalescing)?MergeTree$"
)
_LITERALS = re.compile(r"('(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`)")
_IN_SUBQUERY = re.compile(r"\b(GLOBAL\s+)?(NOT\s+)?IN(\s*)\((\s*)SELECT\b", re.IGNORECASE)
_JOIN = re.compile(
    r"\b(GLOBAL\s+|ARRAY\s+)?"  # ARRAY JOIN is no join of tables
    r"((?:(?:LEFT|RIGHT|FULL|INNER|CROSS|PASTE)\s+)?(?:(?:OUTER|ANY|ALL|SEMI|ANTI|ASOF)\s+)?)JOIN\b",
    re.IGNORECASE,
)
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_.{}-]{1,128}$")
_DATABASE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class ClusterRenderError(ValueError):
    """A statement that cluster mode does not know how to render."""


def render_for_cluster(
    statement: str,
    cluster: str,
    database: str,
    sharded: Collection[str] | None = None,
    *,
    replicated: bool = True,
    on_cluster: bool = True,
) -> list[str]:
    """The statements that do on ``cluster`` what ``statement`` does on one node.

    ``sharded``: the tables that have a ``_local`` twin, whose names materialized views, ALTER,
    OPTIMIZE and DROP change (default: those of ``SHARDING_KEYS``, every MergeTree-family table of
    tallyhub's migrations and ``schema_migrations``, as ``migrate.shipped_sharded_tables`` finds;
    ``cluster_renderer`` keeps the set up to date across statements).
    ``replicated=False`` keeps the plain engines and ``on_cluster=False`` leaves out ``ON CLUSTER``:
    the same layout on one node without Keeper, for tests.
    """
    if not _CLUSTER_NAME.match(cluster):
        raise ValueError(f"invalid cluster name {cluster!r}")
    if not _DATABASE_NAME.match(database):
        raise ValueError(f"invalid database name {database!r}")
    sharded = set(SHARDING_KEYS if sharded is None else sharded)
    r = _Renderer(cluster, database, sharded, replicated, on_cluster)
    sql = statement.strip().rstrip(";").strip()
    if re.search(r"\bON\s+CLUSTER\b", _code_only(sql), re.IGNORECASE):
        raise ClusterRenderError(f"already ON CLUSTER (migrations are written for one node): {_head(sql)}")
    if m := _CREATE.match(sql):
        kind = re.sub(r"\s+", " ", m["kind"].upper())
        rest = sql[m.end() :]
        if kind == "TABLE":
            return r.table(m, rest)
        if kind == "MATERIALIZED VIEW":
            return [r.materialized_view(m, rest)]
        if kind == "VIEW":
            return [f"{sql[: m.end('name')]}{r.on} {_globalize(rest)}".rstrip()]
        # FUNCTION (SQL functions are per server), DATABASE
        return [f"{sql[: m.end('name')]}{r.on} {rest}".rstrip()]
    if m := _INSERT.match(sql):
        return [r.insert(m, sql[m.end() :])]
    if m := _ALTER.match(sql):
        rest = sql[m.end() :]
        alters = [f"{m['verb']} {r.local(m['name'])}{r.on} {rest}".rstrip()]
        if _COLUMN_CHANGE.match(rest) and r.local(m["name"]) != m["name"]:
            alters.append(f"{m['verb']} {m['name']}{r.on} {rest}".rstrip())  # the Distributed table's columns
        return alters
    if m := _DROP.match(sql):
        rest = sql[m.end() :]
        drops = [f"DROP {m['kind'].upper()} {m['ie'] or ''}{m['name']}{r.on} {rest}".rstrip()]
        if m["kind"].upper() == "TABLE" and _table_name(m["name"]) in sharded:
            drops.append(f"DROP TABLE {m['ie'] or ''}{_suffixed(m['name'])}{r.on} {rest}".rstrip())
        return drops
    raise ClusterRenderError(f"no cluster rendering for: {_head(sql)}")


def merge_tree_table(statement: str) -> str | None:
    """The name of the MergeTree-family table that ``statement`` creates, or None."""
    parsed = _parse_table(statement.strip())
    if parsed is None or not _MERGE_TREE.match(parsed.engine):
        return None
    return _table_name(parsed.name)


def cluster_renderer(
    client: Client, cluster: str, *, replicated: bool = True, on_cluster: bool = True
) -> Callable[[str], list[str]]:
    """render_for_cluster bound to ``client``'s database and tallyhub's sharded tables; each
    ``CREATE TABLE`` it renders adds to those tables."""
    database = client.database or str(client.command("SELECT currentDatabase()"))
    sharded = set(SHARDING_KEYS)

    def render(statement: str) -> list[str]:
        if table := merge_tree_table(statement):
            sharded.add(table)
        return render_for_cluster(statement, cluster, database, sharded, replicated=replicated, on_cluster=on_cluster)

    return render


def apply_retention_on_cluster(client: Client, months: int, cluster: str, *, on_cluster: bool = True) -> list[str]:
    """retention.apply_retention for cluster mode: the TTL is on the ``_local`` tables, changed
    ``ON CLUSTER``; returns the tables whose TTL changed (on the node ``client`` is on)."""
    if months < 1:
        raise ValueError(f"the retention is at least 1 month, got {months}")
    render = cluster_renderer(client, cluster, on_cluster=on_cluster)
    changed = []
    for table, column in TTL_EXPRESSIONS.items():
        if has_ttl(client, table + LOCAL_SUFFIX, f"{column} + toIntervalMonth({months})"):
            continue
        for sql in render(f"ALTER TABLE {table} MODIFY TTL {column} + INTERVAL {months} MONTH"):
            client.command(sql)
        changed.append(table)
    if changed:
        logger.info("retention set to %d months on %s (cluster %s)", months, ", ".join(changed), cluster)
    return changed


def apply_request_log_retention_on_cluster(client: Client, days: int, cluster: str) -> bool:
    """retention.apply_request_log_retention for cluster mode (the ``_local`` tables, ON CLUSTER)."""
    alter = request_log_ttl(days)
    if has_ttl(client, "request_log" + LOCAL_SUFFIX, f"toDateTime(time) + toIntervalDay({days})"):
        return False
    for sql in cluster_renderer(client, cluster)(alter):
        client.command(sql)
    logger.info("request log kept %d days (cluster %s)", days, cluster)
    return True


@dataclass
class _Table:
    name: str
    columns: str
    """``(…)``, as written"""
    engine: str
    args: str | None
    clauses: str
    """PARTITION BY, ORDER BY, TTL, SETTINGS…, as written"""


def _parse_table(sql: str) -> _Table | None:
    """``CREATE TABLE name (columns) ENGINE = Engine[(args)] clauses``, else None."""
    m = _CREATE.match(sql)
    if m is None or m["kind"].upper() != "TABLE":
        return None
    rest = sql[m.end() :]
    if not rest.startswith("("):
        return None  # CREATE TABLE … AS other, … AS SELECT
    end = _closing(rest, 0)
    columns, tail = rest[: end + 1], rest[end + 1 :].lstrip()
    e = _ENGINE.match(tail)
    if e is None:
        return None
    tail = tail[e.end() :]
    args = None
    if tail.startswith("("):
        close = _closing(tail, 0)
        args, tail = tail[1:close].strip(), tail[close + 1 :]
    return _Table(m["name"], columns, e["engine"], args or None, tail.strip())


class _Renderer:
    def __init__(self, cluster: str, database: str, sharded: set[str], replicated: bool, on_cluster: bool) -> None:
        self.cluster, self.database, self.sharded, self.replicated = cluster, database, sharded, replicated
        cluster_sql = cluster if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", cluster) else _literal(cluster)
        self.on = f" ON CLUSTER {cluster_sql}" if on_cluster else ""

    def local(self, name: str) -> str:
        return _suffixed(name) if _table_name(name) in self.sharded else name

    def table(self, m: re.Match[str], rest: str) -> list[str]:
        parsed = _parse_table(m.string)
        if parsed is None:
            raise ClusterRenderError(f"expected CREATE TABLE name (columns) ENGINE = …: {_head(m.string)}")
        if parsed.engine.startswith("Replicated"):
            raise ClusterRenderError(f"already replicated (migrations are written for one node): {_head(m.string)}")
        create = f"CREATE {m['replace'] or ''}TABLE {m['ine'] or ''}"
        if not _MERGE_TREE.match(parsed.engine):  # Memory, Log, …: one per server
            return [f"{create}{parsed.name}{self.on} {rest}"]
        self.sharded.add(_table_name(parsed.name))
        local = _suffixed(parsed.name)
        engine, args, clauses = parsed.engine, parsed.args, parsed.clauses
        if self.replicated:
            path = _literal(REPLICA_PATH + _table_name(local))
            args = ", ".join(a for a in (path, "'{replica}'", args) if a)
            engine = "Replicated" + engine
            # Replicated tables deduplicate inserts (the tokens too) over their own window, in blocks
            # and in time (one hour by default since ClickHouse 23.x: longer here, as on one node).
            clauses = re.sub(
                r"\bnon_replicated_deduplication_window(\s*=\s*\d+)",
                rf"replicated_deduplication_window\1, "
                rf"replicated_deduplication_window_seconds = {DEDUPLICATION_SECONDS}",
                clauses,
            )
        engine_sql = f"{engine}({args})" if args else engine
        key = SHARDING_KEYS.get(_table_name(parsed.name)) or _order_by_key(clauses)
        db = _unquoted(parsed.name.rpartition(".")[0]) or self.database
        distributed_args = ", ".join([_literal(self.cluster), _literal(db), _literal(_table_name(local)), key])
        return [
            f"{create}{local}{self.on}\n{parsed.columns}\nENGINE = {engine_sql}\n{clauses}".rstrip(),
            f"{create}{parsed.name}{self.on} AS {local}\nENGINE = Distributed({distributed_args})",
        ]

    def materialized_view(self, m: re.Match[str], rest: str) -> str:
        to = re.match(rf"^TO\s+(?P<target>{_NAME})\s*(?P<columns>\([^()]*\))?\s*AS\s+", rest, re.IGNORECASE)
        if to is None:
            raise ClusterRenderError(f"a materialized view needs TO a table in cluster mode: {_head(m.string)}")
        select = _outside_literals(
            rest[to.end() :],
            lambda code: re.sub(
                rf"\b(FROM|JOIN)(\s+)({_NAME})",
                lambda t: f"{t[1]}{t[2]}{self.local(t[3])}",
                code,
                flags=re.IGNORECASE,
            ),
        )
        columns = f" {to['columns']}" if to["columns"] else ""
        head = m.string[: m.end("name")]
        return f"{head}{self.on} TO {self.local(to['target'])}{columns} AS\n{select}"

    def insert(self, m: re.Match[str], rest: str) -> str:
        head = f"INSERT INTO {m['name']}{' ' + m['columns'] if m['columns'] else ''}"
        settings = re.match(r"^SETTINGS\s+", rest, re.IGNORECASE)
        if settings:
            rest = rest[settings.end() :]
        # A Distributed table inserts on the shards before returning (and a failure fails the migration).
        joiner = ", " if settings else "\n"
        return f"{head} SETTINGS {SYNC_INSERT_SETTING} = 1{joiner}{_globalize(rest)}"


def _globalize(sql: str) -> str:
    """``IN (SELECT …)`` and joins become GLOBAL: computed once, on the node that runs the query."""

    def code(part: str) -> str:
        part = _IN_SUBQUERY.sub(lambda t: t[0] if t[1] else f"GLOBAL {t[2] or ''}IN{t[3]}({t[4]}SELECT", part)
        return _JOIN.sub(lambda t: t[0] if t[1] else f"GLOBAL {t[2]}JOIN", part)

    return _outside_literals(sql, code)


def _order_by_key(clauses: str) -> str:
    m = re.search(
        r"\bORDER\s+BY\s+(?P<key>.+?)\s*(?=\bPRIMARY\s+KEY\b|\bSAMPLE\s+BY\b|\bTTL\b|\bSETTINGS\b|$)",
        clauses,
        re.IGNORECASE | re.DOTALL,
    )
    if m is None:
        raise ClusterRenderError(f"no ORDER BY to derive a sharding key from: {_head(clauses)}")
    key = m["key"].strip()
    if key.startswith("(") and _closing(key, 0) == len(key) - 1:
        key = key[1:-1].strip()
    if not key or key.lower() == "tuple()":
        raise ClusterRenderError("ORDER BY tuple(): add the table to SHARDING_KEYS")
    return f"cityHash64({key})"


def _closing(sql: str, start: int) -> int:
    """Index of the parenthesis that closes the one at ``start``, quotes skipped."""
    depth, i, quote = 0, start, ""
    while i < len(sql):
        c = sql[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"`":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ClusterRenderError(f"unbalanced parentheses: {_head(sql[start:])}")


def _outside_literals(sql: str, change: Callable[[str], str]) -> str:
    """``change`` applied to the SQL outside quoted strings and identifiers."""
    return "".join(part if i % 2 else change(part) for i, part in enumerate(_LITERALS.split(sql)))


def _code_only(sql: str) -> str:
    """``sql`` with its quoted strings and identifiers emptied."""
    return "".join(part if i % 2 == 0 else "''" for i, part in enumerate(_LITERALS.split(sql)))


def _table_name(name: str) -> str:
    """``db.`t``` → ``t``."""
    return _unquoted(name.rpartition(".")[2])


def _suffixed(name: str) -> str:
    db, dot, table = name.rpartition(".")
    table = f"`{table[1:-1]}{LOCAL_SUFFIX}`" if table.startswith("`") else table + LOCAL_SUFFIX
    return f"{db}{dot}{table}"


def _unquoted(name: str) -> str:
    return name[1:-1] if name.startswith("`") else name


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _head(sql: str) -> str:
    return " ".join(sql.split())[:80]
