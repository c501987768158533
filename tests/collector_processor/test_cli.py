"""`tallyhub apps`: create, revoke, rotate, list, as a user runs them (embedded ClickHouse, no hub)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tallyhub.collector_processor.cli import main
from tallyhub.collector_processor.receive.auth import KeyRing
from tallyhub.storage.apps import key_hashes
from tallyhub.storage.backend import ClientRunner


@pytest.fixture
def apps(ch, chdb_url: str, database: str, tmp_path: Path):
    def run(*args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(
            main, ["apps", *args, "--storage-url", chdb_url, "--database", database, "--data-dir", str(tmp_path)]
        )
        assert result.exit_code == code, result.output
        return result

    return run


def test_revoke_then_rotate(apps, runner: ClientRunner) -> None:
    def app_of(key: str) -> str | None:
        """The app that a hub's key ring loaded now would resolve ``key`` to."""
        return KeyRing(lambda: key_hashes(runner)).app_for(key)

    key = apps("create", "shop").stdout.strip()
    assert app_of(key) == "shop"

    revoked = apps("revoke", "shop")
    assert "App 'shop' revoked: a running hub refuses its key within seconds. Its data is kept" in revoked.stderr
    assert app_of(key) is None
    name, created, key_since, state = apps("list").stdout.strip().split("\t")
    assert created <= key_since
    assert (name, state.split()[0]) == ("shop", "revoked")
    assert "was revoked already" in apps("revoke", "shop").stderr
    assert "exists already" in apps("create", "shop", code=1).output

    rotated = apps("rotate", "shop")
    new = rotated.stdout.strip()
    assert new.startswith("thk_") and new != key
    assert "has a new key and is no longer revoked" in rotated.stderr and "not shown again" in rotated.stderr
    assert app_of(new) == "shop" and app_of(key) is None
    assert apps("list").stdout.strip().split("\t")[3] == "active"

    newer = apps("rotate", "shop").stdout.strip()
    assert app_of(newer) == "shop" and app_of(new) is None


@pytest.mark.parametrize("command", ["revoke", "rotate"])
def test_an_unknown_app_is_an_error(apps, command: str) -> None:
    result = apps(command, "nope", code=1)
    assert "no app named 'nope'" in result.output and "thk_" not in result.output


def test_a_name_with_a_trailing_newline_is_refused(apps) -> None:
    result = apps("create", "app\n", code=1)
    assert "invalid app name 'app\\n'" in result.output and "thk_" not in result.stdout
    assert apps("list").stdout == ""
