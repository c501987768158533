"""A full (or failing) disk under the queue: appends fail whole and are refused with UNAVAILABLE,
the processor waits and catches up, and once space returns nothing is lost or counted twice.

The disk is a real 2 MiB tmpfs (mounting needs root, as in CI); fsync failures, which tmpfs never
has, are injected."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from tallyhub.collector_processor import queue as queue_module
from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.auth import KeyRing, generate_key, hash_key
from tallyhub.collector_processor.receive.receiver import KIND_METRICS, Receiver, start_grpc_server
from tallyhub.collector_processor.store import Processor
from tallyhub.storage.writer import insert_batch
from tests.collector_processor.test_hostile_values import duration, export, totals

KEY = generate_key()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the disk; returns the file to delete to give them back."""
    filler = disk / "filler"
    with filler.open("ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def records(directory: Path) -> list[tuple[int, bytes]]:
    """What a restarted hub finds in the queue: (sequence number, payload) of every record."""
    queue = DurableQueue(directory)
    try:
        return [(r.seq, r.payload) for r in queue.next_batch(1000, 1 << 30, wait_s=0)]
    finally:
        queue.close()


def wait_until_empty(queue: DurableQueue, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while queue.depth() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert queue.depth() == 0


def test_an_append_on_a_full_disk_fails_whole_and_leaves_nothing_behind(disk: Path) -> None:
    queue = DurableQueue(disk / "queue")
    assert queue.append(KIND_METRICS, "shop", b"first", 1) == 1
    filler = fill(disk)
    segment_size = sum(p.stat().st_size for p in (disk / "queue").glob("*.seg"))
    with pytest.raises(OSError):
        queue.append(KIND_METRICS, "shop", b"refused" * 1000, 2)
    assert sum(p.stat().st_size for p in (disk / "queue").glob("*.seg")) == segment_size
    assert queue.status()["write errors"] == 1 and "No space left" in queue.status()["last write error"]
    filler.unlink()
    assert queue.append(KIND_METRICS, "shop", b"third", 3) == 2
    queue.close()
    assert records(disk / "queue") == [(1, b"first"), (2, b"third")]


def test_an_append_whose_fsync_fails_is_not_queued_and_its_batch_can_be_sent_again(tmp_path: Path, monkeypatch) -> None:
    queue = DurableQueue(tmp_path / "queue")
    assert queue.append(KIND_METRICS, "shop", b"kept", 1, batch_id="b-1") == 1
    real_fsync = os.fsync
    failures = iter([OSError(errno.EIO, "Input/output error")])

    def fsync(fd: int) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        real_fsync(fd)

    monkeypatch.setattr(queue_module.os, "fsync", fsync)
    with pytest.raises(OSError):
        queue.append(KIND_METRICS, "shop", b"lost", 2, batch_id="b-2")
    assert queue.depth() == 1
    assert queue.append(KIND_METRICS, "shop", b"resent", 3, batch_id="b-2") == 3  # not taken for a duplicate
    assert queue.append(KIND_METRICS, "shop", b"resent", 4, batch_id="b-2") is None  # this one is
    queue.close()
    assert records(tmp_path / "queue") == [(1, b"kept"), (3, b"resent")]


def test_the_hub_outlives_a_full_disk_and_catches_up_exactly(disk: Path, ch) -> None:
    queue = DurableQueue(disk / "queue")
    server, port = start_grpc_server(Receiver(KeyRing(lambda: {hash_key(KEY): "shop"}), queue), "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = MetricsServiceStub(channel)
    processor = Processor(
        queue,
        lambda tables, token: insert_batch(ch, tables, token),
        disk / "rejected",
        state_file=disk / "cumulative.json",
    )
    # Each export also carries an 8 KiB gauge, more than the slack in the segment's last page.
    padding = pb.Metric(name="padding", gauge={"data_points": [{"time_unix_nano": 1, "as_int": 1}]})
    padding.gauge.data_points[0].attributes.add(key="padding").value.string_value = "x" * 8192

    def send(n: int) -> None:
        request = export(duration(count=n), padding)
        stub.Export(request, metadata=[("x-tallyhub-app-key", KEY)], timeout=10)

    try:
        send(1)
        send(2)  # queued, not yet processed
        filler = fill(disk)
        with pytest.raises(grpc.RpcError) as refused:
            send(100)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE

        processor.start()  # cannot even note which batch it is inserting: waits, does not die
        deadline = time.monotonic() + 10
        while "data directory" not in processor.last_error and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "No space left on device" in processor.last_error
        assert processor._thread.is_alive() and queue.depth() == 2

        filler.unlink()
        send(4)
        wait_until_empty(queue)
        assert processor.last_error == ""
        send(8)
        wait_until_empty(queue)
    finally:
        processor.stop()
        channel.close()
        server.stop(None)
        queue.close()
    assert totals(ch, "shop") == {("/items", 200): 1 + 2 + 4 + 8}
    assert processor.stats.counts()["processor disk errors (retried)"] >= 1
