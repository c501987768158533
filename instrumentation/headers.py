"""HTTP headers as text, whichever interface gave them (ASGI: bytes pairs, WSGI: text pairs)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def text_headers(headers: Iterable[tuple[Any, Any]]) -> list[tuple[str, str]]:
    """Headers as (lowercase name, value) text pairs (ASGI gives bytes, WSGI text)."""
    out = []
    for name, value in headers:
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        out.append((name.lower(), value))
    return out


def first(headers: list[tuple[str, str]], name: str) -> str:
    """The first value of the (lowercase) ``name`` in ``text_headers``' pairs, else ''."""
    for key, value in headers:
        if key == name:
            return value
    return ""
