"""`tallyhub report`: an app's endpoints, errors and consumers over a time window.

Three parts, each usable on its own: the window (``resolve_window``, in `storage/window.py`:
``--since`` or ``--from``/``--to`` turned into whole minutes, hours or days, and the level of the
tables to read), the queries (``build_report``: the parameterized views of migrations 0008 and
0010 through any ``SqlRunner``, with query parameters, never user input formatted into SQL; client
errors as ``storage.dashboard_queries.CLIENT_ERROR_SQL`` counts them) and the renderings
(``render_table``, ``render_json``, ``render_csv``: pure functions of the report).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from tallyhub.storage.apps import SqlRunner, list_apps
from tallyhub.storage.dashboard_queries import CLIENT_ERROR_SQL
from tallyhub.storage.window import DAY as DAY
from tallyhub.storage.window import HOUR as HOUR
from tallyhub.storage.window import MINUTE, Level, Window
from tallyhub.storage.window import WindowError as WindowError
from tallyhub.storage.window import choose_level as choose_level
from tallyhub.storage.window import parse_duration as parse_duration
from tallyhub.storage.window import parse_instant as parse_instant
from tallyhub.storage.window import resolve_window as resolve_window

SECTIONS = ("summary", "endpoints", "validation_errors", "server_errors", "consumers")


class UnknownApp(LookupError):
    pass


# ---------------------------------------------------------------------------------------------
# The queries

_VIEW_ARGS = "app={app:String}, env={env:String}, from={from:DateTime}, to={to:DateTime}"
_LIMIT = " LIMIT {limit:UInt64}"

_SUMMARY_SQL = """
SELECT
    n AS requests,
    n_client AS client_errors,
    n_server AS server_errors,
    n_client / n AS client_error_rate,
    n_server / n AS server_error_rate,
    tallyhub_quantile(0.50, buckets, n) AS p50,
    tallyhub_quantile(0.75, buckets, n) AS p75,
    tallyhub_quantile(0.95, buckets, n) AS p95,
    tallyhub_quantile(0.99, buckets, n) AS p99,
    tallyhub_apdex({apdex_t:Float64}, buckets, n) AS apdex,
    duration_total / n AS mean_duration,
    endpoints
FROM
(
    SELECT
        sum(requests) AS n,
        sumIf(requests, __CLIENT_ERROR__) AS n_client,
        sumIf(requests, status >= 500) AS n_server,
        sumMap(duration_buckets) AS buckets,
        sum(duration_sum) AS duration_total,
        uniqExact(method, route) AS endpoints
    FROM __TABLE__
    WHERE app = {app:String} AND ({env:String} = '' OR env = {env:String})
      AND __COLUMN__ >= {from:DateTime} AND __COLUMN__ < {to:DateTime}
)
"""

# `consumer_activity` reads the hourly rollup from the hour of `from`: at the minute level, the
# same query on `requests`, so that a window of minutes counts only its minutes.
_CONSUMERS_BY_MINUTE_SQL = """
SELECT
    r.consumer AS consumer,
    any(c.name) AS name,
    any(c.`group`) AS `group`,
    sum(r.requests) AS requests,
    sumIf(r.requests, r.status >= 400) AS errors,
    min(c.first_seen) AS first_seen,
    max(c.last_seen) AS last_seen,
    first_seen >= {from:DateTime} AS new
FROM requests AS r
LEFT JOIN (SELECT app, env, identifier, name, `group`, first_seen, last_seen FROM consumers FINAL) AS c
    ON c.app = r.app AND c.env = r.env AND c.identifier = r.consumer
WHERE r.app = {app:String} AND ({env:String} = '' OR r.env = {env:String}) AND r.consumer != ''
  AND r.minute >= {from:DateTime} AND r.minute < {to:DateTime}
