"""Where encoded batches wait until the hub has acknowledged them: in memory, or in a directory.

A batch is an encoded OTLP export (metrics, or logs for the start-up event) with a stable
identity, sent as ``x-tallyhub-batch-id`` so that the hub stores it once however often it is
sent. Both spools are bounded in bytes and drop their oldest batches first when full.

The directory spool survives restarts and crashes, and several worker processes may share one
directory: a batch is a file written under a temporary name and renamed into place (never seen
half-written), a worker sends a file only while it holds an exclusive ``flock`` on it (another
worker skips it), and a file that is truncated or corrupt is moved aside and reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

logger = logging.getLogger("tallyhub")

METRICS = "metrics"
LOGS = "logs"
KINDS = (METRICS, LOGS)

DEFAULT_MEMORY_BYTES = 16 * 1024 * 1024
DEFAULT_DISK_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class Batch:
    id: str
    """32 hex digits, unique per batch; the hub deduplicates on it."""
    kind: str
    """``metrics`` or ``logs``: which OTLP service takes it."""
    created_ns: int
    """Wall-clock time of its collection: the retry window counts from here."""
    points: int
    """Data points (or log records) in it: what is lost if it is dropped."""
    payload: bytes


class Spool(Protocol):
    def put(self, batch: Batch) -> list[Batch]:
        """Keep ``batch``; returns the oldest batches dropped to stay under the byte cap."""

    def batches(self) -> Iterator[Batch]:
        """The batches, oldest first."""

    def claim(self, batch: Batch) -> contextlib.AbstractContextManager[bool]:
        """While sending ``batch``: True if this process may send it (no other process is)."""

    def remove(self, batch: Batch) -> None:
        """Forget a batch (delivered, refused for good, or expired)."""

    def after_fork(self) -> None:
        """In a forked child: start without the parent's in-memory state."""


class MemorySpool:
    """Batches in a list, at most ``max_bytes`` of payload."""

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        self.max_bytes = max_bytes
        self._batches: list[Batch] = []
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, batch: Batch) -> list[Batch]:
        with self._lock:
            self._batches.append(batch)
            self._bytes += len(batch.payload)
            dropped = []
            while self._bytes > self.max_bytes and self._batches:
                oldest = self._batches.pop(0)
                self._bytes -= len(oldest.payload)
                dropped.append(oldest)
            return dropped

    def batches(self) -> Iterator[Batch]:
        with self._lock:
            snapshot = list(self._batches)
        return iter(snapshot)

    @contextlib.contextmanager
    def claim(self, batch: Batch) -> Iterator[bool]:
        yield True  # one sending thread per process

    def remove(self, batch: Batch) -> None:
        with self._lock:
            if batch in self._batches:
                self._batches.remove(batch)
                self._bytes -= len(batch.payload)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def after_fork(self) -> None:
        self._batches = []
        self._bytes = 0
        self._lock = threading.Lock()


_MAGIC = b"THS1"
_HEAD = struct.Struct("<4sIQII")  # magic, crc32 of the payload, created (ns), points, payload length
_SUFFIX = ".batch"


class DiskSpool:
    """Batches as files ``<created_ns>-<id>.<kind>.batch`` in ``directory``, at most
    ``max_bytes`` in all (counting every worker's files)."""

    def __init__(self, directory: Path | str, max_bytes: int = DEFAULT_DISK_BYTES) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self.corrupt = 0
        """Files found damaged and moved aside (``*.corrupt``), by this process."""

    def _path(self, batch: Batch) -> Path:
        return self.directory / f"{batch.created_ns:020d}-{batch.id}.{batch.kind}{_SUFFIX}"

    def put(self, batch: Batch) -> list[Batch]:
        path = self._path(batch)
        tmp = self.directory / f".{path.name}.{os.getpid()}.tmp"
        head = _HEAD.pack(_MAGIC, zlib.crc32(batch.payload), batch.created_ns, batch.points, len(batch.payload))
        with tmp.open("wb") as f:
            f.write(head + batch.payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return self._enforce_cap()

    def _files(self) -> list[Path]:
        return sorted(p for p in self.directory.glob(f"*{_SUFFIX}") if not p.name.startswith("."))

    def _enforce_cap(self) -> list[Batch]:
        files = []
        total = 0
        for path in self._files():
            with contextlib.suppress(FileNotFoundError):  # another worker removed it meanwhile
                size = path.stat().st_size
                files.append((path, size))
                total += size
        dropped = []
        for path, size in files:
            if total <= self.max_bytes:
                break
            batch = self._load(path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                total -= size
                if batch is not None:
                    dropped.append(batch)
        return dropped

    def batches(self) -> Iterator[Batch]:
        for path in self._files():
            batch = self._load(path)
            if batch is not None:
                yield batch

    def _load(self, path: Path) -> Batch | None:
        """The batch in a file; None if it is gone, or damaged (then moved aside and reported)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        name = path.name[: -len(_SUFFIX)]
        stem, _, kind = name.rpartition(".")
        _, _, batch_id = stem.partition("-")
        try:
            magic, crc, created_ns, points, length = _HEAD.unpack_from(data)
            payload = data[_HEAD.size :]
            if magic != _MAGIC or len(payload) != length or zlib.crc32(payload) != crc or kind not in KINDS:
                raise ValueError("bad header or checksum")
        except (struct.error, ValueError) as exc:
            self._set_aside(path, exc)
            return None
        return Batch(batch_id, kind, created_ns, points, payload)

    def _set_aside(self, path: Path, exc: Exception) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path.with_suffix(".corrupt"))
            self.corrupt += 1
            logger.error(
                "tallyhub: the spooled batch %s is truncated or corrupt (%s); moved aside as %s, not sent",
                path.name,
                exc,
                path.with_suffix(".corrupt").name,
            )

    @contextlib.contextmanager
    def claim(self, batch: Batch) -> Iterator[bool]:
        try:
            fd = os.open(self._path(batch), os.O_RDONLY)
        except FileNotFoundError:  # delivered by another worker meanwhile
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another worker is sending it
                yield False
                return
            # Between listing and locking, another worker may have sent and removed it.
            yield os.path.exists(self._path(batch))
        finally:
            os.close(fd)

    def remove(self, batch: Batch) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(batch).unlink()

    def after_fork(self) -> None:
        pass  # nothing in memory: the files are shared on purpose
