"""Cumulative → delta, per series, as the OpenTelemetry Collector's cumulativetodelta processor
does: each point minus the series' previous one. Pure state, no I/O (``delta_store`` saves it).

- The first point of a series counts in full when it starts after this state began (the
  series' whole life is in it: an app that started after the hub) and after every series of its
  watermark slot that this state forgot (below); otherwise it is only the baseline for the next
  one (its past was counted by a hub state that is gone, or never, or before it was forgotten).
- A reset (a new start time, or a count that went down) starts the series afresh: the point
  counts in full.
- Replays are safe: the state keeps the last two points of each series, and whether its first
  point counted in full, so a point that is processed again (the hub stopped between inserting a
  batch and acknowledging it) gives the same delta as the first time, and an older point gives
  nothing. (A series forgotten since gives nothing, never more: the replayed batch has the same
  deduplication token anyway.)
- Bounded per app (``key[0]``, the app the hub verified: tenants are separated): each app has its
  own order of least recently updated series, at most ``max_series_per_app`` of them, and its
  series not updated for ``expire_s`` (by the app's own clock) are forgotten. One app's series
  never push out another app's, whose next points would then be counted again in full.
- A forgotten series that comes back is a baseline, never counted in full (its past was
  counted): each app keeps watermarks, the latest ``time_ns`` of the series it forgot, in
  ``WATERMARK_SLOTS`` slots by a hash of the series key, and an unknown series counts in full
  only if it started after its slot's watermark. (One watermark per app would be as safe, but
  once the series of a stopped instance expire, every new series of the app's other instances
  would lose its first point: their start time is their process's, from before.)
- Changes since the last save are tracked (``changed``, ``dumps_changes``, ``saved``), so that a
  save writes those only.
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MAX_SERIES = 100_000
"""Series tracked per app, by default."""
EXPIRE_S = 3600.0
WATERMARK_SLOTS = 4096

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


_Entry = tuple[Cumulative | None, Cumulative, bool]
"""A series' previous and last points, and whether its first point counted in full (read while
there is no previous point, for its replays: the watermark that decided it may have risen since).
A plain tuple: one is made per point, and a NamedTuple takes ten times as long to make."""


class _App:
    """One app's series, least recently updated first, and its watermarks (slot → time_ns)."""

    __slots__ = ("series", "watermarks")

    def __init__(self) -> None:
        self.series: OrderedDict[SeriesKey, _Entry] = OrderedDict()
        self.watermarks: dict[int, int] = {}


