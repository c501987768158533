"""Cumulative → delta: baselines, resets, replays, bounds, persistence."""

from __future__ import annotations

from tallyhub.collector_processor.cumulative import Cumulative, DeltaState

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


def test_bounded_and_expiring() -> None:
    state = DeltaState(started_ns=0, max_series=2, expire_s=100)
    for key in "abc":
        state.delta(key, point(0, 10, 1))
    assert len(state) == 2  # "a" went first
    assert counts(state, "a", point(0, 20, 3)) == [3]  # unknown again: counted in full
    state.delta("z", point(0, 500, 1))  # "b", "c", "a" were last updated more than 100 s before
    assert len(state) == 1


def test_saved_and_restored_exactly() -> None:
    state = DeltaState(started_ns=7 * S)
    key = ("shop", "prod", "svc", "i-1", "http.server.duration", (("http.method", "GET"),))
    state.delta(key, point(8, 10, 3, 0.3, [(("p", 5), 3)]))
    state.delta(key, point(8, 20, 5, 0.5, [(("p", 5), 5)]))
    restored = DeltaState.loads(state.dumps())
    assert restored.started_ns == 7 * S
    assert counts(restored, key, point(8, 20, 5, 0.5, [(("p", 5), 5)]), point(8, 30, 9, 0.9, [(("p", 5), 9)])) == [2, 4]
