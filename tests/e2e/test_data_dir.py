"""Where the data is: one absolute default, printed at start, found by every command wherever it
runs (issue 17, point 1). The real CLI in subprocesses, started from different directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port

from .conftest import wait_for


def tallyhub(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tallyhub", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_commands_started_anywhere_find_the_hub_in_the_default_data_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TALLYHUB_DATA_DIR"}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")  # the platform's user data directory, under the test's
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    log = tmp_path / "hub.log"
    serve = ["serve", "--grpc-address", f"127.0.0.1:{free_port()}", "--http-address", "off"]
    hub = subprocess.Popen(
        [sys.executable, "-m", "tallyhub", *serve, "--query-address", f"127.0.0.1:{free_port()}"],
        cwd=here,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        expected = tmp_path / "xdg" / "tallyhub"
        wait_for(lambda: "hub ready" in log.read_text() or hub.poll() is not None, 60, "the hub")
        assert hub.poll() is None, log.read_text()
        assert f"data directory: {expected}" in log.read_text()  # printed at start
        assert not (here / "tallyhub-data").exists()  # nothing made where it was started
        status = tallyhub(there, env, "status")  # another directory: the same hub
        assert status.returncode == 0, status.stderr
        assert f"hub on {expected}" in status.stdout
        created = tallyhub(there, env, "apps", "create", "shop")
        assert created.returncode == 0, created.stderr
        listed = tallyhub(tmp_path, env, "sql", "SELECT name FROM apps")
        assert listed.stdout.split() == ["shop"], listed.stderr
    finally:
        hub.terminate()
        hub.wait(30)


def test_a_relative_data_dir_is_shown_absolute(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TALLYHUB_DATA_DIR"}
    result = tallyhub(tmp_path, env, "status", "--data-dir", "mine")
    assert result.returncode == 1
    assert f"no hub is running on {tmp_path / 'mine'}" in result.stderr
