"""The cumulative state on disk: a snapshot and a journal; reloads (as after a kill -9) give the
same deltas, torn lines are ignored, compaction keeps everything, forgotten series stay forgotten."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from tallyhub.collector_processor.convert import delta_store
from tallyhub.collector_processor.convert.cumulative import Cumulative, DeltaState
from tallyhub.collector_processor.convert.delta_store import journal_path, load_state, save_state

S = 1_000_000_000  # a second, in ns
KEY = ("shop", "prod", "svc", "i-1", "http.server.request.duration", (("http.route", "/items"),))


def point(start: int, time: int, count: float, buckets=()) -> Cumulative:
    return Cumulative(start * S, time * S, count, count / 10, tuple(buckets))


def counts(state: DeltaState, key, *points: Cumulative) -> list[float | None]:
    return [None if (d := state.delta(key, p)) is None else d.count for p in points]


def key(app: str, route: str) -> tuple:
    return (app, "prod", "svc", "i-1", "http.server.request.duration", (("http.route", route),))


def test_saved_after_each_batch_and_reloaded_gives_the_same_deltas(tmp_path: Path) -> None:
    path = tmp_path / "cumulative.json"
    state = DeltaState(started_ns=0)
    assert counts(state, KEY, point(1, 10, 4, [(("p", 3), 4)])) == [4]
    save_state(path, state)
    assert not state.changed
    assert counts(state, KEY, point(1, 20, 9, [(("p", 3), 7), (("n", 1), 2)])) == [5]
    assert counts(state, key("blog", "/"), point(0, 20, 3)) == [3]
    save_state(path, state)  # the hub is killed before acknowledging this batch: it is replayed
    reloaded = load_state(path)
    assert reloaded.dumps() == state.dumps()
    assert len(reloaded) == 2 and reloaded.series_per_app() == {"shop": 1, "blog": 1}
    replayed = reloaded.delta(KEY, point(1, 20, 9, [(("p", 3), 7), (("n", 1), 2)]))
    assert replayed == state.delta(KEY, point(1, 20, 9, [(("p", 3), 7), (("n", 1), 2)]))
    assert replayed.count == 5 and replayed.buckets == ((("p", 3), 3), (("n", 1), 2))
    assert counts(reloaded, key("blog", "/"), point(0, 20, 3), point(0, 30, 8)) == [3, 5]


def test_a_series_updated_then_evicted_before_a_restart_stays_forgotten(tmp_path: Path) -> None:
    """Without the journal's record of it, x would come back with its last saved values (count
    8) and its next point would count its 8 → 12 again."""
    path = tmp_path / "cumulative.json"
    state = DeltaState(started_ns=0, max_series_per_app=2)
    x = key("shop", "/x")
    assert counts(state, x, point(0, 10, 5), point(0, 20, 8)) == [5, 3]
    save_state(path, state)
    assert counts(state, x, point(0, 30, 12)) == [4]  # then, in the same batch, x is evicted:
    state.delta(key("shop", "/y"), point(0, 31, 1))
    state.delta(key("shop", "/z"), point(0, 32, 1))
    save_state(path, state)
    assert json.loads(journal_path(path).read_bytes().splitlines()[-1])["forgotten"] == [json.loads(json.dumps(x))]
    reloaded = load_state(path)
    reloaded.max_series_per_app = 2
    assert reloaded.dumps() == state.dumps()
    # its next point: a baseline (the watermark came back too), in memory as after the reload
    assert counts(reloaded, x, point(0, 40, 15)) == counts(state, x, point(0, 40, 15)) == [None]


def test_a_torn_last_line_is_ignored_and_not_appended_to(tmp_path: Path, caplog) -> None:
    path = tmp_path / "cumulative.json"
    state = DeltaState(started_ns=0)
    state.delta(KEY, point(0, 10, 4))
    save_state(path, state)
    state.delta(KEY, point(0, 20, 9))
    save_state(path, state)
    saved = state.dumps()
    with journal_path(path).open("ab") as f:  # killed while writing the next save
        f.write(b'{"series": [[["shop", "prod"')
    with caplog.at_level(logging.WARNING):
        reloaded = load_state(path)
    assert "torn last line" in caplog.text
    assert reloaded.dumps() == saved
    assert counts(reloaded, KEY, point(0, 30, 10)) == [1]
    save_state(path, reloaded)  # not glued to the torn line: a new snapshot
    assert load_state(path).dumps() == reloaded.dumps()


def test_a_line_that_cannot_be_read_before_the_last_one_means_starting_afresh(tmp_path: Path, caplog) -> None:
    path = tmp_path / "cumulative.json"
    state = DeltaState(started_ns=0)
    state.delta(KEY, point(0, 10, 4))
    save_state(path, state)
    with journal_path(path).open("ab") as f:
        f.write(b"\0\0\0\0\n" + state.dumps_changes() + b"\n")
    with caplog.at_level(logging.ERROR):
        reloaded = load_state(path)
    assert "starting afresh" in caplog.text
    assert len(reloaded) == 0 and reloaded.started_ns > 10 * S  # running series: baselines, never counted twice


def test_a_failed_save_leaves_nothing_behind_and_is_written_by_the_next(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "cumulative.json"
    state = DeltaState(started_ns=0)
    state.delta(KEY, point(0, 10, 4))
    save_state(path, state)
    size = journal_path(path).stat().st_size
    state.delta(KEY, point(0, 20, 9))
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        monkeypatch.setattr(os, "fsync", real_fsync)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        save_state(path, state)
    assert journal_path(path).stat().st_size == size  # cut back
    assert state.changed
    save_state(path, state)
    assert load_state(path).dumps() == state.dumps()


def test_compaction_keeps_everything(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(delta_store, "MIN_COMPACT_BYTES", 0)
    path = tmp_path / "cumulative.json"
    state = DeltaState(started_ns=0, max_series_per_app=20)
    snapshots = set()
    for t in range(1, 40):
        for n in range(t % 7 + 1):
            state.delta(key("shop" if n % 2 else "blog", f"/{n}-{t // 9}"), point(0, t, t * 10 + n))
        save_state(path, state)
        snapshots.add(state.snapshot_id)
        assert load_state(path).dumps() == state.dumps()
    assert len(snapshots) > 3  # compacted several times
    assert journal_path(path).stat().st_size <= path.stat().st_size * 2


def test_a_journal_of_an_older_snapshot_is_ignored(tmp_path: Path, monkeypatch) -> None:
    """A crash after a compaction's new snapshot, before its new journal: the old journal's lines
    are older than the snapshot (x at 20 there, at 30 in the snapshot)."""
    path = tmp_path / "cumulative.json"
    state = DeltaState(started_ns=0)
    state.delta(KEY, point(0, 10, 4))
    save_state(path, state)
    state.delta(KEY, point(0, 20, 9))
    save_state(path, state)
    old_journal = journal_path(path).read_bytes()
    state.delta(KEY, point(0, 30, 12))
    monkeypatch.setattr(delta_store, "MIN_COMPACT_BYTES", 0)
    save_state(path, state)  # compacts
    assert journal_path(path).read_bytes() != old_journal
    journal_path(path).write_bytes(old_journal)
    reloaded = load_state(path)
    assert reloaded.dumps() == state.dumps()
    assert counts(reloaded, KEY, point(0, 40, 13)) == [1]


def test_a_state_file_of_an_earlier_hub_loads(tmp_path: Path) -> None:
    path = tmp_path / "cumulative.json"
    x, y = [list(k) for k in (key("shop", "/x"), key("shop", "/y"))]
    old = {
        "started_ns": 5 * S,
        "series": [
            [x, [[1 * S, 10 * S, 4, 0.4, []], [1 * S, 20 * S, 9, 0.9, []]]],
            [y, [None, [6 * S, 20 * S, 3, 0.3, [[["p", 1], 3]]]]],  # started after the state: counted in full
        ],
    }
    path.write_text(json.dumps(old))
    state = load_state(path)
    assert len(state) == 2 and state.started_ns == 5 * S
    assert counts(state, key("shop", "/x"), point(1, 20, 9), point(1, 30, 10)) == [5, 1]
    assert counts(state, key("shop", "/y"), Cumulative(6 * S, 20 * S, 3, 0.3, ((("p", 1), 3),))) == [3]
    save_state(path, state)
    assert journal_path(path).exists() and load_state(path).dumps() == state.dumps()


def test_a_save_after_one_change_among_100_000_series_writes_little(tmp_path: Path) -> None:
    path = tmp_path / "cumulative.json"
    state = DeltaState(started_ns=0)
    buckets = [(i, 1) for i in range(3)]
    for n in range(100_000):
        state.delta(key("shop", f"/items/{n}"), point(0, 10, 3, buckets))
    save_state(path, state)  # the first save: the snapshot
    snapshot = path.stat().st_size
    journal = journal_path(path).stat().st_size
    state.delta(key("shop", "/items/7"), point(0, 20, 4, [*buckets[:-1], (2, 2)]))
    save_state(path, state)
    written = journal_path(path).stat().st_size - journal
    assert path.stat().st_size == snapshot  # no new snapshot
    assert 0 < written < snapshot / 10_000


def test_without_a_path_a_fresh_state_that_keeps_no_changes() -> None:
    state = load_state(None)
    for n in range(10):
        state.delta(key("shop", f"/{n}"), point(0, 10, 1))
    assert len(state) == 10 and not state.changed
