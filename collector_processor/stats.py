"""The hub's own counters, for `tallyhub status`: what came in, what was refused and why, what
was stored. Thread-safe; in memory (they restart at zero with the hub)."""

from __future__ import annotations

import threading
import time
from collections import Counter


class Stats:
    def __init__(self) -> None:
        self.started_ns = time.time_ns()
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
