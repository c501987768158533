"""Opening ClickHouse: embedded chDB (`chdb:///path`) or a server (`http(s)://`, `clickhouse://`).

Both go through clickhouse-connect, so the SQL, the migrations and the inserts are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

DEFAULT_DATABASE = "tallyhub"


def is_embedded(url: str) -> bool:
    return urlsplit(url).scheme == "chdb"


def open_client(url: str, database: str = DEFAULT_DATABASE, create: bool = False) -> Client:
    """A client on ``database``; ``create`` makes the database first if it does not exist."""
    if not create:
        return clickhouse_connect.get_client(dsn=url, database=database)
    bootstrap = clickhouse_connect.get_client(dsn=url)
    try:
        bootstrap.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        # Opened before the bootstrap client closes: closing chDB's last handle stops the
        # embedded engine, and starting it again in the same process can fail on its own lock.
        return clickhouse_connect.get_client(dsn=url, database=database)
    finally:
        bootstrap.close()


class ClientRunner:
    """Runs SQL on a clickhouse-connect client and returns ClickHouse's own rendering of the result."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def raw(
        self, sql: str, parameters: Mapping[str, Any] | None = None, fmt: str = "TabSeparated", readonly: bool = False
    ) -> bytes:
        settings = {"readonly": 1} if readonly else None
        return self.client.raw_query(sql, parameters=dict(parameters or {}), fmt=fmt, settings=settings)
