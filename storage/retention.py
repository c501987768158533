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
    "health_checks": "toDateTime(time)",
}
"""Each table's TTL column: the raw tables, the rollups (each with its own TTL: a materialized
view also receives rows already expired in its source) and the catalogues."""


REQUEST_LOG_DAYS = 15
"""How long the request log is kept by default (its own retention: it is large, and read for recent
requests); ``tallyhub serve --request-log-days`` changes it."""


def request_log_ttl(days: int) -> str:
    """The ``ALTER`` that keeps the request log ``days`` days (raises ValueError below 1)."""
    if days < 1:
        raise ValueError(f"the request log is kept at least 1 day, got {days}")
    return f"ALTER TABLE request_log MODIFY TTL toDateTime(time) + INTERVAL {days} DAY"


def has_ttl(client: Client, table: str, ttl: str) -> bool:
    """Whether ``table``'s TTL is ``ttl`` as ClickHouse writes it (``time + toIntervalDay(15)``)."""
    current = client.command(
        "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": table},
    )
    return f"TTL {ttl}" in str(current)


def apply_request_log_retention(client: Client, days: int) -> bool:
    """Keep the request log ``days`` days; True if that changed its TTL."""
    alter = request_log_ttl(days)
    if has_ttl(client, "request_log", f"toDateTime(time) + toIntervalDay({days})"):
        return False
    client.command(alter)
    logger.info("request log kept %d days", days)
    return True


def apply_retention(client: Client, months: int) -> list[str]:
    """Set every table's TTL to ``months``; returns the tables whose TTL changed."""
    if months < 1:
        raise ValueError(f"the retention is at least 1 month, got {months}")
    changed = []
    for table, column in TTL_EXPRESSIONS.items():
        if has_ttl(client, table, f"{column} + toIntervalMonth({months})"):
            continue
        client.command(f"ALTER TABLE {table} MODIFY TTL {column} + INTERVAL {months} MONTH")
        changed.append(table)
    if changed:
        logger.info("retention set to %d months on %s", months, ", ".join(changed))
    return changed
