"""Masking what the request log sends: query parameters, headers and body fields whose names look
secret are replaced by ``MASK`` before anything leaves the process.

The default patterns are those Apitally's clients use (case-insensitive, anywhere in the name),
with ``api_key`` matched as well as ``apikey`` and ``api-key``;
a user's own patterns are added to them, never replace them. Pure functions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

MASK = "******"
DEFAULT_QUERY_PATTERNS = (r"auth", r"api[-_]?key", r"secret", r"token", r"password", r"pwd")
DEFAULT_HEADER_PATTERNS = (r"auth", r"api[-_]?key", r"secret", r"token", r"cookie")
DEFAULT_BODY_PATTERNS = DEFAULT_QUERY_PATTERNS


def compile_patterns(defaults: Iterable[str], extra: Iterable[str] = ()) -> re.Pattern[str]:
    """One case-insensitive pattern matching any of ``defaults`` and the user's ``extra`` (raises
    ``re.error`` for a user pattern that is not a regular expression)."""
    return re.compile("|".join(f"(?:{p})" for p in (*defaults, *extra)), re.IGNORECASE)


def mask_query(query: str, secret: re.Pattern[str]) -> str:
    """``query`` with the value of each parameter whose name matches ``secret`` masked; the
    others, their order and repeated names kept."""
    if not query or ("%" not in query and "+" not in query and not secret.search(query)):
        return query  # no name can match what the whole (unescaped) text does not hold
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(secret.search(name) for name, _ in pairs):
        return query
    return urlencode([(name, MASK if secret.search(name) else value) for name, value in pairs], safe="*")


def mask_headers(headers: Iterable[tuple[str, str]], secret: re.Pattern[str]) -> list[tuple[str, str]]:
    return [(name, MASK if secret.search(name) else value) for name, value in headers]


def mask_json_body(text: str, secret: re.Pattern[str]) -> str:
    """A JSON document with the values of object members whose names match ``secret`` masked, at
    any depth; text that is not JSON is returned as it is."""
    if "\\u" not in text and not secret.search(text):  # no member's name can match: not parsed at all
        return text
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return text
    masked, changed = _mask_fields(document, secret)
    return json.dumps(masked, ensure_ascii=False) if changed else text


def _mask_fields(value: Any, secret: re.Pattern[str], depth: int = 0) -> tuple[Any, bool]:
    if depth > 64:
        return value, False
    if isinstance(value, dict):
        changed = False
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and secret.search(key) and item is not None:
                out[key], changed = MASK, True
            else:
                out[key], inner = _mask_fields(item, secret, depth + 1)
                changed = changed or inner
        return out, changed
    if isinstance(value, list):
        results = [_mask_fields(item, secret, depth + 1) for item in value]
        return [item for item, _ in results], any(inner for _, inner in results)
    return value, False
