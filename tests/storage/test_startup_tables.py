"""The tables of the start-up event (migration 0002) and the batch writer."""

from __future__ import annotations

import datetime as dt

import pytest

from tallyhub.storage.writer import TABLE_COLUMNS, insert_batch


@pytest.mark.parametrize("table", ["endpoints", "instances", "openapi"])
def test_startup_tables_keep_12_months_and_deduplicate_inserts(ch, table: str) -> None:
    ddl = ch.command(f"SHOW CREATE TABLE {table}")
    assert "+ toIntervalMonth(12)" in ddl
    assert "non_replicated_deduplication_window = 10000" in ddl


def test_the_writers_columns_are_the_tables_columns(ch) -> None:
    for table, columns in TABLE_COLUMNS.items():
        stored = ch.query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
            "AND default_kind != 'ALIAS' ORDER BY position",
            parameters={"t": table},
        ).result_rows
        assert sorted(columns) == sorted(name for (name,) in stored), table


def test_a_batch_with_an_unknown_table_inserts_nothing(ch) -> None:
    row = ["my-api", "prod", "shop", "i-1", "web-1", 1, {}, dt.datetime.now(dt.UTC), dt.datetime.now(dt.UTC)]
    with pytest.raises(ValueError, match="no such tables: nope"):
        insert_batch(ch, {"instances": [row], "nope": [[1]]}, "tok")
    assert ch.query("SELECT count() FROM instances").result_rows == [(0,)]
    insert_batch(ch, {"instances": [row]}, "tok")
    assert ch.query("SELECT count() FROM instances").result_rows == [(1,)]
