"""Password hashes: scrypt, salted, verified in constant time, malformed hashes refused."""

from __future__ import annotations

import pytest

from tallyhub.dashboard.passwords import hash_password, verify_password


def test_the_password_verifies_and_others_do_not() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert hash_password("correct horse") != stored  # salted


@pytest.mark.parametrize(
    "stored",
    ["", "plain", "scrypt$1$2$3", "bcrypt$16384$8$1$AAAA$AAAA", "scrypt$16384$8$1$!!$AAAA", "scrypt$3$8$1$AAAA$AAAA"],
)
def test_a_malformed_hash_never_matches(stored: str) -> None:
    assert not verify_password("anything", stored)


def test_a_hash_asking_for_too_much_memory_is_refused_not_computed() -> None:
    assert not verify_password("x", "scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA")
