"""The durable queue: what was appended survives restarts until acknowledged, exactly once."""

from __future__ import annotations

from pathlib import Path

from tallyhub.collector_processor.queue import DurableQueue


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
