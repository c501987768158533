"""Secrets a deploy hands the hub as files (Docker and Kubernetes secrets), never on a command line:
the apps' keys (`TALLYHUB_APP_KEYS_FILE`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tallyhub.collector_processor.receive.auth import generate_key

from ..conftest import free_port
from .conftest import Hub, wait_for
from .test_receivers import send, stored


def test_the_keys_of_an_app_keys_file_are_the_apps_keys(tmp_path: Path) -> None:
    first, second = generate_key(), generate_key()
    keys = tmp_path / "app-keys"
    keys.write_text(f"shop={first}\n")
    hub = Hub(tmp_path / "data", "--app-keys-file", str(keys))
    hub.start()
    send(hub, first, [("/a", 3, "b1")], channels=1)
    wait_for(lambda: stored(hub) == {"/a": 3}, 30, "the export stored")
    assert hub.stop() == 0
    keys.write_text(f"# rotated\nshop={second}\n")  # the secret changed: the new key works, the old one no more
    hub.start()
    assert "app shop: key from" in hub.log.read_text() and "rotated" in hub.log.read_text()
    send(hub, second, [("/b", 2, "b2")], channels=1)
    wait_for(lambda: stored(hub) == {"/a": 3, "/b": 2}, 30, "the second export stored")
    assert hub.cli("apps", "list").stdout.count("shop") == 1
    assert hub.stop() == 0


def test_a_malformed_app_keys_file_stops_the_start_with_the_line(tmp_path: Path) -> None:
    keys = tmp_path / "app-keys"
    keys.write_text("shop=tooshort\n")
    addresses = ["--grpc-address", f"127.0.0.1:{free_port()}", "--query-address", f"127.0.0.1:{free_port()}"]
    off = ["--http-address", "off", "--dashboard-address", "off"]
    result = subprocess.run(
        [sys.executable, "-m", "tallyhub", "serve", *addresses, *off, "--app-keys-file", str(keys)],
        env={**os.environ, "TALLYHUB_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"Error: {keys}, line 1: the key of 'shop' is too short" in result.stderr
    assert "Traceback" not in result.stderr and "tooshort" not in result.stderr
