"""benchmarks/side_by_side.py: the old pieces it swaps in are the revision's own code, put in place
only around their blocks, and its report pairs every variant with its base round by round."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import side_by_side  # noqa: E402  # the benchmarks folder is not a package

from tallyhub.instrumentation import client, server_errors, validation_errors  # noqa: E402


def test_the_old_pieces_come_from_the_revision_and_are_swapped_back() -> None:
    current_json_encoding = validation_errors.json_encoding
    current_describe = client.describe_exception
    enter, leave = side_by_side.swapper(
        "HEAD", ["validation_errors:json_encoding", "client:describe_exception=server_errors:describe_exception"]
    )
    enter()
    try:
        assert validation_errors.json_encoding is not current_json_encoding
        assert validation_errors.json_encoding.__code__.co_filename == "validation_errors.py@HEAD"
        assert validation_errors.json_encoding(422, "application/json", "") == ""  # it runs, in its own module
        assert client.describe_exception.__code__.co_filename == "server_errors.py@HEAD"
        assert server_errors.describe_exception is current_describe  # only the client's name was swapped
    finally:
        leave()
    assert validation_errors.json_encoding is current_json_encoding
    assert client.describe_exception is current_describe


def test_a_piece_that_does_not_exist_is_named() -> None:
    with pytest.raises(AttributeError, match=r"has no ASGIMiddleware\.nothing"):
        side_by_side.swapper("HEAD", ["asgi:ASGIMiddleware.nothing"])
    with pytest.raises(ModuleNotFoundError):
        side_by_side.swapper("HEAD", ["no_such_module:x=asgi:ASGIMiddleware"])
    with pytest.raises(subprocess.CalledProcessError):  # git show: no such file at that revision
        side_by_side.swapper("HEAD", ["asgi:ASGIMiddleware=no_such_module:x"])


def test_a_short_run_reports_each_variant_against_its_base() -> None:
    command = [sys.executable, "benchmarks/side_by_side.py", "--framework", "starlette", "--against", "HEAD"]
    command += ["--swap", "asgi:ASGIMiddleware.__call__", "--rounds", "4", "--block", "8", "--warmup", "200"]
    done = subprocess.run([*command, "--allow-dirty"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    rows = [line.split(" | ")[0].lstrip("| ") for line in lines if " - " in line.split(" | ")[0]]
    assert rows == [
        "floor - bare",
        "tallyhub - bare",
        "otel-instrumentation - bare",
        "tallyhub@HEAD - bare",
        "tallyhub@HEAD - tallyhub",
    ]
