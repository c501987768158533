"""The spools: bounded, oldest dropped first; on disk: survives a restart, shared by processes,
damaged files set aside."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path

import pytest

from tallyhub.instrumentation.sender import channel_target
from tallyhub.instrumentation.spool import Batch, DiskSpool, MemorySpool


def batch(n: int, size: int = 100, kind: str = "metrics") -> Batch:
    return Batch(f"{n:032x}", kind, 1_000 + n, n, bytes([n % 256]) * size)


@pytest.mark.parametrize(
    "make", [lambda tmp: MemorySpool(max_bytes=350), lambda tmp: DiskSpool(tmp, max_bytes=350 + 3 * 24)]
)
def test_the_oldest_batches_are_dropped_to_stay_under_the_cap(tmp_path: Path, make) -> None:
    spool = make(tmp_path)
    assert [spool.put(batch(n)) for n in range(3)] == [[], [], []]
    assert spool.put(batch(3)) == [batch(0)]
    assert spool.put(batch(4, size=200)) == [batch(1), batch(2)]
    assert list(spool.batches()) == [batch(3), batch(4, size=200)]
    spool.remove(batch(3))
    assert list(spool.batches()) == [batch(4, size=200)]


def test_a_disk_spool_survives_a_restart(tmp_path: Path) -> None:
    DiskSpool(tmp_path).put(batch(1, kind="logs"))
    DiskSpool(tmp_path).put(batch(2))
    assert list(DiskSpool(tmp_path).batches()) == [batch(1, kind="logs"), batch(2)]
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@pytest.mark.parametrize(
    "damage",
    [lambda data: data[:-10], lambda data: data[:5], lambda data: data[:30] + b"X" + data[31:], lambda data: b""],
    ids=["truncated payload", "truncated header", "flipped byte", "empty"],
)
def test_a_damaged_file_is_set_aside_and_reported_not_a_crash(tmp_path: Path, damage, caplog) -> None:
    spool = DiskSpool(tmp_path)
    spool.put(batch(1))
    spool.put(batch(2))
    first = sorted(tmp_path.glob("*.batch"))[0]
    first.write_bytes(damage(first.read_bytes()))
    with caplog.at_level(logging.ERROR, logger="tallyhub"):
        assert list(spool.batches()) == [batch(2)]
    assert spool.corrupt == 1
    assert first.with_suffix(".corrupt").exists() and not first.exists()
    assert "truncated or corrupt" in caplog.text


def _hold_claim(directory: str, ready, release) -> None:
    spool = DiskSpool(directory)
    with spool.claim(batch(1)) as mine:
        assert mine
        ready.set()
        release.wait(10)


def test_a_batch_another_process_is_sending_is_skipped(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.put(batch(1))
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    worker = context.Process(target=_hold_claim, args=(str(tmp_path), ready, release))
    worker.start()
    try:
        assert ready.wait(10)
        with spool.claim(batch(1)) as mine:
            assert not mine  # the other worker holds it
    finally:
        release.set()
        worker.join(10)
    assert worker.exitcode == 0
    with spool.claim(batch(1)) as mine:
        assert mine
    spool.remove(batch(1))
    with spool.claim(batch(1)) as mine:
        assert not mine  # delivered by someone: gone


def test_endpoints_and_tls(monkeypatch) -> None:
    assert channel_target("http://127.0.0.1:4317") == ("127.0.0.1:4317", False)
    assert channel_target("https://hub.example.com:4317") == ("hub.example.com:4317", True)
    assert channel_target("hub:4317") == ("hub:4317", True)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    assert channel_target("hub:4317") == ("hub:4317", False)
