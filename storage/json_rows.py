"""Rows of a read-only query as dicts, and their values as Python numbers (the report's and the dashboard's)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from tallyhub.storage.apps import SqlRunner


def json_rows(runner: SqlRunner, sql: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of a read-only query (``JSONEachRow``), one dict each."""
    out = runner.raw(sql, parameters, fmt="JSONEachRow", readonly=True)
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def as_int(value: Any) -> int:
    return int(value or 0)  # 64-bit integers come quoted


def as_float(value: Any) -> float | None:
    """None for null, NaN and infinities (ClickHouse writes NaN as null in JSON)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
