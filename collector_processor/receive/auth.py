"""App keys: generated once, stored as SHA-256 hashes, resolved to the app on every export."""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable

from tallyhub.wire import APP_KEY_HEADER

logger = logging.getLogger("tallyhub.auth")

KEY_PREFIX = "thk_"


def generate_key() -> str:
    """A new app key: 256 random bits, prefixed so that it is recognisable in a leaked file."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Keys are random and long, so one SHA-256 is enough (no salt or slow hash needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


MIN_KEY_LENGTH = 24
"""A key given in a file (``parse_app_keys``): at least this long, so that it cannot be guessed."""


def parse_app_keys(text: str, source: str) -> dict[str, str]:
    """The apps and keys of an app-keys file (a Kubernetes or Docker secret): ``NAME=KEY`` lines,
    ``#`` comments and blank lines ignored. Raises ``ValueError`` naming the line (never the key)."""
    keys: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, key = (part.strip() for part in line.partition("="))
        if not sep or not name or not key:
            raise ValueError(f"{source}, line {number}: expected NAME=KEY")
        if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
            raise ValueError(
                f"{source}, line {number}: the key of {name!r} is too short or has spaces: use at least "
                f"{MIN_KEY_LENGTH} characters, such as a key of `tallyhub apps create`"
            )
        if name in keys:
            raise ValueError(f"{source}, line {number}: {name!r} is given twice")
        keys[name] = key
    return keys


CONFLICTING_KEYS = "(conflicting app keys)"
"""What ``key_from_metadata`` returns for metadata that holds two different keys: no key is this
string (keys are ``thk_`` and base64url), and ``KeyRing.app_for`` refuses it without a look-up."""


def key_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The app key from gRPC metadata (or HTTP headers, lower-cased): ``x-tallyhub-app-key: KEY`` or
    ``authorization: Bearer KEY``, each possibly repeated. None without a key; ``CONFLICTING_KEYS``
    (and a warning) when they name different keys: an export is never stored under a guess."""
    keys: dict[str, str] = {}  # key → the header that carried it first
    for name, value in metadata:
        if isinstance(value, bytes):
            continue
        if name == APP_KEY_HEADER:
            key = value.strip()
        elif name == "authorization" and value[:7].lower() == "bearer ":
            key = value[7:].strip()
        else:
            continue
        if key:
            keys.setdefault(key, name)
    if len(keys) > 1:
        logger.warning(
            "refused an export with %d different app keys (in %s): send one key, in %s or authorization: Bearer",
            len(keys),
            " and ".join(sorted(set(keys.values()))),
            APP_KEY_HEADER,
        )
        return CONFLICTING_KEYS
    return next(iter(keys), None)


class KeyRing:
    """Key hash → app name, loaded from storage.

    Reloaded when an unknown key shows up (a new app's first export), at most once per
    ``min_reload_s`` (a key that left the ring, revoked or rotated away, is not unknown: refused
    without one), and, once started, every ``reload_s`` in a thread of its own, so that a revoked or
    rotated-away key is refused within seconds while exports never wait for it. One reload at a
    time. A reload that fails (ClickHouse down) keeps the last ring, with a warning: the apps known a
    moment ago still get their exports queued.
    """

    def __init__(self, load: Callable[[], dict[str, str]], reload_s: float = 2.0, min_reload_s: float = 1.0) -> None:
        self._load = load
        self._reload_s = reload_s
        self._min_reload_s = min_reload_s
        self._apps: dict[str, str] = {}
        self._retired: set[str] = set()
        """Hashes that left the ring (revoked, rotated away): refused without a reload, so that a
        client still sending one does not use up the reloads that a new app's key needs."""
        self._loaded_at = -float("inf")
        """When the last reload began (monotonic), whether it worked or not."""
        self._looked_up_at = -float("inf")
        """When an unknown key last caused a reload: the periodic ones do not count, or a new app's
        first export would wait for the next one (and be refused) whenever one just happened."""
        self._failing = False
        self._lock = threading.Lock()
        """Held by the reload in progress."""
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Load now, then every ``reload_s``, until ``stop``."""
        self._thread = threading.Thread(target=self._run, name="tallyhub-keyring", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def app_for(self, key: str | None) -> str | None:
        if not key or key == CONFLICTING_KEYS:
            return None
        digest = hash_key(key)
        app = self._apps.get(digest)
        if app is None and digest not in self._retired:
            with self._lock:  # a reload in progress may bring the key: waited for
                if time.monotonic() - self._looked_up_at >= self._min_reload_s:
                    self._looked_up_at = time.monotonic()
                    self._reload()
            app = self._apps.get(digest)
        return app

    def _run(self) -> None:
        while not self._stopped.wait(max(0.0, self._loaded_at + self._reload_s - time.monotonic())):
            with self._lock:
                if time.monotonic() - self._loaded_at >= self._reload_s:
                    self._reload()

    def _reload(self) -> None:
        self._loaded_at = time.monotonic()
        try:
            apps = self._load()
        except Exception as exc:
            # once per outage, not every reload_s
            (logger.debug if self._failing else logger.warning)(
                "could not reload the app keys; keeping the %d known until it works again: %s", len(self._apps), exc
            )
            self._failing = True
            return
        if self._failing:
            logger.info("app keys reloaded again (%d keys)", len(apps))
        self._failing = False
        self._retired = self._retired | (self._apps.keys() - apps.keys())  # a new set: read without the lock
        self._apps = apps
