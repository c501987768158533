"""The apps table on embedded ClickHouse: names, revoked and rotated keys."""

from __future__ import annotations

import pytest

from tallyhub.collector_processor.receive.auth import hash_key
from tallyhub.storage.apps import (
    AppError,
    create_app,
    ensure_app_key,
    get_app,
    key_hashes,
    list_apps,
    revoke_app,
    rotate_key,
)
from tallyhub.storage.backend import ClientRunner


@pytest.mark.parametrize("name", ["app\n", "app\r\n", "\napp", "", "-app", "a" * 65, "a b", "app/x", "ápp"])
def test_invalid_app_names_are_refused(runner: ClientRunner, name: str) -> None:
    with pytest.raises(AppError, match="invalid app name"):
        create_app(runner, name, hash_key("thk_x"))
    assert list_apps(runner) == []


@pytest.mark.parametrize("name", ["a", "my-api", "shop.v2", "A_1", "a" * 64])
def test_valid_app_names(runner: ClientRunner, name: str) -> None:
    create_app(runner, name, hash_key("thk_x"))
    assert [a["name"] for a in list_apps(runner)] == [name]


def test_a_revoked_app_keeps_its_row_and_loses_its_key(runner: ClientRunner) -> None:
    create_app(runner, "shop", hash_key("thk_shop"))
    create_app(runner, "other", hash_key("thk_other"))
    before = revoke_app(runner, "shop")
    assert before["revoked_at"] is None
    assert key_hashes(runner) == {hash_key("thk_other"): "other"}
    shop = get_app(runner, "shop")
    assert shop is not None and shop["revoked_at"] is not None and shop["created_at"] == before["created_at"]
    assert [(a["name"], a["revoked_at"] is not None) for a in list_apps(runner)] == [("other", False), ("shop", True)]
    # revoking again changes nothing; the name stays taken
    assert revoke_app(runner, "shop")["revoked_at"] == shop["revoked_at"]
    with pytest.raises(AppError, match="exists already"):
        create_app(runner, "shop", hash_key("thk_new"))


def test_rotating_replaces_the_key_and_re_enables_a_revoked_app(runner: ClientRunner) -> None:
    create_app(runner, "shop", hash_key("thk_1"))
    created = get_app(runner, "shop")
    assert created is not None
    rotate_key(runner, "shop", hash_key("thk_2"))
    assert key_hashes(runner) == {hash_key("thk_2"): "shop"}
    revoke_app(runner, "shop")
    assert key_hashes(runner) == {}
    assert rotate_key(runner, "shop", hash_key("thk_3"))["revoked_at"] is not None  # as it was
    assert key_hashes(runner) == {hash_key("thk_3"): "shop"}
    shop = get_app(runner, "shop")
    assert shop is not None and shop["revoked_at"] is None
    assert shop["created_at"] == created["created_at"] and shop["key_created_at"] >= created["key_created_at"]
    assert len(list_apps(runner)) == 1


@pytest.mark.parametrize("change", [revoke_app, lambda runner, name: rotate_key(runner, name, "h")])
def test_an_unknown_app_cannot_be_revoked_or_rotated(runner: ClientRunner, change) -> None:
    with pytest.raises(AppError, match="no app named 'nope'"):
        change(runner, "nope")
    assert list_apps(runner) == []


def test_a_key_from_a_file_creates_rotates_or_leaves_the_app(runner: ClientRunner) -> None:
    assert ensure_app_key(runner, "shop", hash_key("k1")) == "created"
    assert ensure_app_key(runner, "shop", hash_key("k1")) == "unchanged"
    assert ensure_app_key(runner, "shop", hash_key("k2")) == "rotated"
    assert key_hashes(runner) == {hash_key("k2"): "shop"}
    revoke_app(runner, "shop")
    assert ensure_app_key(runner, "shop", hash_key("k2")) == "rotated"  # the file says it works: it works again
    assert key_hashes(runner) == {hash_key("k2"): "shop"}
    with pytest.raises(AppError, match="invalid app name"):
        ensure_app_key(runner, "no spaces", hash_key("k3"))
