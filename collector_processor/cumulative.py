"""Cumulative → delta, per series, as the OpenTelemetry Collector's cumulativetodelta processor
does: each point minus the series' previous one. Pure state, no I/O (the processor saves it).

- The first point of a series counts in full when it starts after this state began (the
  series' whole life is in it: an app that started after the hub); otherwise it is only the
  baseline for the next one (its past was counted by a hub state that is gone, or never).
- A reset (a new start time, or a count that went down) starts the series afresh: the point
  counts in full.
- Replays are safe: the state keeps the last two points of each series, so a point that is
  processed again (the hub stopped between inserting a batch and acknowledging it) gives the same
  delta as the first time, and an older point gives nothing.
- Bounded: at most ``max_series`` series (the least recently updated go first), and series not
  updated for ``expire_s`` are forgotten.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MAX_SERIES = 100_000
EXPIRE_S = 3600.0

SeriesKey = tuple[Any, ...]


@dataclass(frozen=True)
class Cumulative:
    """A cumulative point: since ``start_ns``, up to ``time_ns``; ``value`` for sums, or the
    histogram's count, sum and bucket counts (any index → count)."""

    start_ns: int
    time_ns: int
    count: float
    total: float = 0.0
    buckets: tuple[tuple[Any, int], ...] = ()

    def minus(self, earlier: Cumulative) -> Cumulative | None:
        """This point as a delta since ``earlier``; None if it went down (a reset)."""
        if self.count < earlier.count:
            return None
        before = dict(earlier.buckets)
        buckets = []
        for index, n in self.buckets:
            diff = n - before.pop(index, 0)
            if diff < 0:
                return None
            if diff:
                buckets.append((index, diff))
        if any(before.values()):  # a bucket vanished: not the same series any more
            return None
        return Cumulative(
            earlier.time_ns, self.time_ns, self.count - earlier.count, self.total - earlier.total, tuple(buckets)
        )


class DeltaState:
    def __init__(self, started_ns: int, max_series: int = MAX_SERIES, expire_s: float = EXPIRE_S) -> None:
        self.started_ns = started_ns
        self.max_series = max_series
        self.expire_ns = int(expire_s * 1e9)
        self._series: OrderedDict[SeriesKey, tuple[Cumulative | None, Cumulative]] = OrderedDict()
        self.changed = False

    def __len__(self) -> int:
        return len(self._series)

    def delta(self, key: SeriesKey, point: Cumulative) -> Cumulative | None:
        """The delta this point adds, or None if it adds nothing (a baseline, or already counted)."""
        entry = self._series.get(key)
        if entry is None:
            self._store(key, None, point)
            return point if point.start_ns >= self.started_ns else None
        previous, last = entry
        if point.time_ns < last.time_ns or (previous is not None and point.time_ns <= previous.time_ns):
            return None  # older than what was counted: a replay of an earlier batch
        if point.time_ns == last.time_ns:  # the last point, processed again: the same answer
            if previous is None:
                return point if point.start_ns >= self.started_ns else None
            return _since(point, previous)
        self._store(key, last, point)
        return _since(point, last)

    def _store(self, key: SeriesKey, previous: Cumulative | None, last: Cumulative) -> None:
        self._series[key] = (previous, last)
        self._series.move_to_end(key)
        self.changed = True
        while len(self._series) > self.max_series:
            self._series.popitem(last=False)
        oldest = last.time_ns - self.expire_ns
        while self._series:
            first_key, (_, first_last) = next(iter(self._series.items()))
            if first_last.time_ns >= oldest:
                break
            del self._series[first_key]

    def dumps(self) -> bytes:
        entries = [[list(key), [_plain(p) for p in pair]] for key, pair in self._series.items()]
        return json.dumps({"started_ns": self.started_ns, "series": entries}).encode()

    @classmethod
    def loads(cls, data: bytes, max_series: int = MAX_SERIES, expire_s: float = EXPIRE_S) -> DeltaState:
        document = json.loads(data)
        state = cls(document["started_ns"], max_series, expire_s)
        for key, (previous, last) in document["series"]:
            state._series[_tuple(key)] = (_point(previous), _point(last))  # type: ignore[assignment]
        return state


def _since(point: Cumulative, earlier: Cumulative) -> Cumulative:
    if point.start_ns != earlier.start_ns:  # restarted: everything since its new start
        return point
    return point.minus(earlier) or point  # went down: a reset


def _plain(point: Cumulative | None) -> Any:
    if point is None:
        return None
    return [point.start_ns, point.time_ns, point.count, point.total, [list(b) for b in point.buckets]]


def _point(data: Any) -> Cumulative | None:
    if data is None:
        return None
    start_ns, time_ns, count, total, buckets = data
    return Cumulative(start_ns, time_ns, count, total, tuple((_tuple(i), n) for i, n in buckets))


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value
