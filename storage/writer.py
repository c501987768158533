"""Idempotent batch inserts: one block per table per queued batch, each with a deduplication token."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from tallyhub.storage.rowbinary import Encoded

REQUEST_COLUMNS = (
    "minute",
    "app",
    "env",
    "service",
    "instance",
    "consumer",
    "method",
    "route",
    "status",
    "requests",
    "duration_sum",
    "duration_min",
    "duration_max",
    "duration_buckets",
    "request_size_sum",
    "request_size_buckets",
    "response_size_sum",
    "response_size_buckets",
)
ENDPOINT_COLUMNS = ("app", "env", "method", "route", "first_seen", "last_seen", "latest")
INSTANCE_COLUMNS = ("app", "env", "service", "instance", "host", "pid", "versions", "started_at", "received_at")
OPENAPI_COLUMNS = ("app", "env", "service", "instance", "started_at", "received_at", "document")
CONSUMER_COLUMNS = ("app", "env", "identifier", "first_seen", "last_seen", "latest")
_ERROR_KEY_COLUMNS = ("minute", "app", "env", "service", "instance", "consumer", "method", "route")
VALIDATION_ERROR_COLUMNS = (*_ERROR_KEY_COLUMNS, "location", "message", "type", "count")
SERVER_ERROR_COLUMNS = (*_ERROR_KEY_COLUMNS, "exception_type", "message", "fingerprint", "stacktrace", "count")
REQUEST_LOG_COLUMNS = (
    "time",
    "app",
    "env",
    "service",
    "instance",
    "request_id",
    "trace_id",
    "method",
    "scheme",
    "host",
    "url_path",
    "url_query",
    "route",
    "status",
    "duration_ms",
    "request_size",
    "response_size",
    "consumer",
    "client_ip",
    "user_agent",
    "request_headers",
    "response_headers",
    "request_body",
    "request_body_truncated",
    "response_body",
    "response_body_truncated",
    "exception_type",
    "exception_message",
    "stacktrace",
    "log_lines",
    "received_at",
)

METRIC_COLUMNS = (
    "time",
    "start_time",
    "app",
    "env",
    "service",
    "instance",
    "name",
    "unit",
    "kind",
    "monotonic",
    "attributes",
    "value",
    "count",
    "sum",
    "min",
    "max",
    "bounds",
    "bucket_counts",
    "scale",
    "zero_count",
    "positive_offset",
    "positive_counts",
    "negative_offset",
    "negative_counts",
)

TABLE_COLUMNS = {
    "requests": REQUEST_COLUMNS,
    "endpoints": ENDPOINT_COLUMNS,
    "instances": INSTANCE_COLUMNS,
    "openapi": OPENAPI_COLUMNS,
    "consumers": CONSUMER_COLUMNS,
    "validation_errors": VALIDATION_ERROR_COLUMNS,
    "server_errors": SERVER_ERROR_COLUMNS,
    "metrics": METRIC_COLUMNS,
    "request_log": REQUEST_LOG_COLUMNS,
}


def insert_rows(client: Client, table: str, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
    """Insert rows (in ``TABLE_COLUMNS[table]`` order, or already ``Encoded``) as one block.

    ClickHouse drops a block whose ``insert_deduplication_token`` it has seen within the
    table's deduplication window, so inserting the same queued batch again stores it once.
    """
    settings = {
        "insert_deduplication_token": dedup_token,
        # The rollups' materialized views get the same token: a repeated block is dropped there too.
        "deduplicate_blocks_in_dependent_materialized_views": 1,
        # The views' GROUP BY has already merged each block's rows: merging them again while the
        # rollups' parts are written cost ~20 % of the insert (benchmarks/README.md, "Hub ingest").
        "optimize_on_insert": 0,
    }
    if isinstance(rows, Encoded):
        if rows.rows:
            client.raw_insert(table, TABLE_COLUMNS[table], insert_block=rows.block, settings=settings, fmt="RowBinary")
    elif rows:
        client.insert(table, rows, column_names=TABLE_COLUMNS[table], settings=settings)


def insert_batch(client: Client, tables: Mapping[str, Sequence[Sequence[Any]]], dedup_token: str) -> None:
    """The rows of one queued batch, one block per table, in a fixed order.

    `requests` gets the batch's token as it is (as before there were other tables, so that a
    batch in flight across an upgrade is still deduplicated); the other tables get the token
    plus ``:table``. If an insert fails, the caller retries the whole batch: the tables that
    have their block already drop the repeat.
    """
    unknown = set(tables) - set(TABLE_COLUMNS)
    if unknown:
        raise ValueError(f"no such tables: {', '.join(sorted(unknown))}")
    for table in TABLE_COLUMNS:
        rows = tables.get(table)
        if rows:
            insert_rows(client, table, rows, dedup_token if table == "requests" else f"{dedup_token}:{table}")
