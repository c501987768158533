"""The queries of `tallyhub report`: an app's summary, endpoints, errors and consumers over a window.

The parameterized views of migrations 0008 and 0010 through any ``SqlRunner``, with query
parameters, never user input formatted into SQL; client errors as
``storage.dashboard_queries.CLIENT_ERROR_SQL`` counts them. The result is one JSON-ready dict that
``collector_processor/report.py`` renders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from tallyhub.storage.apps import SqlRunner, list_apps
from tallyhub.storage.dashboard_queries import CLIENT_ERROR_SQL
from tallyhub.storage.json_rows import as_float, as_int, json_rows
from tallyhub.storage.window import MINUTE, Level, Window

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
    requests = as_int(row.get("requests"))
    return {
        "requests": requests,
        "requests_per_minute": requests / window.minutes,
        "client_errors": as_int(row.get("client_errors")),
        "server_errors": as_int(row.get("server_errors")),
        "client_error_rate": as_float(row.get("client_error_rate")),
        "server_error_rate": as_float(row.get("server_error_rate")),
        "p50_ms": _ms(row.get("p50")),
        "p75_ms": _ms(row.get("p75")),
        "p95_ms": _ms(row.get("p95")),
        "p99_ms": _ms(row.get("p99")),
        "apdex": as_float(row.get("apdex")),
        "mean_ms": _ms(row.get("mean_duration")),
        "endpoints": as_int(row.get("endpoints")),
    }


def _endpoint(row: Mapping[str, Any], window: Window) -> dict[str, Any]:
    requests = as_int(row["requests"])
    return {
        "method": row["method"],
        "route": row["route"],
        "requests": requests,
        "requests_per_minute": requests / window.minutes,
        "client_errors": as_int(row["client_errors"]),
        "server_errors": as_int(row["server_errors"]),
        "client_error_rate": as_float(row["client_error_rate"]),
        "server_error_rate": as_float(row["server_error_rate"]),
        "p50_ms": _ms(row["p50"]),
        "p75_ms": _ms(row["p75"]),
        "p95_ms": _ms(row["p95"]),
        "p99_ms": _ms(row["p99"]),
        "apdex": as_float(row["apdex"]),
        "mean_ms": _ms(row["mean_duration"]),
        "mean_request_bytes": as_float(row["mean_request_size"]),
        "mean_response_bytes": as_float(row["mean_response_size"]),
    }


def _validation_error(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "method": row["method"],
        "route": row["route"],
        "location": row["location"],
        "message": row["message"],
        "type": row["type"],
        "errors": as_int(row["errors"]),
        "consumers": as_int(row["consumers"]),
    }


def _server_error(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "method": row["method"],
        "route": row["route"],
        "exception_type": row["exception_type"],
        "message": row["message"],
        "fingerprint": row["fingerprint"],
        "errors": as_int(row["errors"]),
        "first_seen": _time(row["first_seen"]),
        "last_seen": _time(row["last_seen"]),
        "stacktrace": row["stacktrace"],
    }


def _consumer(row: Mapping[str, Any]) -> dict[str, Any]:
    requests = as_int(row["requests"])
    errors = as_int(row["errors"])
    return {
        "consumer": row["consumer"],
        "name": row["name"],
        "group": row["group"],
        "requests": requests,
        "errors": errors,
        "error_rate": _rate(errors, requests),
        "new": bool(as_int(row["new"])),
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
    (summary_row,) = json_rows(runner, section_sql("summary", window.level, not env), parameters) or [{}]
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
        rows = json_rows(runner, section_sql(section, window.level, not env), parameters)
        if len(rows) > limit:
            truncated.append(section)
        report[section] = [_CONVERT[section](row, window) for row in rows[:limit]]
    report["truncated"] = truncated
    report["traffic"] = summary["requests"] > 0
    return report
