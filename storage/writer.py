"""Idempotent batch inserts of request rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

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


def insert_requests(client: Client, rows: Sequence[Sequence[Any]], dedup_token: str) -> None:
    """Insert rows (in ``REQUEST_COLUMNS`` order) as one block.

    ClickHouse drops a block whose ``insert_deduplication_token`` it has seen within the
    table's deduplication window, so inserting the same queued batch again stores it once.
    """
    if rows:
        client.insert(
            "requests",
            rows,
            column_names=REQUEST_COLUMNS,
            settings={"insert_deduplication_token": dedup_token},
        )