GROUP BY r.consumer
"""


def section_sql(section: str, level: Level, every_env: bool = False) -> str:
    """The SQL of a section at a level (table and view names come from ``level``, never from input).

    ``every_env``: the env is the literal '' instead of a parameter (the hub's query endpoint, like
    a URL query string parser, drops parameters whose value is empty)."""
    sql = _section_sql(section, level)
    return sql.replace("{env:String}", "''") if every_env else sql


def _section_sql(section: str, level: Level) -> str:
    if section == "summary":
        return (
            _SUMMARY_SQL.replace("__TABLE__", level.table)
            .replace("__COLUMN__", level.column)
            .replace("__CLIENT_ERROR__", CLIENT_ERROR_SQL)
        )
    if section == "endpoints":
        return (
            f"SELECT * FROM {level.endpoint_view}({_VIEW_ARGS}, apdex_t={{apdex_t:Float64}}) "
            "ORDER BY requests DESC, route, method" + _LIMIT
        )
    if section == "validation_errors":
        return (
            f"SELECT * FROM validation_error_overview({_VIEW_ARGS}) "
            "ORDER BY errors DESC, route, method, location, message, type" + _LIMIT
        )
    if section == "server_errors":
        return (
            "SELECT method, route, exception_type, message, fingerprint, errors, first_seen, last_seen, stacktrace "
            f"FROM server_error_overview({_VIEW_ARGS}) "
            "ORDER BY errors DESC, route, method, exception_type, message, fingerprint" + _LIMIT
        )
    if section == "consumers":
        source = f"({_CONSUMERS_BY_MINUTE_SQL})" if level is MINUTE else f"consumer_activity({_VIEW_ARGS})"
        return f"SELECT * FROM {source} ORDER BY requests DESC, consumer" + _LIMIT
    raise ValueError(f"unknown section {section!r}")


def _query(runner: SqlRunner, sql: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = runner.raw(sql, parameters, fmt="JSONEachRow", readonly=True)
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def _int(value: Any) -> int:
    return int(value or 0)  # 64-bit integers may come quoted


def _float(value: Any) -> float | None:
    return None if value is None else float(value)  # NaN comes as null


def _ms(seconds: Any) -> float | None:
    return None if seconds is None else float(seconds) * 1000


def _time(value: Any) -> str | None:
    """A DateTime('UTC') as ClickHouse prints it → ISO 8601; the epoch (no row joined) → None."""
    if not value or str(value).startswith("1970-01-01"):
        return None
    return str(value).replace(" ", "T") + "Z"


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _summary(row: Mapping[str, Any], window: Window) -> dict[str, Any]:
    requests = _int(row.get("requests"))
    return {
        "requests": requests,
        "requests_per_minute": requests / window.minutes,
        "client_errors": _int(row.get("client_errors")),
        "server_errors": _int(row.get("server_errors")),
        "client_error_rate": _float(row.get("client_error_rate")),
        "server_error_rate": _float(row.get("server_error_rate")),
        "p50_ms": _ms(row.get("p50")),
        "p75_ms": _ms(row.get("p75")),
        "p95_ms": _ms(row.get("p95")),
        "p99_ms": _ms(row.get("p99")),
        "apdex": _float(row.get("apdex")),
        "mean_ms": _ms(row.get("mean_duration")),
        "endpoints": _int(row.get("endpoints")),
    }


def _endpoint(row: Mapping[str, Any], window: Window) -> dict[str, Any]:
    requests = _int(row["requests"])
    return {
        "method": row["method"],
        "route": row["route"],
        "requests": requests,
        "requests_per_minute": requests / window.minutes,
        "client_errors": _int(row["client_errors"]),
        "server_errors": _int(row["server_errors"]),
        "client_error_rate": _float(row["client_error_rate"]),
        "server_error_rate": _float(row["server_error_rate"]),
        "p50_ms": _ms(row["p50"]),
        "p75_ms": _ms(row["p75"]),
        "p95_ms": _ms(row["p95"]),
        "p99_ms": _ms(row["p99"]),
        "apdex": _float(row["apdex"]),
        "mean_ms": _ms(row["mean_duration"]),
        "mean_request_bytes": _float(row["mean_request_size"]),
        "mean_response_bytes": _float(row["mean_response_size"]),
    }


def _validation_error(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "method": row["method"],
        "route": row["route"],
        "location": row["location"],
        "message": row["message"],
        "type": row["type"],
        "errors": _int(row["errors"]),
        "consumers": _int(row["consumers"]),
    }


def _server_error(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "method": row["method"],
        "route": row["route"],
        "exception_type": row["exception_type"],
        "message": row["message"],
        "fingerprint": row["fingerprint"],
        "errors": _int(row["errors"]),
        "first_seen": _time(row["first_seen"]),
        "last_seen": _time(row["last_seen"]),
        "stacktrace": row["stacktrace"],
    }


def _consumer(row: Mapping[str, Any]) -> dict[str, Any]:
    requests = _int(row["requests"])
    errors = _int(row["errors"])
    return {
        "consumer": row["consumer"],
        "name": row["name"],
        "group": row["group"],
        "requests": requests,
        "errors": errors,
        "error_rate": _rate(errors, requests),
        "new": bool(_int(row["new"])),
        "first_seen": _time(row["first_seen"]),
        "last_seen": _time(row["last_seen"]),
    }


_CONVERT = {
    "endpoints": _endpoint,
    "validation_errors": lambda row, window: _validation_error(row),
    "server_errors": lambda row, window: _server_error(row),
    "consumers": lambda row, window: _consumer(row),
}


def build_report(
    runner: SqlRunner,
    app: str,
    window: Window,
    env: str = "",
    apdex_threshold_s: float = 0.5,
    limit: int = 20,
    sections: Sequence[str] = SECTIONS,
) -> dict[str, Any]:
    """The report as one JSON-ready dict: the window, then each asked section (the summary is
    always computed: it tells whether there was traffic)."""
    apps = [a["name"] for a in list_apps(runner)]
    if app not in apps:
        known = ", ".join(apps) if apps else "none yet (create one with `tallyhub apps create NAME`)"
        raise UnknownApp(f"unknown app {app!r}; apps: {known}")
    parameters = {"app": app, **window.parameters(), "apdex_t": apdex_threshold_s, "limit": limit + 1}
    if env:
        parameters["env"] = env
    (summary_row,) = _query(runner, section_sql("summary", window.level, not env), parameters) or [{}]
    report: dict[str, Any] = {
        "app": app,
        "env": env or None,
        "from": _iso(window.start),
        "to": _iso(window.end),
        "level": window.level.name,
        "minutes": window.minutes,
        "apdex_threshold_s": apdex_threshold_s,
        "limit": limit,
    }
    summary = _summary(summary_row, window)
    if "summary" in sections:
        report["summary"] = summary
    truncated = []
    for section in SECTIONS[1:]:
        if section not in sections:
            continue
        rows = _query(runner, section_sql(section, window.level, not env), parameters)
        if len(rows) > limit:
            truncated.append(section)
        report[section] = [_CONVERT[section](row, window) for row in rows[:limit]]
    report["truncated"] = truncated
    report["traffic"] = summary["requests"] > 0
    return report


# ---------------------------------------------------------------------------------------------
# The renderings


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


# CSV columns per section (the stack trace only in JSON).
CSV_COLUMNS = {
    "summary": (
        "requests",
        "requests_per_minute",
        "client_errors",
        "server_errors",
        "client_error_rate",
        "server_error_rate",
        "p50_ms",
        "p75_ms",
        "p95_ms",
        "p99_ms",
        "apdex",
        "mean_ms",
        "endpoints",
    ),
    "endpoints": (
        "method",
        "route",
        "requests",
        "requests_per_minute",
        "client_errors",
        "server_errors",
        "client_error_rate",
        "server_error_rate",
        "p50_ms",
        "p75_ms",
        "p95_ms",
        "p99_ms",
        "apdex",
        "mean_ms",
        "mean_request_bytes",
        "mean_response_bytes",
    ),
    "validation_errors": ("method", "route", "location", "message", "type", "errors", "consumers"),
    "server_errors": (
        "method",
        "route",
        "exception_type",
        "message",
        "fingerprint",
        "errors",
        "first_seen",
        "last_seen",
    ),
    "consumers": ("consumer", "name", "group", "requests", "errors", "error_rate", "new", "first_seen", "last_seen"),
}


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def render_csv(report: Mapping[str, Any]) -> str:
    """One section: plain CSV (header row, then rows). Several: each after a ``# section`` line,
    separated by an empty line."""
    present = [s for s in SECTIONS if s in report]
    out = io.StringIO()
    for i, section in enumerate(present):
        if len(present) > 1:
            if i:
                out.write("\n")
            out.write(f"# {section}\n")
        writer = csv.writer(out, lineterminator="\n")
        columns = CSV_COLUMNS[section]
        writer.writerow(columns)
        rows = [report[section]] if section == "summary" else report[section]
        for row in rows:
            writer.writerow([_csv_cell(row.get(c)) for c in columns])
    return out.getvalue()


def _count(n: int) -> str:
    return f"{n:,}"


def _per_minute(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.2f}" if x < 10 else f"{x:,.1f}"


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _duration_ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def _apdex(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _cut(text: str, width: int) -> str:
    text = " ".join(str(text).split())  # one line
    return text if len(text) <= width else text[: width - 3] + "..."


def text_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> list[str]:
    """Columns padded to their widest cell, two spaces apart; ``right``: indices aligned right."""
    rows = [list(r) for r in rows]
    right = set(right)
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _span(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _window_line(report: Mapping[str, Any]) -> str:
    start = datetime.fromisoformat(report["from"])
    end = datetime.fromisoformat(report["to"])
    shape = "%Y-%m-%d %H:%M"
    level = {"minute": "per minute", "hour": "per hour: whole hours", "day": "per day: whole UTC days"}
    envs = f"env {report['env']}" if report["env"] else "all envs"
    return (
        f"{report['app']}, {envs}: {start.strftime(shape)} to {end.strftime(shape)} UTC "
        f"({_span(end - start)}, {level[report['level']]})"
    )


def _summary_line(summary: Mapping[str, Any], apdex_threshold_s: float) -> str:
    return (
        f"{_count(summary['requests'])} requests on {summary['endpoints']} endpoints, "
        f"{_per_minute(summary['requests_per_minute'])}/min, "
        f"4xx {_percent(summary['client_error_rate'])}, 5xx {_percent(summary['server_error_rate'])}, "
        f"p50 {_duration_ms(summary['p50_ms'])} ms, p95 {_duration_ms(summary['p95_ms'])} ms, "
        f"p99 {_duration_ms(summary['p99_ms'])} ms, Apdex {_apdex(summary['apdex'])} "
        f"(T = {apdex_threshold_s * 1000:g} ms)"
    )


def _table_section(section: str, rows: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    if section == "endpoints":
        headers = ("METHOD", "ROUTE", "REQUESTS", "RPM", "4XX", "5XX", "P50 MS", "P95 MS", "P99 MS", "APDEX")
        cells = [
            (
                r["method"],
                _cut(r["route"], 60),
                _count(r["requests"]),
                _per_minute(r["requests_per_minute"]),
                _percent(r["client_error_rate"]),
                _percent(r["server_error_rate"]),
                _duration_ms(r["p50_ms"]),
                _duration_ms(r["p95_ms"]),
                _duration_ms(r["p99_ms"]),
                _apdex(r["apdex"]),
            )
            for r in rows
        ]
        return "Endpoints", text_table(headers, cells, right=range(2, 10))
    if section == "validation_errors":
        headers = ("ERRORS", "METHOD", "ROUTE", "LOCATION", "TYPE", "MESSAGE")
        cells = [
            (
                _count(r["errors"]),
                r["method"],
                _cut(r["route"], 50),
                _cut(r["location"], 30),
                _cut(r["type"], 24),
                _cut(r["message"], 70),
            )
            for r in rows
        ]
        return "Validation errors", text_table(headers, cells, right=[0])
    if section == "server_errors":
        headers = ("ERRORS", "METHOD", "ROUTE", "TYPE", "MESSAGE", "LAST SEEN")
        cells = [
            (
                _count(r["errors"]),
                r["method"],
                _cut(r["route"], 50),
                _cut(r["exception_type"], 40),
                _cut(r["message"], 70),
                (r["last_seen"] or "-").replace("T", " ").removesuffix("Z"),
            )
            for r in rows
        ]
        return "Server errors", text_table(headers, cells, right=[0])
    if section == "consumers":
        headers = ("CONSUMER", "NAME", "GROUP", "REQUESTS", "ERRORS", "")
        cells = [
            (
                _cut(r["consumer"], 40),
                _cut(r["name"], 30) or "-",
                _cut(r["group"], 20) or "-",
                _count(r["requests"]),
                _count(r["errors"]),
                "new" if r["new"] else "returning",
            )
            for r in rows
        ]
        return "Consumers", text_table(headers, cells, right=[3, 4])
    raise ValueError(f"unknown section {section!r}")


def render_table(report: Mapping[str, Any]) -> str:
    """Aligned text for a terminal: the window, the summary, then each section (long text cut)."""
    lines = [_window_line(report)]
    if not report["traffic"]:
        lines.append("No traffic: no requests in this window.")
    elif "summary" in report:
        lines.append(_summary_line(report["summary"], report["apdex_threshold_s"]))
    for section in SECTIONS[1:]:
        if section not in report:
            continue
        rows = report[section]
        if not rows and not report["traffic"]:
            continue  # nothing to say beyond "no traffic"
        title, table = _table_section(section, rows)
        lines.append("")
        lines.append(title)
        lines.extend(table if rows else ["(none)"])
        if section in report["truncated"]:
            lines.append(f"(the first {report['limit']}; --limit for more)")
    return "\n".join(lines) + "\n"


RENDERERS = {"table": render_table, "json": render_json, "csv": render_csv}
