"""One public API, one pattern (issue 16, point 4): ``from tallyhub.instrumentation.<framework>
import TallyhubMiddleware`` (Litestar: ``TallyhubPlugin``), as the README's table shows; the old
names are gone."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
PUBLIC = {
    "fastapi": "TallyhubMiddleware",
    "starlette": "TallyhubMiddleware",
    "flask": "TallyhubMiddleware",
    "django": "TallyhubMiddleware",
    "litestar": "TallyhubPlugin",
}


@pytest.mark.parametrize(("framework", "name"), PUBLIC.items())
def test_each_framework_has_its_module_and_the_readme_shows_it(framework: str, name: str) -> None:
    module = importlib.import_module(f"tallyhub.instrumentation.{framework}")
    assert isinstance(getattr(module, name), type)
    shown = f"from tallyhub.instrumentation.{framework} import {name}"
    if framework == "django":
        shown = '"tallyhub.instrumentation.django.TallyhubMiddleware"'  # a settings string
    assert shown in README


def test_the_readme_shows_no_other_import_of_an_adapter() -> None:
    imports = set(re.findall(r"from tallyhub\.instrumentation(?:\.\w+)? import \w+", README))
    allowed = {f"from tallyhub.instrumentation.{f} import {n}" for f, n in PUBLIC.items()}
    assert {i for i in imports if "Middleware" in i or "Plugin" in i} <= allowed


def test_the_old_names_are_gone() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tallyhub.instrumentation.frameworks")
    import tallyhub.instrumentation

    assert not hasattr(tallyhub.instrumentation, "TallyhubMiddleware")
    assert not hasattr(importlib.import_module("tallyhub.instrumentation.flask"), "TallyhubFlask")
