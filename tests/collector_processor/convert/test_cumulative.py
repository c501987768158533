"""Cumulative → delta: baselines, resets, replays, bounds, persistence."""

from __future__ import annotations

from tallyhub.collector_processor.convert import cumulative
from tallyhub.collector_processor.convert.cumulative import Cumulative, DeltaState

S = 1_000_000_000  # a second, in ns


def point(start: int, time: int, count: float, total: float = 0.0, buckets=()) -> Cumulative:
    return Cumulative(start * S, time * S, count, total, tuple(buckets))


def counts(state: DeltaState, key, *points: Cumulative) -> list[float | None]:
    return [None if (d := state.delta(key, p)) is None else d.count for p in points]


def test_a_series_that_started_after_the_state_counts_in_full_then_by_differences() -> None:
    state = DeltaState(started_ns=100 * S)
    assert counts(state, "a", point(100, 110, 5), point(100, 120, 8), point(100, 130, 8)) == [5, 3, 0]


def test_a_series_older_than_the_state_is_only_a_baseline_at_first() -> None:
    state = DeltaState(started_ns=100 * S)
    assert counts(state, "a", point(50, 110, 500), point(50, 120, 530)) == [None, 30]


def test_resets_start_afresh() -> None:
    state = DeltaState(started_ns=0)
    # a new start time (the app restarted), then a count that went down with the same start
    assert counts(state, "a", point(10, 20, 7), point(30, 40, 2), point(30, 50, 6), point(30, 60, 1)) == [7, 2, 4, 1]


def test_histogram_buckets_are_differenced_and_a_vanished_bucket_is_a_reset() -> None:
    state = DeltaState(started_ns=0)
    state.delta("h", point(0, 10, 3, 0.3, [(1, 2), (4, 1)]))
    delta = state.delta("h", point(0, 20, 6, 0.9, [(1, 3), (4, 1), (7, 2)]))
    assert (delta.count, round(delta.total, 9), delta.buckets, delta.start_ns) == (3, 0.6, ((1, 1), (7, 2)), 10 * S)
    full = point(0, 30, 7, 1.0, [(1, 3), (7, 4)])  # bucket 4 vanished: not the same series
    assert state.delta("h", full) is full


def test_a_replayed_point_gives_the_same_delta_and_an_older_one_nothing() -> None:
    state = DeltaState(started_ns=0)
    assert counts(state, "a", point(0, 10, 4), point(0, 20, 9)) == [4, 5]
    assert counts(state, "a", point(0, 20, 9)) == [5]  # the hub died before acknowledging the batch
    assert counts(state, "a", point(0, 10, 4), point(0, 15, 6)) == [None, None]
    fresh = DeltaState(started_ns=0)
    assert counts(fresh, "b", point(0, 10, 4), point(0, 10, 4)) == [4, 4]


def test_bounded_and_expiring_per_app() -> None:
    state = DeltaState(started_ns=0, max_series_per_app=2, expire_s=100)
    for name in "abc":
        state.delta(("shop", name), point(0, 10, 1))
    state.delta(("blog", "a"), point(0, 10, 1))
    assert len(state) == 3  # the shop's "a" went first; the blog's series is the blog's own
    assert state.series_per_app() == {"shop": 2, "blog": 1}
    state.delta(("shop", "z"), point(0, 500, 1))  # the shop's "b" goes (quota), "c" expires by its clock
    assert state.series_per_app() == {"shop": 1, "blog": 1}  # the blog's, by the blog's clock, are not
    assert counts(state, ("blog", "a"), point(0, 20, 4)) == [3]


def test_one_app_cannot_evict_another_apps_series() -> None:
    """With one order for all apps, a's 50 new series pushed b's out, and b's next point counted
    again in full: 10 then 30 requests stored as 40."""
    state = DeltaState(started_ns=100 * S, max_series_per_app=50)
    b = ("b", "prod", "api", "i-1", "http.server.request.duration", (("http.route", "/items"),))
    deltas = counts(state, b, point(100, 110, 10))
    for n in range(120):
        state.delta(
            ("a", "prod", "api", "i-1", "http.server.request.duration", (("http.route", f"/{n}"),)), point(100, 111, 1)
        )
    deltas += counts(state, b, point(100, 120, 30))
    assert deltas == [10, 20]
    assert sum(deltas) == 30
    assert state.series_per_app() == {"b": 1, "a": 50} and len(state) == 51


def test_a_forgotten_series_comes_back_as_a_baseline() -> None:
    state = DeltaState(started_ns=0, max_series_per_app=2, expire_s=100)
    x = ("shop", "x")
    assert counts(state, x, point(0, 10, 5)) == [5]
    state.delta(("shop", "y"), point(0, 11, 1))
    state.delta(("shop", "z"), point(0, 12, 1))  # x evicted
    assert counts(state, x, point(0, 30, 9), point(0, 40, 12)) == [None, 3]  # its 5 are not counted again
    state.delta(("shop", "y"), point(0, 500, 2))  # x expired
    assert counts(state, x, point(0, 510, 20), point(0, 520, 21)) == [None, 1]
    assert counts(state, x, point(515, 530, 2)) == [2]  # restarted after it was last seen: a reset, in full


def test_a_forgotten_series_only_holds_back_the_series_of_its_watermark_slot() -> None:
    state = DeltaState(started_ns=0, max_series_per_app=1)
    old, new = ("shop", "i-1", "/a"), ("shop", "i-2", "/b")
    assert cumulative._slot(old) != cumulative._slot(new)
    state.delta(old, point(0, 100, 5))
    state.delta(("shop", "i-2", "/c"), point(50, 101, 1))  # "old" evicted: its slot's watermark is 100 s
    assert counts(state, new, point(50, 110, 3)) == [3]  # started before that, in another slot: in full


def test_a_first_point_replayed_after_its_watermark_rose_gives_the_same_delta(monkeypatch) -> None:
    monkeypatch.setattr(cumulative, "WATERMARK_SLOTS", 1)  # one watermark per app
    state = DeltaState(started_ns=0, max_series_per_app=2)
    x = ("shop", "x")
    state.delta(("shop", "a"), point(0, 100, 1))  # another instance, whose clock is ahead
    assert counts(state, x, point(20, 30, 4)) == [4]
    state.delta(("shop", "b"), point(0, 31, 1))  # "a" evicted: the watermark is 100 s, after x started
    assert counts(state, x, point(20, 30, 4), point(20, 40, 6)) == [4, 2]
    assert counts(state, ("shop", "a"), point(0, 110, 2)) == [None]


def test_saved_and_restored_exactly() -> None:
    state = DeltaState(started_ns=7 * S)
    key = ("shop", "prod", "svc", "i-1", "http.server.duration", (("http.method", "GET"),))
    state.delta(key, point(8, 10, 3, 0.3, [(("p", 5), 3)]))
    state.delta(key, point(8, 20, 5, 0.5, [(("p", 5), 5)]))
    restored = DeltaState.loads(state.dumps())
    assert restored.started_ns == 7 * S
    assert counts(restored, key, point(8, 20, 5, 0.5, [(("p", 5), 5)]), point(8, 30, 9, 0.9, [(("p", 5), 9)])) == [2, 4]
