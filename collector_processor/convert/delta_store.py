"""The cumulative series' state (``DeltaState``) on disk: a snapshot and a journal of changes, so
that a save costs what changed since the last one, not the whole state.

- ``cumulative.json`` (the path given): a snapshot, ``DeltaState.dumps()`` with a random
  ``snapshot_id``. Earlier hubs wrote their whole state there in the same format (without the
  id): it still loads.
- ``cumulative.json.journal``: a first line ``{"snapshot_id": ...}`` naming its snapshot, then one
  JSON line per save: the series updated, the series forgotten (evicted or expired) and the
  watermarks raised since the save before (``DeltaState.dumps_changes()``), fsynced before
  ``save_state`` returns. Loading applies the lines in order over the snapshot.
- Forgotten series are journalled because a series updated, then evicted before a save would
  otherwise come back at the next load with the values of its last journal line: stale, so that
  its next point would count again what was counted since. With the line (and the watermark
  raised in the same line), it comes back as a baseline, as it would have without a restart.
- A save that never returned (a crash, a failed write) leaves at most a torn last line, of a
  batch never acknowledged (replayed: ``DeltaState`` gives a replayed point the same delta): it is
  ignored, and the next save starts a new snapshot rather than append after it. Any other line
  that cannot be read makes the whole state unreadable (a state with stale series would count
  twice; a fresh one only makes the first point of each running series a baseline).
- Compaction: when the journal outgrows the snapshot (and ``MIN_COMPACT_BYTES``), the save writes
  a new snapshot (temporary file, fsync, rename, fsync of the directory) and then a new journal.
  A crash in between leaves a journal that names the old snapshot: it is ignored, the new
  snapshot has everything. So the disk holds at most about twice the state, and a change is
  written at most about twice over (once in the journal, once in a snapshot), amortised.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import BinaryIO

from tallyhub.collector_processor.convert.cumulative import DeltaState
from tallyhub.collector_processor.durable_files import fsync_dir, write_synced

logger = logging.getLogger("tallyhub.processor")

MIN_COMPACT_BYTES = 4 * 1024 * 1024
"""A journal smaller than this is not compacted, however small the snapshot."""


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


def load_state(path: Path | None) -> DeltaState:
    """The state saved by the last run; a fresh one if there is none (or it cannot be read: then
    the first point of each series already running is only a baseline). Without a path, a state
    that is never saved."""
    if path is None:
        return DeltaState(started_ns=time.time_ns(), track_changes=False)
    if path.exists():
        try:
            state = DeltaState.loads(path.read_bytes())
            _replay(journal_path(path), state)
            return state
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("the cumulative-series state %s cannot be read (%s); starting afresh", path, exc)
    return DeltaState(started_ns=time.time_ns())


def save_state(path: Path, deltas: DeltaState) -> None:
    """Make ``deltas`` durable: returns once its changes are fsynced. On OSError they stay marked
    as changed (the next save writes them), and nothing torn is left where a load would read it."""
    try:
        with journal_path(path).open("r+b") as f:
            end = f.seek(0, os.SEEK_END)
            if _continues(f, end, deltas.snapshot_id) and end <= max(path.stat().st_size, MIN_COMPACT_BYTES):
                _append(f, end, deltas.dumps_changes() + b"\n")
                deltas.saved()
                return
    except FileNotFoundError:  # no journal (a state never saved, or an earlier hub's), or no snapshot
        pass
    _compact(path, deltas)


def _replay(journal: Path, state: DeltaState) -> None:
    try:
        data = journal.read_bytes()
    except FileNotFoundError:
        return
    *lines, torn = data.split(b"\n")
    if not lines:
        return  # a journal whose first line was never written whole: its compaction did not finish
    header = json.loads(lines[0])
    if not isinstance(header, dict):
        raise ValueError(f"{journal} does not start with a header")
    if state.snapshot_id is None or header.get("snapshot_id") != state.snapshot_id:
        logger.info("ignoring %s: it continues an older snapshot (a compaction was interrupted)", journal)
        return
    for line in lines[1:]:
        state.apply_changes(line)
    if torn:
        logger.warning("%s: ignoring a torn last line (%d bytes, of a save that never returned)", journal, len(torn))


def _continues(f: BinaryIO, end: int, snapshot_id: str | None) -> bool:
    """Whether the journal open in ``f`` is the one of ``snapshot_id``'s snapshot, and ends with a
    whole line (not a torn one that a line appended now would be glued to)."""
    if snapshot_id is None:
        return False
    f.seek(0)
    header = f.readline()
    if header != _header(snapshot_id):
        return False
    f.seek(end - 1)
    return f.read(1) == b"\n"


def _append(f: BinaryIO, end: int, line: bytes) -> None:
    try:
        f.seek(end)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    except OSError:
        # Cut it off (as the queue does with records whose fsync failed): after a failed fsync,
        # Linux may have dropped the pages. If that fails too, the next save compacts.
        with contextlib.suppress(OSError):
            f.truncate(end)
            os.fsync(f.fileno())
        raise


def _compact(path: Path, deltas: DeltaState) -> None:
    snapshot_id = uuid.uuid4().hex
    deltas.snapshot_id = None  # if this fails anywhere, the next save compacts again
    tmp = path.with_suffix(".tmp")
    try:
        write_synced(tmp, deltas.dumps(snapshot_id))
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    deltas.snapshot_id = snapshot_id
    deltas.saved()  # all in the snapshot now; until the new journal is written, the old one is ignored
    write_synced(journal_path(path), _header(snapshot_id))
    fsync_dir(path.parent)


def _header(snapshot_id: str) -> bytes:
    return json.dumps({"snapshot_id": snapshot_id}).encode() + b"\n"
