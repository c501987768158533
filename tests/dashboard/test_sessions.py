"""Sign-in tokens and sessions, on a clock the test moves."""

from __future__ import annotations

from tallyhub.dashboard.sessions import SESSION_TTL_S, TOKEN_TTL_S, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_opens_one_session_once() -> None:
    sessions = Sessions(Clock())
    token = sessions.sign_in_token()
    session = sessions.redeem(token)
    assert session is not None and sessions.user(session) == "(sign-in link)"
    assert sessions.redeem(token) is None  # used
    assert sessions.redeem("made-up") is None


def test_tokens_and_sessions_expire() -> None:
    clock = Clock()
    sessions = Sessions(clock)
    token = sessions.sign_in_token()
    clock.now += TOKEN_TTL_S + 1
    assert sessions.redeem(token) is None
    session = sessions.open("ada")
    clock.now += SESSION_TTL_S - 1
    assert sessions.user(session) == "ada"  # used: kept open for another week
    clock.now += SESSION_TTL_S - 1
    assert sessions.user(session) == "ada"
    clock.now += SESSION_TTL_S + 1
    assert sessions.user(session) is None


def test_closed_sessions_and_nonsense_are_nobody() -> None:
    sessions = Sessions(Clock())
    session = sessions.open("ada")
    sessions.close(session)
    assert sessions.user(session) is None
    assert sessions.user(None) is None and sessions.user("") is None