class DeltaState:
    def __init__(
        self,
        started_ns: int,
        max_series_per_app: int = MAX_SERIES,
        expire_s: float = EXPIRE_S,
        track_changes: bool = True,
    ) -> None:
        """``track_changes=False`` for a state that is never saved: what changed would pile up."""
        self.started_ns = started_ns
        self.track_changes = track_changes
        self.max_series_per_app = max_series_per_app
        self.expire_ns = int(expire_s * 1e9)
        self.snapshot_id: str | None = None
        """The snapshot this state was loaded from or last saved as (``delta_store``: a journal
        that names another snapshot is not this state's)."""
        self._apps: dict[Any, _App] = {}
        self._size = 0
        self._changed: dict[SeriesKey, None] = {}  # stored or forgotten since the last save, latest last
        self._changed_watermarks: set[tuple[Any, int]] = set()

    def __len__(self) -> int:
        return self._size

    def series_per_app(self) -> dict[Any, int]:
        """Series tracked per app (from any thread: ``tallyhub status``)."""
        return {app: len(state.series) for app, state in list(self._apps.items()) if state.series}

    @property
    def changed(self) -> bool:
        """Whether anything changed since the last ``saved()``."""
        return bool(self._changed or self._changed_watermarks)

    def delta(self, key: SeriesKey, point: Cumulative) -> Cumulative | None:
        """The delta this point adds, or None if it adds nothing (a baseline, or already counted)."""
        app = self._apps.get(key[0]) or self._app(key[0])
        entry = app.series.get(key)
        if entry is None:
            watermark = app.watermarks.get(_slot(key)) if app.watermarks else None
            counted = point.start_ns >= self.started_ns and (watermark is None or point.start_ns > watermark)
            self._size += 1
            self._store(app, key, (None, point, counted))
            return point if counted else None
        previous, last, counted = entry
        if point.time_ns < last.time_ns or (previous is not None and point.time_ns <= previous.time_ns):
            return None  # older than what was counted: a replay of an earlier batch
        if point.time_ns == last.time_ns:  # the last point, processed again: the same answer
            if previous is None:
                return point if counted else None
            return _since(point, previous)
        self._store(app, key, (last, point, False))
        return _since(point, last)

    def _app(self, name: Any) -> _App:
        app = self._apps.get(name)
        if app is None:
            app = self._apps[name] = _App()
        return app

    def _store(self, app: _App, key: SeriesKey, entry: _Entry) -> None:
        series = app.series
        series[key] = entry
        series.move_to_end(key)
        self._mark(key)
        while len(series) > self.max_series_per_app:
            self._forget(app, *series.popitem(last=False))
        oldest = entry[1].time_ns - self.expire_ns
        while series:
            first_key, first = next(iter(series.items()))
            if first[1].time_ns >= oldest:
                break
            del series[first_key]
            self._forget(app, first_key, first)

    def _forget(self, app: _App, key: SeriesKey, entry: _Entry) -> None:
        """After ``key`` left ``app``'s series: raise its slot's watermark, so that it comes back as
        a baseline."""
        self._size -= 1
        self._mark(key)
        slot = _slot(key)
        last_ns, watermark = entry[1].time_ns, app.watermarks.get(slot)
        if watermark is None or last_ns > watermark:
            app.watermarks[slot] = last_ns
            if self.track_changes:
                self._changed_watermarks.add((key[0], slot))

    def _mark(self, key: SeriesKey) -> None:
        if self.track_changes:
            self._changed.pop(key, None)
            self._changed[key] = None

    def _restore(self, key: SeriesKey, entry: _Entry) -> None:
        series = self._app(key[0]).series
        if key not in series:
            self._size += 1
        series[key] = entry
        series.move_to_end(key)

    def saved(self) -> None:
        """Everything changed so far is durable."""
        self._changed.clear()
        self._changed_watermarks.clear()

    def dumps(self, snapshot_id: str | None = None) -> bytes:
        """The whole state: ``{"started_ns", "snapshot_id", "series": [[key, [previous, last,
        counted]], ...], "watermarks": [[app, [[slot, time_ns], ...]], ...]}``, each app's series
        least recently updated first. (The states of earlier hubs: ``[key, [previous, last]]``,
        no snapshot id, no watermarks.)"""
        watermarks = [[name, sorted(app.watermarks.items())] for name, app in self._apps.items() if app.watermarks]
        series = (_series_json(key, entry) for app in self._apps.values() for key, entry in app.series.items())
        return _json_with_series(
            {"started_ns": self.started_ns, "snapshot_id": snapshot_id, "watermarks": watermarks}, series
        )

    @classmethod
    def loads(cls, data: bytes, max_series_per_app: int = MAX_SERIES, expire_s: float = EXPIRE_S) -> DeltaState:
        """A state from ``dumps()`` (or an earlier hub's). Raises ValueError, KeyError or TypeError
        if the data is not one."""
        document = json.loads(data)
        state = cls(document["started_ns"], max_series_per_app, expire_s)
        state.snapshot_id = document.get("snapshot_id")
        for key, pair in document["series"]:
            state._restore(_tuple(key), state._entry(pair))
        for name, slots in document.get("watermarks", ()):
            state._app(_tuple(name)).watermarks.update((int(slot), int(ns)) for slot, ns in slots)
        return state

    def dumps_changes(self) -> bytes:
        """What changed since the last ``saved()``, as one JSON line (no newline): ``{"series":
        [[key, [previous, last, counted]], ...], "forgotten": [key, ...], "watermarks": [[app,
        slot, time_ns], ...]}``, series in the order they changed."""
        series, forgotten = [], []
        for key in self._changed:
            entry = self._apps[key[0]].series.get(key)
            if entry is None:
                forgotten.append(key)
            else:
                series.append(_series_json(key, entry))
        watermarks = [[app, slot, self._apps[app].watermarks[slot]] for app, slot in self._changed_watermarks]
        return _json_with_series({"forgotten": forgotten, "watermarks": watermarks}, series)

    def apply_changes(self, data: bytes) -> None:
        """Replay a line of ``dumps_changes()`` (raises ValueError, KeyError or TypeError if it is not one)."""
        document = json.loads(data)
        for key, pair in document["series"]:
            self._restore(_tuple(key), self._entry(pair))
        for plain in document["forgotten"]:
            key = _tuple(plain)
            if self._app(key[0]).series.pop(key, None) is not None:
                self._size -= 1
        for name, slot, ns in document["watermarks"]:
            self._app(_tuple(name)).watermarks[int(slot)] = int(ns)

    def _entry(self, pair: list[Any]) -> _Entry:
        if len(pair) == 2:  # an earlier hub's: its first points counted in full by the start time alone
            previous, last = _point(pair[0]), _required(pair[1])
            return previous, last, previous is None and last.start_ns >= self.started_ns
        previous, last, counted = pair
        return _point(previous), _required(last), bool(counted)


def _slot(key: SeriesKey) -> int:
    """The key's watermark slot: a hash that is the same in every process (``hash()`` is not)."""
    return zlib.crc32(repr(key).encode()) % WATERMARK_SLOTS


def _since(point: Cumulative, earlier: Cumulative) -> Cumulative:
    if point.start_ns != earlier.start_ns:  # restarted: everything since its new start
        return point
    return point.minus(earlier) or point  # went down: a reset


def _series_json(key: SeriesKey, entry: _Entry) -> str:
    previous, last, counted = entry
    return json.dumps((key, (_plain(previous), _plain(last), counted)))


def _json_with_series(document: dict[str, Any], series: Iterable[str]) -> bytes:
    """``document`` as JSON, with a ``series`` array of entries already encoded. Encoding them one
    by one keeps the containers short-lived: 100 000 series as one nested list take 3-4 times as
    long, most of it the garbage collector going through them."""
    return (json.dumps(document)[:-1] + ', "series": [' + ",".join(series) + "]}").encode()


def _plain(point: Cumulative | None) -> Any:
    if point is None:
        return None
    return (point.start_ns, point.time_ns, point.count, point.total, point.buckets)


def _point(data: Any) -> Cumulative | None:
    if data is None:
        return None
    start_ns, time_ns, count, total, buckets = data
    return Cumulative(start_ns, time_ns, count, total, tuple((_tuple(i), n) for i, n in buckets))


def _required(data: Any) -> Cumulative:
    point = _point(data)
    if point is None:
        raise ValueError("a series without its last point")
    return point


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value
