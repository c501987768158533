"""The request log's daily quota per app: past it, an export's logged requests are refused with
OTLP partial success (the rest of the export is stored), counted, and shown by ``tallyhub status``.

Counted where the hub's queue is (the hub's process: receiver processes ask it over the link), per
UTC day; at a hub's start, and at each new day, an app's count begins from what ``request_log``
already holds for that day, so a restart does not hand out a second quota.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_PER_DAY = 1_000_000
"""Logged requests per app and UTC day (``tallyhub serve --request-log-quota``; 0: no quota)."""


class RequestLogQuota:
    def __init__(
        self, per_day: int, stored_today: Callable[[str], int], clock: Callable[[], float] = time.time
    ) -> None:
        self.per_day = per_day
        self._stored_today = stored_today
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}
        self._refused: dict[tuple[str, int], int] = {}

    def refused_today(self, app: str) -> int:
        """Logged requests of ``app`` refused since midnight UTC (the dashboard says so)."""
        with self._lock:
            return self._refused.get((app, int(self._clock() // 86_400)), 0)

    def take(self, app: str, n: int) -> tuple[int, str]:
        """How many of ``n`` more logged requests ``app`` may store today (they are counted), and,
        when fewer than ``n``, the message of the partial success."""
        if self.per_day <= 0 or n <= 0:
            return n, ""
        day = int(self._clock() // 86_400)
        with self._lock:
            key = (app, day)
            if key not in self._counts:
                for old in [k for k in self._counts if k[1] != day]:  # yesterday's counts: forgotten
                    del self._counts[old]
                    self._refused.pop(old, None)
                self._counts[key] = self._stored_today(app)
            allowed = max(0, min(n, self.per_day - self._counts[key]))
            self._counts[key] += allowed
            if allowed < n:
                self._refused[key] = self._refused.get(key, 0) + n - allowed
        if allowed == n:
            return n, ""
        return allowed, (
            f"{n - allowed} logged requests not stored: app {app} reached its request log quota of "
            f"{self.per_day:,} a day (UTC); it starts again at midnight UTC (`tallyhub serve "
            "--request-log-quota` changes it)"
        )
