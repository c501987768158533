"""A durable on-disk queue between the receiver and the processor.

An export is acknowledged to the client only after ``append`` has written and fsynced it; a
record leaves the queue only after ``ack``, which the processor calls once ClickHouse has its
rows. Layout of the queue directory:

- ``NNNNNNNNNNNNNNNNNNNN.seg``: segments of records, named by the sequence number of their
  first record. A record is ``magic | length | crc32 | body``; a torn record at the end of the
  last segment (a crash mid-write, never acknowledged) is cut off at the next start.
- ``cursor.json``: the last acknowledged sequence number, and the batch being inserted (so that
  after a crash the same batch, with the same deduplication token, is inserted again).
- ``id``: a random identity of this queue, part of every deduplication token, so a new queue
  never collides with tokens of an old one in ClickHouse's deduplication window.
- ``batches.log``: the client batch identities (``x-tallyhub-batch-id``) of records whose
  segments were deleted, one JSON line each, kept for ``dedup_window_s``. With the identities
  in the live segments, they let ``append`` refuse a batch it already has: a client that
  resends a batch whose acknowledgement it never got does not get it stored twice, even across a
  restart or a kill -9 of the hub. A segment's identities are written (and fsynced) here before
  the segment is deleted, so each identity is always in one of the two places.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import uuid
import zlib
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tallyhub.collector_processor.durable_files import fsync_dir, write_atomically

logger = logging.getLogger("tallyhub.queue")

_MAGIC_V1 = b"THQ1"  # records without a batch identity (hubs before it), still read
_MAGIC = b"THQ2"
_HEADER = struct.Struct("<4sII")  # magic, body length, crc32 of body
_BODY_HEAD_V1 = struct.Struct("<QQBH")  # sequence number, received at (ns), kind, length of app
_BODY_HEAD = struct.Struct("<QQBHB")  # ... and the length of the batch identity
SEGMENT_BYTES = 64 * 1024 * 1024
MAX_BYTES = 2 * 1024 * 1024 * 1024
"""The queue's cap on disk by default: beyond it, exports are refused (UNAVAILABLE, retry later)."""
DEDUP_WINDOW_S = 2 * 3600.0
"""How long a batch identity is remembered: longer than any client's retry window (1 h by default)."""
MAX_REMEMBERED_IDS = 250_000
"""Batch identities remembered at most, the oldest forgotten first: the window's memory stays bounded
(~100 MB) even at hundreds of exports a second; a real deployment (one export a minute per app
instance) stays within it with thousands of instances."""
MAX_BATCH_ID = 64


class QueueFull(Exception):
    """The queue is at its cap: the processor is behind (ClickHouse down or slow)."""


@dataclass(frozen=True)
class Record:
    seq: int
    received_ns: int
    kind: int
    app: str
    payload: bytes
    batch_id: str = ""


@dataclass(frozen=True)
class _Location:
    seq: int
    segment: Path
    offset: int
    length: int
    received_ns: int = 0
    batch: tuple[str, str] | None = None
    """(app, batch identity), when the client sent one."""


LOG_SLACK_LINES = 10_000
"""Lines of ``batches.log`` beyond twice the identities in the window before it is rewritten."""


