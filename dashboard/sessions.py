"""Who is signed in to the dashboard: one-time sign-in tokens (the link `tallyhub serve` prints on
loopback, as Jupyter does) and the sessions they or a password open. Kept in the hub's memory: a
restarted hub asks everyone to sign in again."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

COOKIE = "tallyhub_session"
SESSION_TTL_S = 7 * 24 * 3600
"""A session lasts a week from its last use."""
TOKEN_TTL_S = 24 * 3600
"""A printed sign-in link works once, within a day."""
MAX_SESSIONS = 10_000


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._sessions: dict[str, tuple[str, float]] = {}

    def sign_in_token(self) -> str:
        """A token for one sign-in, to put in a link."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = self._clock() + TOKEN_TTL_S
        return token

    def redeem(self, token: str) -> str | None:
        """A new session for a valid token (which then stops working), else None."""
        with self._lock:
            expires = self._tokens.pop(token, None)
        if expires is None or expires < self._clock():
            return None
        return self.open("(sign-in link)")

    def open(self, user: str) -> str:
        session = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._expire()
            if len(self._sessions) >= MAX_SESSIONS:  # the least recently used goes
                del self._sessions[min(self._sessions, key=lambda s: self._sessions[s][1])]
            self._sessions[session] = (user, self._clock() + SESSION_TTL_S)
        return session

    def user(self, session: str | None) -> str | None:
        """Who the session belongs to, if it is open (using it keeps it open)."""
        if not session:
            return None
        with self._lock:
            found = self._sessions.get(session)
            if found is None:
                return None
            if found[1] < self._clock():
                del self._sessions[session]
                return None
            self._sessions[session] = (found[0], self._clock() + SESSION_TTL_S)
            return found[0]

    def close(self, session: str | None) -> None:
        with self._lock:
            self._sessions.pop(session or "", None)

    def _expire(self) -> None:
        now = self._clock()
        for session in [s for s, (_, expires) in self._sessions.items() if expires < now]:
            del self._sessions[session]
        for token in [t for t, expires in self._tokens.items() if expires < now]:
            del self._tokens[token]
