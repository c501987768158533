"""The `dashboard_users` table: who may sign in to the dashboard. Works on any `SqlRunner` (a local
client or the running hub), like `storage/apps.py`; only password hashes are stored."""

from __future__ import annotations

import json

from tallyhub.storage.apps import APP_NAME, SqlRunner

USER_NAME = APP_NAME
"""The same rule as app names: 1-64 letters, digits, '.', '_' or '-', starting alphanumeric."""


class UserError(ValueError):
    pass


def save_user(runner: SqlRunner, name: str, password_hash: str) -> bool:
    """Add the user, or give an existing one a new password; True if the user is new."""
    if not USER_NAME.fullmatch(name):
        raise UserError(f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
    existed = password_hash_of(runner, name) is not None
    runner.raw(
        "INSERT INTO dashboard_users (name, password_hash, created_at) "
        "SELECT {name:String}, {hash:String}, "
        "ifNull((SELECT min(created_at) FROM dashboard_users WHERE name = {name:String} AND removed = 0), now64(3))",
        {"name": name, "hash": password_hash},
    )
    return not existed


def remove_user(runner: SqlRunner, name: str) -> None:
    if password_hash_of(runner, name) is None:
        raise UserError(f"no dashboard user named {name!r} (see `tallyhub users list`)")
    runner.raw(  # INSERT … SELECT: VALUES with a parameter is misparsed on chDB
        "INSERT INTO dashboard_users (name, password_hash, removed) SELECT {name:String}, '', 1", {"name": name}
    )


def password_hash_of(runner: SqlRunner, name: str) -> str | None:
    out = runner.raw(
        "SELECT password_hash FROM dashboard_users FINAL WHERE name = {name:String} AND removed = 0",
        {"name": name},
        fmt="JSONEachRow",
        readonly=True,
    )
    rows = [json.loads(line) for line in out.decode().splitlines() if line]
    return rows[0]["password_hash"] if rows else None


def list_users(runner: SqlRunner) -> list[dict[str, str]]:
    out = runner.raw(
        "SELECT name, created_at, changed_at FROM dashboard_users FINAL WHERE removed = 0 ORDER BY name",
        fmt="JSONEachRow",
        readonly=True,
    )
    return [json.loads(line) for line in out.decode().splitlines() if line]
