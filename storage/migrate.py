"""Versioned schema migrations: `migrations/NNNN_name.sql`, applied in order, recorded in a table.

On a cluster (``cluster=``), every statement goes through ``cluster.render_for_cluster`` first:
the same migrations create Replicated ``_local`` tables, Distributed tables over them, and the
rest ON CLUSTER (`storage/cluster.py`).
"""

from __future__ import annotations

import logging
import re
from importlib import resources

from clickhouse_connect.driver.client import Client

from tallyhub.storage.cluster import SYNC_INSERT_SETTING, cluster_renderer, merge_tree_table

logger = logging.getLogger("tallyhub.storage")

_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with tallyhub, oldest first."""
    found = []
    for entry in resources.files("tallyhub.storage.migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def statements(sql: str) -> list[str]:
    """The statements of a migration file (separated by `;` at a line end; `--` comments dropped)."""
    text = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [part.strip() for part in re.split(r";\s*$", text, flags=re.MULTILINE) if part.strip()]


SCHEMA_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
    "ENGINE = MergeTree ORDER BY version"
)


def migrate(
    client: Client, cluster: str | None = None, *, replicated: bool = True, on_cluster: bool = True
) -> list[str]:
    """Apply the migrations that the database lacks; returns the names applied.

    ``cluster``: render them for that ClickHouse cluster (``replicated`` and ``on_cluster``:
    see ``render_for_cluster``). A database is created for one mode and stays in it.
    """
    if cluster:
        render = cluster_renderer(client, cluster, replicated=replicated, on_cluster=on_cluster)
        insert_settings = {SYNC_INSERT_SETTING: 1}
    else:
        render, insert_settings = (lambda statement: [statement]), None
    for statement in render(SCHEMA_MIGRATIONS):
        client.command(statement)
    _check_mode(client, cluster)
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for version, name, sql in available():
        if version in done:
            continue
        for statement in statements(sql):
            for rendered in render(statement):
                client.command(rendered)
        client.insert(
            "schema_migrations", [[version, name]], column_names=["version", "name"], settings=insert_settings
        )
        logger.info("applied migration %s", name)
        applied.append(name)
    return applied


def _check_mode(client: Client, cluster: str | None) -> None:
    """Refuse to migrate a single-node database as a cluster one, or the other way round: the
    tables of the one are not those of the other."""
    engine = str(
        client.command(
            "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'schema_migrations'"
        )
    )
    if cluster and engine != "Distributed":
        raise RuntimeError(
            f"this database was created without a cluster (schema_migrations is {engine}): "
            "cluster mode needs a database of its own"
        )
    if not cluster and engine == "Distributed":
        raise RuntimeError("this database was created in cluster mode: pass its cluster (--cluster / TALLYHUB_CLUSTER)")


def shipped_sharded_tables() -> set[str]:
    """The MergeTree-family tables that tallyhub's migrations create, and ``schema_migrations``:
    those a cluster shards (``cluster.SHARDING_KEYS`` must name each)."""
    tables = {"schema_migrations"}
    for _, _, sql in available():
        tables.update(filter(None, map(merge_tree_table, statements(sql))))
    return tables
