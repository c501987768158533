"""The `apps` table: names and key hashes. Works on any `SqlRunner` (local client or the hub).

Every change to an app (a new key, a revocation) inserts its whole row again: the table is a
ReplacingMergeTree ordered by name, and ``FINAL`` reads the last row inserted per name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Matched with ``fullmatch``: ``$`` in ``match`` would let a trailing newline through."""


class SqlRunner(Protocol):
    def raw(
        self, sql: str, parameters: Mapping[str, Any] | None = None, fmt: str = "TabSeparated", readonly: bool = False
    ) -> bytes: ...


class AppError(ValueError):
    pass


def create_app(runner: SqlRunner, name: str, key_hash: str) -> None:
    if not APP_NAME.fullmatch(name):
        raise AppError(f"invalid app name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
    if get_app(runner, name) is not None:
        raise AppError(f"an app named {name!r} exists already")
    runner.raw(
        "INSERT INTO apps (name, key_hash, created_at) SELECT {name:String}, {key_hash:String}, now64(3)",
        {"name": name, "key_hash": key_hash},
    )


def get_app(runner: SqlRunner, name: str) -> dict[str, Any] | None:
    """The app's name, created_at, key_created_at and revoked_at (None while its key works)."""
    out = runner.raw(
        "SELECT name, created_at, key_created_at, revoked_at FROM apps FINAL WHERE name = {name:String}",
        {"name": name},
        fmt="JSONEachRow",
    )
    rows = [json.loads(line) for line in out.decode().splitlines() if line]
    return rows[0] if rows else None


def revoke_app(runner: SqlRunner, name: str) -> dict[str, Any]:
    """Revoke the app's key (its data stays); returns the app as it was before. Revoking a revoked
    app changes nothing."""
    app = _existing(runner, name)
    if app["revoked_at"] is None:
        runner.raw(
            "INSERT INTO apps (name, key_hash, created_at, key_created_at, revoked_at) "
            "SELECT name, key_hash, created_at, key_created_at, now64(3) FROM apps FINAL WHERE name = {name:String}",
            {"name": name},
        )
    return app


def rotate_key(runner: SqlRunner, name: str, key_hash: str) -> dict[str, Any]:
    """Give the app a new key (the old one stops working; a revoked app works again with the new
    one); returns the app as it was before."""
    app = _existing(runner, name)
    runner.raw(
        "INSERT INTO apps (name, key_hash, created_at, key_created_at, revoked_at) "
        "SELECT name, {key_hash:String}, created_at, now64(3), NULL FROM apps FINAL WHERE name = {name:String}",
        {"name": name, "key_hash": key_hash},
    )
    return app


def ensure_app_key(runner: SqlRunner, name: str, key_hash: str) -> str:
    """Make ``key_hash`` the app's working key, creating the app if it is new: for keys kept in a
    file (a deploy's secret), which is then the truth. Returns ``created``, ``rotated`` (another key,
    or a revoked one, is replaced) or ``unchanged``."""
    app = get_app(runner, name)
    if app is None:
        create_app(runner, name, key_hash)
        return "created"
    if key_hashes(runner).get(key_hash) == name and app["revoked_at"] is None:
        return "unchanged"
    rotate_key(runner, name, key_hash)
    return "rotated"


def list_apps(runner: SqlRunner) -> list[dict[str, Any]]:
    out = runner.raw(
        "SELECT name, created_at, key_created_at, revoked_at FROM apps FINAL ORDER BY name", fmt="JSONEachRow"
    )
    return [json.loads(line) for line in out.decode().splitlines() if line]


def key_hashes(runner: SqlRunner) -> dict[str, str]:
    """Key hash → app name, of the keys that work (not revoked, not rotated away)."""
    out = runner.raw("SELECT key_hash, name FROM apps FINAL WHERE revoked_at IS NULL", fmt="TabSeparated")
    return dict(line.split("\t", 1) for line in out.decode().splitlines() if line)


def _existing(runner: SqlRunner, name: str) -> dict[str, Any]:
    app = get_app(runner, name)
    if app is None:
        raise AppError(f"no app named {name!r}: `tallyhub apps list` shows the apps")
    return app
