"""Migrations and the apps table on embedded ClickHouse."""

from __future__ import annotations

import pytest

from tallyhub.collector_processor.receive.auth import hash_key
from tallyhub.storage.apps import AppError, create_app, key_hashes, list_apps
from tallyhub.storage.backend import ClientRunner
from tallyhub.storage.migrate import available, migrate, statements


def test_migrations_are_recorded_and_applied_once(ch) -> None:
    versions = [v for v, _, _ in available()]
    assert versions == sorted(versions) and versions[0] == 1
    assert [r[0] for r in ch.query("SELECT version FROM schema_migrations ORDER BY version").result_rows] == versions
    assert migrate(ch) == []  # already applied: nothing to do, nothing duplicated
    assert ch.query("SELECT count() FROM schema_migrations").result_rows == [(len(versions),)]


def test_requests_table_is_monthly_with_a_12_month_ttl(ch) -> None:
    ddl = ch.command("SHOW CREATE TABLE requests")
    assert "PARTITION BY toYYYYMM(minute)" in ddl
    assert "TTL minute + toIntervalMonth(12)" in ddl


def test_statements_split_on_semicolons_and_drop_comments() -> None:
    sql = "-- a comment; with a semicolon\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\nSELECT ';';\n"
    assert statements(sql) == ["CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT ';'"]


def test_apps_are_unique_and_keys_only_hashed(ch) -> None:
    runner = ClientRunner(ch)
    create_app(runner, "my-api", hash_key("thk_secret"))
    with pytest.raises(AppError, match="exists"):
        create_app(runner, "my-api", hash_key("thk_other"))
    with pytest.raises(AppError, match="invalid app name"):
        create_app(runner, "bad name; DROP", hash_key("thk_x"))
    assert [a["name"] for a in list_apps(runner)] == ["my-api"]
    assert key_hashes(runner) == {hash_key("thk_secret"): "my-api"}
    assert "thk_secret" not in ch.command("SELECT groupArray(key_hash) FROM apps")
