"""What the query endpoint needs to pass for ClickHouse's HTTP interface with ClickHouse's own
clients (clickhouse-connect, @clickhouse/client, Grafana's plugin): credentials in ClickHouse's
three places, the query from the URL and the body, its format, ClickHouse's response headers and
errors. Pure functions: the endpoint (``query_api``) does the I/O."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping
from typing import NamedTuple

FORMAT_CLAUSE = re.compile(r"\s+FORMAT\s+([A-Za-z][A-Za-z0-9]*)\s*;?\s*$", re.IGNORECASE)
ERROR_CODE = re.compile(r"Code: (\d+)\.")
CONTENT_TYPES = {
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
    "JSONCompactEachRow": "application/x-ndjson; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "CSVWithNames": "text/csv; charset=UTF-8; header=present",
}
AUTHENTICATION_FAILED = 516
READONLY = 164


class Credentials(NamedTuple):
    user: str
    password: str


def credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> Credentials | None:
    """The user and password where ClickHouse looks for them: ``X-ClickHouse-User`` and
    ``X-ClickHouse-Key`` headers, HTTP Basic authorization, or ``user`` and ``password`` in the URL."""
    if "x-clickhouse-user" in headers:
        return Credentials(headers["x-clickhouse-user"], headers.get("x-clickhouse-key", ""))
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except ValueError:
            return None
        return Credentials(user, password)
    if "user" in params:
        return Credentials(params["user"], params.get("password", ""))
    return None


def query_of(params: Mapping[str, str], body: bytes) -> tuple[str, str]:
    """The SQL (the URL's ``query`` followed by the body, as ClickHouse reads them) and its output
    format: a trailing ``FORMAT x`` clause, else ``default_format``, else TabSeparated."""
    sql = "\n".join(part for part in (params.get("query", ""), body.decode()) if part.strip())
    fmt = params.get("default_format", "TabSeparated")
    clause = FORMAT_CLAUSE.search(sql)
    if clause:
        sql, fmt = sql[: clause.start()], clause[1]
    return sql, fmt


def response_headers(fmt: str, query_id: str | None) -> dict[str, str]:
    """The headers ClickHouse answers a query with, that its clients read."""
    return {
        "content-type": CONTENT_TYPES.get(fmt, "text/plain; charset=UTF-8"),
        "x-clickhouse-format": fmt,
        "x-clickhouse-query-id": query_id or str(uuid.uuid4()),
        "x-clickhouse-timezone": "UTC",
        "x-clickhouse-server-display-name": "tallyhub",
        "x-clickhouse-summary": json.dumps(
            {"read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0", "total_rows_to_read": "0"}
        ),
    }


def error(message: str, code: int | None = None) -> tuple[str, dict[str, str]]:
    """An error as ClickHouse words it (``Code: N. DB::Exception: ...``), and its code header."""
    found = ERROR_CODE.search(message)
    if found:
        code, message = int(found[1]), message[found.start() :]
    code = code or 1000  # UNKNOWN_EXCEPTION
    if not message.startswith("Code: "):
        message = f"Code: {code}. DB::Exception: {message}"
    return message.rstrip() + "\n", {"x-clickhouse-exception-code": str(code)}
