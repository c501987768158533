"""How long data is kept: one retention, in months, for every table (12 by default, as the
migrations create them). Changing it alters the TTL of the existing tables; ClickHouse applies a
shorter one at its next merges (``OPTIMIZE … FINAL`` forces it)."""

from __future__ import annotations

import logging

from clickhouse_connect.driver.client import Client

logger = logging.getLogger("tallyhub.storage")

DEFAULT_MONTHS = 12

TTL_EXPRESSIONS = {
    "requests": "minute",
    "requests_hourly": "hour",
    "requests_daily": "day",
    "requests_hourly_by_endpoint": "hour",
    "requests_daily_by_endpoint": "day",
    "validation_errors": "minute",
    "server_errors": "minute",
    "metrics": "toDateTime(time)",
    "consumers": "last_seen",
    "endpoints": "toDateTime(last_seen)",
    "instances": "toDateTime(started_at)",
    "openapi": "toDateTime(started_at)",
}
"""Each table's TTL column: the raw tables, the rollups (each with its own TTL: a materialized
view also receives rows already expired in its source) and the catalogues."""


def apply_retention(client: Client, months: int) -> list[str]:
    """Set every table's TTL to ``months``; returns the tables whose TTL changed."""
    if months < 1:
        raise ValueError(f"the retention is at least 1 month, got {months}")
    changed = []
    for table, column in TTL_EXPRESSIONS.items():
        ttl = f"{column} + toIntervalMonth({months})"
        current = client.command(
            "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
            parameters={"t": table},
        )
        if f"TTL {ttl}" in str(current):
            continue
        client.command(f"ALTER TABLE {table} MODIFY TTL {column} + INTERVAL {months} MONTH")
        changed.append(table)
    if changed:
        logger.info("retention set to %d months on %s", months, ", ".join(changed))
    return changed
