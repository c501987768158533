"""Dashboard users in ClickHouse: added, given a new password, listed, removed."""

from __future__ import annotations

import pytest

from tallyhub.dashboard.passwords import hash_password, verify_password
from tallyhub.storage.users import UserError, list_users, password_hash_of, remove_user, save_user


def test_add_change_list_and_remove(runner) -> None:
    assert list_users(runner) == []
    assert save_user(runner, "ada", hash_password("first password"))
    assert not save_user(runner, "ada", hash_password("second password"))  # a new password, same user
    assert verify_password("second password", password_hash_of(runner, "ada"))
    assert save_user(runner, "bob", hash_password("bobs password"))
    assert [u["name"] for u in list_users(runner)] == ["ada", "bob"]
    remove_user(runner, "ada")
    assert password_hash_of(runner, "ada") is None
    assert [u["name"] for u in list_users(runner)] == ["bob"]
    assert save_user(runner, "ada", hash_password("third password"))  # back, as a new user


@pytest.mark.parametrize("name", ["", "a b", "-x", "x\n", "'; DROP TABLE apps; --", "x" * 65])
def test_invalid_names_are_refused(runner, name: str) -> None:
    with pytest.raises(UserError, match="invalid user name"):
        save_user(runner, name, hash_password("some password"))
    assert list_users(runner) == []


def test_removing_nobody_says_so(runner) -> None:
    with pytest.raises(UserError, match="no dashboard user named 'ghost'"):
        remove_user(runner, "ghost")
