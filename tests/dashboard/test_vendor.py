"""The vendored chart library is the one VERSION.md names, byte for byte, with its license."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

VENDOR = Path(__file__).resolve().parents[2] / "dashboard" / "static" / "vendor" / "uplot"
RECORDED = dict(re.findall(r"`(uPlot[\w.]+)` sha256 `([0-9a-f]{64})`", (VENDOR / "VERSION.md").read_text()))


def test_every_vendored_file_is_recorded() -> None:
    assert set(RECORDED) == {p.name for p in VENDOR.iterdir() if p.name.startswith("uPlot")}
    assert "MIT License" in (VENDOR / "LICENSE").read_text()


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_the_file_is_the_one_recorded(name: str) -> None:
    assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == RECORDED[name]


def test_the_page_loads_nothing_from_elsewhere() -> None:
    static = VENDOR.parents[1]
    for path in [static / "index.html", *static.glob("js/*.js"), static / "style.css"]:
        text = path.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path
        assert not re.search(r"(import|fetch)\s*\(?\s*[\"'](https?:)?//", text), path