class DurableQueue:
    """Append from many threads, consume from one."""

    def __init__(
        self,
        directory: Path,
        segment_bytes: int = SEGMENT_BYTES,
        dedup_window_s: float = DEDUP_WINDOW_S,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.dedup_window_s = dedup_window_s
        directory.mkdir(parents=True, exist_ok=True)
        id_file = directory / "id"
        if not id_file.exists():
            write_atomically(id_file, uuid.uuid4().hex.encode())
        self.queue_id = id_file.read_text().strip()
        self._cursor_file = directory / "cursor.json"
        cursor = json.loads(self._cursor_file.read_text()) if self._cursor_file.exists() else {}
        self._acked: int = cursor.get("acked", 0)
        self._inflight: tuple[int, int] | None = tuple(cursor["inflight"]) if cursor.get("inflight") else None
        self._pending: deque[_Location] = deque()
        self._lock = threading.Lock()
        self._available = threading.Condition(self._lock)
        self._next_seq = self._acked + 1
        self._segment: Path | None = None
        self._file: Any = None  # unbuffered: a failed write leaves nothing behind to be written later
        self._broken = False  # the current segment's tail could not be repaired: the next append starts a new one
        self._discarded: set[int] = set()  # records whose fsync failed: their appends raise
        self.write_errors = 0
        self.last_write_error = ""
        self._sync_lock = threading.Lock()
        self._unsynced: list[_Location] = []  # written, not yet fsynced: not given to the processor yet
        self._closing: list[Any] = []
        self._segment_bytes: dict[Path, int] = {}
        self._bytes = 0
        self.fsyncs = 0
        # (app, batch identity) -> received at (ns), oldest first: forgotten from the front in O(1)
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._segment_ids: dict[Path, list[tuple[int, str, str]]] = {}
        self._batches_log = directory / "batches.log"
        self._load_batch_log()
        self._recover()

    # -- start-up ---------------------------------------------------------------------------

    def _recover(self) -> None:
        segments = sorted(self.directory.glob("*.seg"))
        for index, segment in enumerate(segments):
            valid_end = self._scan(segment)
            if valid_end < segment.stat().st_size:
                if index == len(segments) - 1:
                    logger.warning(
                        "queue: cut a torn record (never acknowledged) off the end of %s at byte %d",
                        segment.name,
                        valid_end,
                    )
                    with segment.open("r+b") as f:
                        f.truncate(valid_end)
                        os.fsync(f.fileno())
                else:
                    logger.error(
                        "queue: %s is damaged after byte %d; its later records are skipped", segment, valid_end
                    )
        for segment in segments:
            self._segment_bytes[segment] = segment.stat().st_size
        self._bytes = sum(self._segment_bytes.values())
        if segments:
            self._open_segment(segments[-1])
        self._synced_seq = self._next_seq - 1

    def _scan(self, segment: Path) -> int:
        """Index the unacknowledged records of a segment; returns the end of its valid part."""
        data = segment.read_bytes()
        offset = 0
        while offset + _HEADER.size <= len(data):
            magic, length, crc = _HEADER.unpack_from(data, offset)
            body_start = offset + _HEADER.size
            body = data[body_start : body_start + length]
            if magic not in (_MAGIC, _MAGIC_V1) or len(body) != length or zlib.crc32(body) != crc:
                break
            record = _decode_body(body, magic)
            seq = record.seq
            if record.batch_id:
                self._remember(record.app, record.batch_id, record.received_ns, segment)
            if seq > self._acked:
                self._pending.append(_Location(seq, segment, offset, _HEADER.size + length, record.received_ns))
            self._next_seq = max(self._next_seq, seq + 1)
            offset = body_start + length
        return offset

    def _open_segment(self, path: Path) -> None:
        if self._file is not None:
            self._file.close()
        self._segment = path
        self._file = path.open("ab", buffering=0)

    # -- producer side ----------------------------------------------------------------------

    def append(self, kind: int, app: str, payload: bytes, received_ns: int, batch_id: str = "") -> int | None:
        """Write a record and make it durable; returns its sequence number, or None if the queue
        already has the app's batch ``batch_id`` (within the dedup window). Raises ``QueueFull``
        when the queue holds ``max_bytes``, OSError if the disk fails.

        Group commit: appends from many threads write under a lock, then share fsyncs — one
        fsync makes durable every record written before it began, so under load one fsync
        serves many exports instead of one each.
        """
        app_bytes = app.encode()
        id_bytes = batch_id.encode()
        if len(id_bytes) > MAX_BATCH_ID:
            raise ValueError(f"a batch identity has at most {MAX_BATCH_ID} bytes")
        with self._lock:
            if batch_id and (app, batch_id) in self._seen:
                return None
            seq = self._next_seq
            head = _BODY_HEAD.pack(seq, received_ns, kind, len(app_bytes), len(id_bytes))
            body = head + app_bytes + id_bytes + payload
            record = _HEADER.pack(_MAGIC, len(body), zlib.crc32(body)) + body
            if self._bytes + len(record) > self.max_bytes:
                raise QueueFull(f"the queue holds {self._bytes} bytes, its cap is {self.max_bytes}")
            offset = self._segment_bytes.get(self._segment, 0) if self._segment else 0
            if self._file is None or self._broken or offset + len(record) > self.segment_bytes:
                self._failing(self._rotate, self.directory / f"{seq:020d}.seg")
                offset = 0
            assert self._file is not None and self._segment is not None
            self._failing(self._write, record, offset)
            self._next_seq = seq + 1
            self._bytes += len(record)
            self._segment_bytes[self._segment] = self._segment_bytes.get(self._segment, 0) + len(record)
            if batch_id:
                self._remember(app, batch_id, received_ns, self._segment)
            batch = (app, batch_id) if batch_id else None
            self._unsynced.append(_Location(seq, self._segment, offset, len(record), received_ns, batch))
        self._sync(seq)
        return seq

    def _failing(self, operation: Any, *args: Any) -> None:
        """Run a disk operation of ``append``, counting and remembering its failure (for `tallyhub status`)."""
        try:
            operation(*args)
        except OSError as exc:
            self.write_errors += 1
            self.last_write_error = f"{type(exc).__name__}: {exc}"
            raise

    def _write(self, record: bytes, offset: int) -> None:
        """Under the lock: the whole record at ``offset`` (the segment's end), or nothing.

        A failed write (disk full, read-only, I/O error) is cut off again at once, so that neither
        the next record nor a restart builds on a partial one; if even that fails, the next append
        starts a new segment (at a restart, the torn end of a segment that is not the last is
        skipped, and the segments after it are read).
        """
        assert self._file is not None
        view = memoryview(record)
        try:
            while view:
                view = view[self._file.write(view) :]
        except OSError:
            try:
                os.ftruncate(self._file.fileno(), offset)
            except OSError:
                self._broken = True
            raise

    def _rotate(self, path: Path) -> None:
        """Under the lock: a new segment. The old one's records are made durable now; its file
        is closed by the next sync (which may be using it right now). Nothing changes if it fails."""
        new = path.open("ab", buffering=0)
        try:
            if self._file is not None:
                os.fsync(self._file.fileno())
            fsync_dir(self.directory)
        except OSError:
            new.close()
            path.unlink(missing_ok=True)
            raise
        if self._file is not None:
            self._closing.append(self._file)
        self._segment, self._file, self._broken = path, new, False

    def _sync(self, seq: int) -> None:
        """Return once record ``seq`` is durable, fsyncing (for everyone) if no one did yet;
        raise OSError if the fsync that was to make it durable failed."""
        while True:
            with self._sync_lock:
                if seq in self._discarded:
                    self._discarded.discard(seq)
                    raise OSError(f"queue: record {seq} could not be made durable (fsync failed); not queued")
                if self._synced_seq >= seq:
                    return  # another append's fsync covered this record
                with self._lock:
                    written, self._unsynced = self._unsynced, []
                    assert self._file is not None and self._segment is not None
                    file, segment = self._file, self._segment
                try:
                    os.fsync(file.fileno())
                except OSError as exc:
                    with self._lock:
                        self.write_errors += 1
                        self.last_write_error = f"fsync: {type(exc).__name__}: {exc}"
                        self._discard(written, file, segment)
                    continue
                with self._lock:
                    self._synced(written)
                    closing, self._closing = self._closing, []
                for old in closing:
                    old.close()

    def _synced(self, written: list[_Location]) -> None:
        """Under the lock: these records are durable; hand them to the processor."""
        self._pending.extend(written)
        if written:
            self._synced_seq = written[-1].seq
        self.fsyncs += 1
        self._available.notify_all()

    def _discard(self, written: list[_Location], file: Any, segment: Path) -> None:
        """Under both locks, after a failed fsync of ``segment``: its unsynced records are not
        durable (after a failed fsync, Linux may drop the pages it could not write), so they are
        not queued: their appends fail (clients retry), their batch identities are forgotten, and
        the segment is cut back to before them. Records of other segments wait for the next fsync.
        """
        suspect = [loc for loc in (*written, *self._unsynced) if loc.segment == segment]
        self._synced([loc for loc in written if loc.segment != segment])  # older segments: fsynced at rotation
        self._unsynced = [loc for loc in self._unsynced if loc.segment != segment]  # newer: the next fsync
        if not suspect:
            return
        for loc in suspect:
            self._discarded.add(loc.seq)
            self._bytes -= loc.length
            if loc.batch is not None:
                self._seen.pop(loc.batch, None)
        start = min(loc.offset for loc in suspect)
        self._segment_bytes[segment] = start
        forgotten = {loc.batch for loc in suspect}
        self._segment_ids[segment] = [e for e in self._segment_ids.get(segment, []) if e[1:] not in forgotten]
        try:
            os.ftruncate(file.fileno(), start)
        except OSError:
            logger.error(
                "queue: could not cut records whose fsync failed off %s: after a restart they may be stored "
                "although their clients were told to retry",
                segment.name,
            )
        self._broken = True  # whatever happened to this file, new records go to a new segment

    # -- consumer side ----------------------------------------------------------------------

    def depth(self) -> int:
        with self._lock:
            return len(self._pending)

    def status(self) -> dict[str, int | float | str]:
        """Depth, bytes on disk, the cap, fsyncs, and the lag: how long the oldest queued export waits."""
        with self._lock:
            oldest = self._pending[0].received_ns if self._pending else 0
            return {
                "queued exports": len(self._pending),
                "queued bytes": self._bytes,
                "cap bytes": self.max_bytes,
                "fsyncs": self.fsyncs,
                "lag s": round((time.time_ns() - oldest) / 1e9, 3) if oldest else 0.0,
                "write errors": self.write_errors,
                "last write error": self.last_write_error,
            }

    def next_batch(self, max_records: int, max_bytes: int, wait_s: float) -> list[Record]:
        """The oldest unacknowledged records (waiting up to ``wait_s`` for one).

        After a crash, the batch that was being inserted comes back exactly as it was.
        """
        with self._lock:
            if not self._pending:
                self._available.wait(wait_s)
            if self._inflight is not None:
                first, last = self._inflight
                chosen = [loc for loc in self._pending if first <= loc.seq <= last]
                if not chosen:  # its records are gone (a damaged segment): plan anew
                    self._inflight = None
            if self._inflight is None:
                chosen, size = [], 0
                for loc in self._pending:
                    if chosen and (len(chosen) >= max_records or size + loc.length > max_bytes):
                        break
                    chosen.append(loc)
                    size += loc.length
        return [_read(loc) for loc in chosen]

    def following(self, seq: int, max_records: int, max_bytes: int) -> list[Record]:
        """The records queued after ``seq`` (the last of the batch being inserted), at most as many
        as ``next_batch`` takes, without waiting: the next batch, read ahead."""
        with self._lock:
            chosen: list[_Location] = []
            size = 0
            for loc in self._pending:
                if loc.seq <= seq:
                    continue
                if chosen and (len(chosen) >= max_records or size + loc.length > max_bytes):
                    break
                chosen.append(loc)
                size += loc.length
        return [_read(loc) for loc in chosen]

    def begin(self, batch: list[Record]) -> str:
        """Record that ``batch`` is about to be inserted; returns its deduplication token."""
        first, last = batch[0].seq, batch[-1].seq
        with self._lock:
            self._write_cursor(self._acked, (first, last))  # first: a failure changes nothing
            self._inflight = (first, last)
        return f"{self.queue_id}:{first}-{last}"

    def ack(self, batch: list[Record]) -> None:
        """ClickHouse has the batch: release it, and delete segments that hold nothing pending."""
        last = batch[-1].seq
        with self._lock:
            self._write_cursor(last, None)  # first: a failure changes nothing, the batch is stored again (deduplicated)
            self._acked = last
            self._inflight = None
            while self._pending and self._pending[0].seq <= last:
                self._pending.popleft()
            live = {loc.segment for loc in (*self._pending, *self._unsynced)} | {self._segment}
            done = [segment for segment in self.directory.glob("*.seg") if segment not in live]
            ids = [entry for segment in done for entry in self._segment_ids.get(segment, [])]
            if ids:  # before the segments go: each identity stays in one durable place
                self._log_batch_ids(ids)
            self._forget_expired()
            for segment in done:
                self._segment_ids.pop(segment, None)
                self._bytes -= self._segment_bytes.pop(segment, 0)
        for segment in done:
            try:
                segment.unlink(missing_ok=True)
            except OSError as exc:  # deleted at the next acknowledgement, or the next start
                logger.warning("queue: could not delete the processed segment %s: %s", segment.name, exc)

    # -- batch identities -------------------------------------------------------------------

    def _remember(self, app: str, batch_id: str, received_ns: int, segment: Path) -> None:
        self._seen[app, batch_id] = received_ns
        self._segment_ids.setdefault(segment, []).append((received_ns, app, batch_id))

    def _load_batch_log(self) -> None:
        """Read the identities still inside the window, and rewrite the log with only those."""
        for received_ns, app, batch_id in self._compact_batch_log():
            self._seen[app, batch_id] = received_ns

    def _compact_batch_log(self) -> list[tuple[int, str, str]]:
        """Rewrite the log with only the identities still inside the window; returns them."""
        self._log_lines = 0
        if not self._batches_log.exists():
            return []
        oldest = time.time_ns() - int(self.dedup_window_s * 1e9)
        kept, lines = [], []
        for line in self._batches_log.read_bytes().splitlines():
            try:
                received_ns, app, batch_id = json.loads(line)
            except (ValueError, TypeError):  # a line torn by a crash: its segment was not deleted
                continue
            if received_ns >= oldest:
                kept.append((received_ns, app, batch_id))
                lines.append(line + b"\n")
        newest = sorted(zip(kept, lines, strict=True))[-MAX_REMEMBERED_IDS:]  # oldest first, as _seen
        kept, lines = [entry for entry, _ in newest], [line for _, line in newest]
        write_atomically(self._batches_log, b"".join(lines))
        self._log_lines = len(lines)
        return kept

    def _log_batch_ids(self, ids: list[tuple[int, str, str]]) -> None:
        with self._batches_log.open("ab") as f:
            f.write(b"".join(json.dumps(list(entry)).encode() + b"\n" for entry in sorted(ids)))
            f.flush()
            os.fsync(f.fileno())
        self._log_lines += len(ids)
        # Pruned while running, not only at start: a hub up for weeks keeps a log of about one window.
        if self._log_lines > 2 * len(self._seen) + LOG_SLACK_LINES:
            self._compact_batch_log()

    def _forget_expired(self) -> None:
        oldest = time.time_ns() - int(self.dedup_window_s * 1e9)
        while self._seen:  # in arrival order: stop at the first young one, once within the cap
            key = next(iter(self._seen))
            if self._seen[key] >= oldest and len(self._seen) <= MAX_REMEMBERED_IDS:
                break
            del self._seen[key]

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _write_cursor(self, acked: int, inflight: tuple[int, int] | None) -> None:
        cursor = {"acked": acked, "inflight": list(inflight) if inflight else None}
        write_atomically(self._cursor_file, json.dumps(cursor).encode())


def _read(loc: _Location) -> Record:
    with loc.segment.open("rb") as f:
        f.seek(loc.offset)
        data = f.read(loc.length)
    return _decode_body(data[_HEADER.size :], data[:4])


def _decode_body(body: bytes, magic: bytes) -> Record:
    if magic == _MAGIC_V1:
        seq, received_ns, kind, app_length = _BODY_HEAD_V1.unpack_from(body)
        start, id_length = _BODY_HEAD_V1.size, 0
    else:
        seq, received_ns, kind, app_length, id_length = _BODY_HEAD.unpack_from(body)
        start = _BODY_HEAD.size
    app = body[start : start + app_length].decode()
    batch_id = body[start + app_length : start + app_length + id_length].decode()
    return Record(seq, received_ns, kind, app, body[start + app_length + id_length :], batch_id)
