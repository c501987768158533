"""Without the demo extra, `tallyhub demo` says what to install instead of failing on an import."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tallyhub.collector_processor import cli
from tallyhub.demo import missing_packages


def test_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "missing_demo_packages", lambda: ["fastapi", "uvicorn"])
    result = CliRunner().invoke(cli.main, ["demo"])
    assert result.exit_code == 1
    assert "tallyhub demo needs fastapi, uvicorn" in result.output
    assert "pip install -e '.[hub,demo]'" in result.output


def test_nothing_missing_in_the_test_environment() -> None:
    assert missing_packages() == []
