"""The hub's data directory: its owner's alone."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from tallyhub.collector_processor.hub import prepare_data_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_dir_is_the_owners_alone_whatever_the_umask(tmp_path: Path) -> None:
    for umask in (0o000, 0o022, 0o200):  # 0o200: mkdir alone would leave the owner unable to write
        path = tmp_path / f"umask-{umask:o}" / "data"
        path.parent.mkdir()
        old = os.umask(umask)
        try:
            prepare_data_dir(path)
        finally:
            os.umask(old)
        assert mode(path) == 0o700


def test_an_existing_open_data_dir_is_left_as_it_is_with_a_warning(tmp_path: Path, caplog) -> None:
    path = tmp_path / "data"
    path.mkdir()
    path.chmod(0o755)
    with caplog.at_level(logging.WARNING, "tallyhub.hub"):
        prepare_data_dir(path)
    assert mode(path) == 0o755
    assert "open to other users (mode 0755)" in caplog.text and "chmod 700" in caplog.text
    caplog.clear()
    path.chmod(0o700)
    prepare_data_dir(path)
    assert caplog.text == ""
