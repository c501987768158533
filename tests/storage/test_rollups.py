"""Rollups (per hour and day, and the same by endpoint without the consumer): kept by materialized
views, backfilled on upgrade, stored once when a batch is replayed, each table with its own TTL;
retention changes every table."""

from __future__ import annotations

import datetime as dt

import pytest

from tallyhub.storage import migrate as migrations
from tallyhub.storage.backend import open_client
from tallyhub.storage.migrate import available, migrate
from tallyhub.storage.retention import TTL_EXPRESSIONS, apply_retention
from tallyhub.storage.writer import REQUEST_COLUMNS, insert_batch, insert_rows

NOW = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0, tzinfo=None)
ROLLUPS = {
    "requests_hourly": "hour",
    "requests_daily": "day",
    "requests_hourly_by_endpoint": "hour",
    "requests_daily_by_endpoint": "day",
}


def row(minute: dt.datetime, route: str, requests: int, instance: str = "i-1", consumer: str = "") -> list:
    values = {
        "minute": minute, "app": "shop", "env": "prod", "service": "api", "instance": instance, "consumer": consumer,
        "method": "GET", "route": route, "status": 200, "requests": requests, "duration_sum": 0.1 * requests,
        "duration_min": 0.05, "duration_max": 0.2, "duration_buckets": {-100: requests}, "request_size_sum": 0.0,
        "request_size_buckets": {}, "response_size_sum": 10.0 * requests, "response_size_buckets": {106: requests},
    }  # fmt: skip
    return [values[c] for c in REQUEST_COLUMNS]


def rollup(ch, table: str, column: str) -> list[tuple]:
    return ch.query(
        f"SELECT {column}, route, sum(requests), sumMap(duration_buckets), min(duration_min) FROM {table} "
        f"GROUP BY {column}, route ORDER BY {column}, route"
    ).result_rows


def test_an_upgrade_keeps_the_data_and_backfills_the_rollups(chdb_url: str, database: str, monkeypatch) -> None:
    client = open_client(chdb_url, database, create=True)
    try:
        previous = [m for m in available() if m[0] <= 5]  # the schema before the rollups
        monkeypatch.setattr(migrations, "available", lambda: previous)
        migrate(client)
        hour = NOW.replace(minute=0) - dt.timedelta(hours=1)
        insert_rows(client, "requests", [row(hour, "/a", 3), row(hour + dt.timedelta(minutes=5), "/a", 4, "i-2")], "t1")
        monkeypatch.undo()
        applied = migrate(client)
        assert applied[:3] == ["0006_rollups.sql", "0007_functions.sql", "0008_views.sql"]
        assert applied == [name for version, name, _ in available() if version > 5]
        assert client.query("SELECT sum(requests) FROM requests").result_rows == [(7,)]  # nothing lost
        for table, column in ROLLUPS.items():
            start = hour if column == "hour" else hour.replace(hour=0)
            assert rollup(client, table, column) == [(start, "/a", 7, {-100: 7}, 0.05)], table
        # from now on the views keep them
        insert_rows(client, "requests", [row(hour + dt.timedelta(minutes=9), "/a", 1)], "t2")
        assert rollup(client, "requests_hourly", "hour") == [(hour, "/a", 8, {-100: 8}, 0.05)]
        assert rollup(client, "requests_hourly_by_endpoint", "hour") == [(hour, "/a", 8, {-100: 8}, 0.05)]
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{database}`")
        client.close()


def test_the_rollups_by_endpoint_are_backfilled_from_the_rollups(chdb_url: str, database: str, monkeypatch) -> None:
    """An upgrade from the schema before them: days the minute table no longer holds (only the
    daily rollup) are there too, every consumer's rows summed per endpoint."""
    client = open_client(chdb_url, database, create=True)
    try:
        monkeypatch.setattr(migrations, "available", lambda: [m for m in available() if m[0] <= 12])
        migrate(client)
        hour = NOW.replace(minute=0) - dt.timedelta(hours=1)
        insert_rows(client, "requests", [row(hour, "/a", 3, consumer="c1"), row(hour, "/a", 4, consumer="c2")], "t")
        insert_rows(client, "requests", [row(hour, "/b", 2, consumer="c1")], "t2")
        long_ago = hour.replace(hour=0) - dt.timedelta(days=100)
        client.command(  # a day the daily rollup holds and the minute table no longer does
            f"INSERT INTO requests_daily SELECT toDateTime('{long_ago}', 'UTC') AS day, * EXCEPT day "
            "FROM requests_daily WHERE route = '/a'"
        )
        monkeypatch.undo()
        assert migrate(client)[0] == "0013_endpoint_rollups.sql"
        assert rollup(client, "requests_hourly_by_endpoint", "hour") == [
            (hour, "/a", 7, {-100: 7}, 0.05),
            (hour, "/b", 2, {-100: 2}, 0.05),
        ]
        assert rollup(client, "requests_daily_by_endpoint", "day") == [
            (long_ago, "/a", 7, {-100: 7}, 0.05),
            (hour.replace(hour=0), "/a", 7, {-100: 7}, 0.05),
            (hour.replace(hour=0), "/b", 2, {-100: 2}, 0.05),
        ]
        assert client.command("SELECT count() FROM requests_daily_by_endpoint FINAL") == 3  # one row per endpoint
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{database}`")
        client.close()


def test_a_replayed_batch_reaches_the_rollups_once(ch) -> None:
    tables = {"requests": [row(NOW, "/a", 5)]}
    insert_batch(ch, tables, "queue:1-1")
    insert_batch(ch, tables, "queue:1-1")  # the hub died before acknowledging: same batch, same token
    assert ch.query("SELECT sum(requests) FROM requests").result_rows == [(5,)]
    for table, column in ROLLUPS.items():
        assert [r[2] for r in rollup(ch, table, column)] == [5], table


def test_expired_rows_leave_the_rollups_too(ch) -> None:
    old = NOW - dt.timedelta(days=400)
    insert_rows(ch, "requests", [row(old, "/old", 2), row(NOW, "/new", 3)], "t")
    for table in ("requests", *ROLLUPS):
        ch.command(f"OPTIMIZE TABLE {table} FINAL")
    for table, column in ROLLUPS.items():
        assert [r[1] for r in rollup(ch, table, column)] == ["/new"], table


@pytest.mark.parametrize("months", [3, 24])
def test_retention_changes_every_table(ch, months: int) -> None:
    assert set(apply_retention(ch, months)) == set(TTL_EXPRESSIONS)
    assert apply_retention(ch, months) == []  # already so
    for table in TTL_EXPRESSIONS:
        assert f"toIntervalMonth({months})" in ch.command(f"SHOW CREATE TABLE {table}")
    four_months = NOW - dt.timedelta(days=120)
    insert_rows(ch, "requests", [row(four_months, "/a", 1)], "t")
    ch.command("OPTIMIZE TABLE requests_hourly FINAL")
    assert len(rollup(ch, "requests_hourly", "hour")) == (0 if months == 3 else 1)
