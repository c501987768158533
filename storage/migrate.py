"""Versioned schema migrations: `migrations/NNNN_name.sql`, applied in order, recorded in a table."""

from __future__ import annotations

import logging
import re
from importlib import resources

from clickhouse_connect.driver.client import Client

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


def migrate(client: Client) -> list[str]:
    """Apply the migrations that the database lacks; returns the names applied."""
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
    applied = []
    for version, name, sql in available():
        if version in done:
            continue
        for statement in statements(sql):
            client.command(statement)
        client.insert("schema_migrations", [[version, name]], column_names=["version", "name"])
        logger.info("applied migration %s", name)
        applied.append(name)
    return applied
