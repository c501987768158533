"""The `apps` table: names and key hashes. Works on any `SqlRunner` (local client or the hub)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SqlRunner(Protocol):
    def raw(
        self, sql: str, parameters: Mapping[str, Any] | None = None, fmt: str = "TabSeparated", readonly: bool = False
    ) -> bytes: ...


class AppError(ValueError):
    pass


def create_app(runner: SqlRunner, name: str, key_hash: str) -> None:
    if not APP_NAME.match(name):
        raise AppError(f"invalid app name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
    exists = runner.raw("SELECT count() FROM apps FINAL WHERE name = {name:String}", {"name": name})
    if int(exists.strip() or 0):
        raise AppError(f"an app named {name!r} exists already")
    runner.raw(
        "INSERT INTO apps (name, key_hash, created_at) SELECT {name:String}, {key_hash:String}, now64(3)",
        {"name": name, "key_hash": key_hash},
    )


def list_apps(runner: SqlRunner) -> list[dict[str, Any]]:
    out = runner.raw("SELECT name, created_at FROM apps FINAL ORDER BY name", fmt="JSONEachRow")
    return [json.loads(line) for line in out.decode().splitlines() if line]


def key_hashes(runner: SqlRunner) -> dict[str, str]:
    out = runner.raw("SELECT key_hash, name FROM apps FINAL", fmt="TabSeparated")
    return dict(line.split("\t", 1) for line in out.decode().splitlines() if line)
