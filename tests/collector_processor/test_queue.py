"""The durable queue: what was appended survives restarts until acknowledged, exactly once."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from pathlib import Path

import pytest

from tallyhub.collector_processor import queue as queue_module
from tallyhub.collector_processor.queue import DurableQueue, QueueFull


def fill(queue: DurableQueue, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        queue.append(1, "app", f"payload-{i}".encode(), received_ns=i)


def payloads(records) -> list[str]:
    return [r.payload.decode() for r in records]


def test_records_come_back_in_order_with_their_app(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    q.append(1, "shop", b"x", received_ns=42)
    (record,) = q.next_batch(10, 1 << 20, wait_s=0)
    assert (record.seq, record.kind, record.app, record.payload, record.received_ns) == (1, 1, "shop", b"x", 42)


def test_unacknowledged_records_survive_a_restart(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    fill(q, 5)
    batch = q.next_batch(2, 1 << 20, wait_s=0)
    q.begin(batch)
    q.ack(batch)
    q.close()  # no clean shutdown needed: every append was fsynced
    q2 = DurableQueue(tmp_path)
    assert q2.depth() == 3
    assert payloads(q2.next_batch(10, 1 << 20, wait_s=0)) == ["payload-2", "payload-3", "payload-4"]
    q2.append(1, "app", b"new", received_ns=0)
    assert q2.next_batch(10, 1 << 20, wait_s=0)[-1].seq == 6


def test_batch_in_flight_at_a_crash_comes_back_identical(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    fill(q, 3)
    batch = q.next_batch(10, 1 << 20, wait_s=0)
    token = q.begin(batch)
    fill(q, 4, start=3)  # more arrives while the batch is being inserted; then a crash
    q.close()
    q2 = DurableQueue(tmp_path)
    again = q2.next_batch(100, 1 << 30, wait_s=0)
    assert payloads(again) == payloads(batch)
    assert q2.begin(again) == token  # same deduplication token: ClickHouse stores it once
    q2.ack(again)
    assert q2.depth() == 4


def test_a_torn_tail_is_cut_and_the_rest_kept(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    fill(q, 3)
    q.close()
    (segment,) = tmp_path.glob("*.seg")
    size = segment.stat().st_size
    with segment.open("r+b") as f:
        f.truncate(size - 3)  # the last write was torn by a crash (it was never acknowledged)
    q2 = DurableQueue(tmp_path)
    assert payloads(q2.next_batch(10, 1 << 20, wait_s=0)) == ["payload-0", "payload-1"]
    q2.append(1, "app", b"after", received_ns=0)
    q2.close()
    assert payloads(DurableQueue(tmp_path).next_batch(10, 1 << 20, wait_s=0)) == ["payload-0", "payload-1", "after"]


def test_garbage_appended_to_a_segment_is_ignored(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    fill(q, 2)
    q.close()
    (segment,) = tmp_path.glob("*.seg")
    with segment.open("ab") as f:
        f.write(b"\x00garbage that is not a record" * 3)
    assert payloads(DurableQueue(tmp_path).next_batch(10, 1 << 20, wait_s=0)) == ["payload-0", "payload-1"]


def test_segments_rotate_and_acknowledged_ones_are_deleted(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, segment_bytes=200)
    fill(q, 10)
    assert len(list(tmp_path.glob("*.seg"))) >= 3
    batch = q.next_batch(8, 1 << 20, wait_s=0)
    q.begin(batch)
    q.ack(batch)
    remaining = sorted(tmp_path.glob("*.seg"))
    assert len(remaining) == 1  # only the segment of records 9 and 10 is left
    q.close()
    assert payloads(DurableQueue(tmp_path, segment_bytes=200).next_batch(10, 1 << 20, wait_s=0)) == [
        "payload-8",
        "payload-9",
    ]


def test_batches_respect_record_and_byte_limits(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    fill(q, 10)
    assert len(q.next_batch(4, 1 << 20, wait_s=0)) == 4
    assert len(q.next_batch(100, 1, wait_s=0)) == 1  # always at least one record


def test_a_new_queue_has_a_new_identity(tmp_path: Path) -> None:
    a, b = DurableQueue(tmp_path / "a"), DurableQueue(tmp_path / "b")
    fill(a, 1)
    fill(b, 1)
    assert a.begin(a.next_batch(1, 1 << 20, 0)) != b.begin(b.next_batch(1, 1 << 20, 0))
    assert DurableQueue(tmp_path / "a").queue_id == a.queue_id


def test_a_batch_sent_again_is_queued_once_per_app(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    assert q.append(1, "shop", b"x", received_ns=time.time_ns(), batch_id="b1") == 1
    assert q.append(1, "shop", b"x", received_ns=time.time_ns(), batch_id="b1") is None
    assert q.append(1, "other", b"x", received_ns=time.time_ns(), batch_id="b1") == 2  # another app's b1
    assert q.append(1, "shop", b"y", received_ns=time.time_ns()) == 3  # no identity: no deduplication
    assert q.append(1, "shop", b"y", received_ns=time.time_ns()) == 4
    assert q.depth() == 4


def test_identities_are_remembered_across_restarts_and_deleted_segments(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, segment_bytes=100)  # one record per segment
    for i in range(3):
        q.append(1, "shop", b"x" * 60, received_ns=time.time_ns(), batch_id=f"b{i}")
    batch = q.next_batch(2, 1 << 20, wait_s=0)
    q.begin(batch)
    q.ack(batch)  # the segments of b0 and b1 are deleted: their identities go to batches.log
    assert len(list(tmp_path.glob("*.seg"))) == 1
    q.close()
    q2 = DurableQueue(tmp_path, segment_bytes=100)  # b0, b1 from the log; b2 from its live segment
    assert [q2.append(1, "shop", b"x", received_ns=time.time_ns(), batch_id=f"b{i}") for i in range(4)] == [
        None,
        None,
        None,
        4,
    ]


def test_identities_older_than_the_window_are_forgotten(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, segment_bytes=100, dedup_window_s=60)
    old = time.time_ns() - 61 * 10**9
    q.append(1, "shop", b"x" * 60, received_ns=old, batch_id="old")
    q.append(1, "shop", b"x" * 60, received_ns=time.time_ns(), batch_id="new")
    batch = q.next_batch(2, 1 << 20, wait_s=0)
    q.begin(batch)
    q.ack(batch)
    q.close()
    q2 = DurableQueue(tmp_path, segment_bytes=100, dedup_window_s=60)
    assert q2.append(1, "shop", b"x", received_ns=time.time_ns(), batch_id="new") is None
    assert q2.append(1, "shop", b"x", received_ns=time.time_ns(), batch_id="old") is not None
    assert b"old" not in (tmp_path / "batches.log").read_bytes()  # compacted at start


def test_the_batch_log_is_pruned_while_the_hub_runs(tmp_path: Path, monkeypatch) -> None:
    """A hub up for weeks: the log of processed identities stays about one window long, without
    a restart; identities inside the window are still known."""
    monkeypatch.setattr(queue_module, "LOG_SLACK_LINES", 20)
    q = DurableQueue(tmp_path, segment_bytes=100, dedup_window_s=60)
    for hour in range(10):  # ten hours of exports, ten per "hour"
        for i in range(10):
            received = time.time_ns() - (9 - hour) * 3600 * 10**9
            q.append(1, "shop", b"x" * 60, received_ns=received, batch_id=f"h{hour}-{i}")
        batch = q.next_batch(100, 1 << 20, wait_s=0)
        q.begin(batch)
        q.ack(batch)
        lines = (tmp_path / "batches.log").read_bytes().splitlines()
        assert len(lines) <= 2 * 10 + 20 + 10
    assert q.append(1, "shop", b"x", received_ns=time.time_ns(), batch_id="h9-3") is None  # in the window
    assert b"h0-" not in (tmp_path / "batches.log").read_bytes()


def test_at_most_so_many_identities_are_remembered_the_oldest_forgotten(tmp_path: Path, monkeypatch) -> None:
    """At hundreds of exports a second two hours of identities would take GBs: the cap bounds them."""
    monkeypatch.setattr(queue_module, "MAX_REMEMBERED_IDS", 5)
    q = DurableQueue(tmp_path, segment_bytes=100)
    for i in range(10):
        q.append(1, "shop", b"x" * 60, received_ns=time.time_ns(), batch_id=f"b{i}")
    batch = q.next_batch(100, 1 << 20, wait_s=0)
    q.begin(batch)
    q.ack(batch)
    assert q.append(1, "shop", b"x", received_ns=time.time_ns(), batch_id="b9") is None  # remembered
    assert q.append(1, "shop", b"x", received_ns=time.time_ns(), batch_id="b0") is not None  # forgotten
    q.close()
    monkeypatch.setattr(queue_module, "LOG_SLACK_LINES", 0)
    again = DurableQueue(tmp_path, segment_bytes=100)  # the log is compacted at start, to the cap too
    assert len((tmp_path / "batches.log").read_bytes().splitlines()) <= 5
    assert again.append(1, "shop", b"x", received_ns=time.time_ns(), batch_id="b8") is None


def test_records_of_the_previous_format_are_still_read(tmp_path: Path) -> None:
    body = struct.pack("<QQBH", 1, 42, 1, 4) + b"shop" + b"payload"
    (tmp_path / f"{1:020d}.seg").write_bytes(struct.pack("<4sII", b"THQ1", len(body), zlib.crc32(body)) + body)
    q = DurableQueue(tmp_path)
    (record,) = q.next_batch(10, 1 << 20, wait_s=0)
    assert (record.seq, record.app, record.payload, record.batch_id) == (1, "shop", b"payload", "")
    assert q.append(1, "shop", b"z", received_ns=0, batch_id="b") == 2


def test_concurrent_appends_share_fsyncs_and_lose_nothing(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, segment_bytes=4096)  # rotations in the middle of it, too

    def producer(t: int) -> None:
        for i in range(50):
            assert q.append(1, "shop", f"{t}-{i}".encode() * 10, received_ns=0) is not None

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = q.next_batch(1000, 1 << 30, wait_s=0)
    assert [r.seq for r in records] == list(range(1, 401))
    assert sorted(r.payload for r in records) == sorted(f"{t}-{i}".encode() * 10 for t in range(8) for i in range(50))
    assert 1 <= q.fsyncs <= 400
    q.close()
    assert DurableQueue(tmp_path).depth() == 400  # all of it durable


def test_a_full_queue_refuses_until_the_processor_catches_up(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, segment_bytes=300, max_bytes=1000)
    for _ in range(4):
        q.append(1, "shop", b"x" * 200, received_ns=0)
    with pytest.raises(QueueFull):
        q.append(1, "shop", b"x" * 200, received_ns=0)
    batch = q.next_batch(3, 1 << 30, wait_s=0)
    q.begin(batch)
    q.ack(batch)  # their segments are deleted
    assert q.append(1, "shop", b"x" * 200, received_ns=0) == 5
