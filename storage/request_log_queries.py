"""Searching the request log: newest first, by app, time range and filters (``tallyhub logs``).

The SQL is fixed; every value a user gives goes in as a query parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tallyhub.storage.json_rows import SqlRunner, json_rows

SUMMARY_COLUMNS = (
    "time",
    "request_id",
    "env",
    "method",
    "url_path",
    "url_query",
    "route",
    "status",
    "duration_ms",
    "consumer",
    "client_ip",
)
DETAIL_COLUMNS = (
    *SUMMARY_COLUMNS,
    "instance",
    "trace_id",
    "scheme",
    "host",
    "user_agent",
    "request_size",
    "response_size",
    "request_headers",
    "response_headers",
    "request_body",
    "request_body_truncated",
    "response_body",
    "response_body_truncated",
    "exception_type",
    "exception_message",
    "stacktrace",
    "log_lines",
)


class FilterError(ValueError):
    """A filter that cannot be read (a status that is not ``500``, ``5xx`` or ``4xx``…)."""


@dataclass(frozen=True)
class LogFilter:
    app: str
    start: datetime
    end: datetime
    env: str = ""
    status: str = ""
    """``500``, ``5xx``, ``4xx``, or several joined by commas; empty: any."""
    method: str = ""
    path: str = ""
    """A substring of the path (or of the route template)."""
    consumer: str = ""
    client_ip: str = ""
    min_duration_ms: float | None = None
    body: str = ""
    """A substring of the request or the response body."""
    request_id: str = ""
    """One request, by its id (a UUID)."""
    limit: int = 50


def status_ranges(text: str) -> list[tuple[int, int]]:
    """``"5xx,404"`` → ``[(500, 599), (404, 404)]``."""
    ranges = []
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        if re.fullmatch(r"[1-5]xx", part):
            ranges.append((int(part[0]) * 100, int(part[0]) * 100 + 99))
        elif re.fullmatch(r"[1-5]\d\d", part):
            ranges.append((int(part), int(part)))
        else:
            raise FilterError(f"status {part!r}: expected a code (404) or a class (4xx, 5xx)")
    return ranges


def search_sql(f: LogFilter, detail: bool = False) -> tuple[str, dict[str, Any]]:
    """The query and its parameters: ``detail`` adds headers, bodies and the stack trace."""
    where = ["app = {app:String}", "time >= {start:DateTime64(3, 'UTC')}", "time < {end:DateTime64(3, 'UTC')}"]
    parameters: dict[str, Any] = {"app": f.app, "start": _utc(f.start), "end": _utc(f.end), "limit": f.limit}
    if f.env:
        where.append("env = {env:String}")
        parameters["env"] = f.env
    ranges = status_ranges(f.status)
    if ranges:
        where.append("(" + " OR ".join(f"status BETWEEN {low} AND {high}" for low, high in ranges) + ")")
    if f.method:
        where.append("method = {method:String}")
        parameters["method"] = f.method.upper()
    if f.path:
        where.append("(positionCaseInsensitive(url_path, {path:String}) > 0 OR route = {path:String})")
        parameters["path"] = f.path
    if f.consumer:
        where.append("consumer = {consumer:String}")
        parameters["consumer"] = f.consumer
    if f.client_ip:
        where.append("client_ip = {client_ip:String}")
        parameters["client_ip"] = f.client_ip
    if f.min_duration_ms is not None:
        where.append("duration_ms >= {min_ms:Float64}")
        parameters["min_ms"] = f.min_duration_ms
    if f.request_id:
        where.append("request_id = toUUIDOrZero({request_id:String})")
        parameters["request_id"] = f.request_id
    if f.body:
        where.append("(position(request_body, {body:String}) > 0 OR position(response_body, {body:String}) > 0)")
        parameters["body"] = f.body
    columns = ", ".join(DETAIL_COLUMNS if detail else SUMMARY_COLUMNS)
    sql = (
        f"SELECT {columns} FROM request_log WHERE {' AND '.join(where)} "
        "ORDER BY time DESC, request_id LIMIT {limit:UInt32}"
    )
    return sql, parameters


def _utc(t: datetime) -> str:
    """A time as a ``DateTime64(3, 'UTC')`` parameter (a naive one is taken as UTC)."""
    if t.tzinfo is not None:
        t = t.astimezone(UTC).replace(tzinfo=None)
    return t.isoformat(sep=" ", timespec="milliseconds")


def search(runner: SqlRunner, f: LogFilter, detail: bool = False) -> list[dict[str, Any]]:
    sql, parameters = search_sql(f, detail)
    return json_rows(runner, sql, parameters)


def logged_today(runner: SqlRunner, app: str) -> int:
    """Requests ``app`` logged since midnight UTC (where the hub's daily quota starts counting)."""
    out = runner.raw(
        "SELECT count() FROM request_log WHERE app = {app:String} AND time >= toStartOfDay(now64(3, 'UTC'))",
        {"app": app},
    )
    return int(out.decode().strip() or 0)
