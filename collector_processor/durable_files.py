"""Small files the hub must find whole after a crash (the queue's cursor and batch log, the
cumulative state): written, fsynced, and their directory fsynced so that a rename survives too."""

from __future__ import annotations

import os
from pathlib import Path


def write_synced(path: Path, data: bytes) -> None:
    """``data`` as ``path``'s whole content, on disk before this returns."""
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_atomically(path: Path, data: bytes) -> None:
    """``path`` replaced by ``data`` at once: a crash leaves the old content or the new, never half."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    write_synced(tmp, data)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
