"""App keys: generated once, stored as SHA-256 hashes, resolved to the app on every export."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable

KEY_PREFIX = "thk_"
APP_KEY_HEADER = "x-tallyhub-app-key"


def generate_key() -> str:
    """A new app key: 256 random bits, prefixed so that it is recognisable in a leaked file."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Keys are random and long, so one SHA-256 is enough (no salt or slow hash needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The app key from gRPC metadata: ``x-tallyhub-app-key: KEY`` or ``authorization: Bearer KEY``."""
    for name, value in metadata:
        if isinstance(value, bytes):
            continue
        if name == APP_KEY_HEADER:
            return value.strip()
        if name == "authorization" and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return None


class KeyRing:
    """Key hash → app name, reloaded from storage when an unknown key shows up (at most once a second)."""

    def __init__(self, load: Callable[[], dict[str, str]], min_reload_s: float = 1.0) -> None:
        self._load = load
        self._min_reload_s = min_reload_s
        self._apps: dict[str, str] = {}
        self._loaded_at = -float("inf")
        self._lock = threading.Lock()

    def app_for(self, key: str | None) -> str | None:
        if not key:
            return None
        digest = hash_key(key)
        app = self._apps.get(digest)
        if app is None and time.monotonic() - self._loaded_at >= self._min_reload_s:
            with self._lock:
                if time.monotonic() - self._loaded_at >= self._min_reload_s:
                    self._apps = self._load()
                    self._loaded_at = time.monotonic()
            app = self._apps.get(digest)
        return app
