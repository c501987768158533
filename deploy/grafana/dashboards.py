"""Writes deploy/grafana/dashboards/*.json, Grafana's provisioned dashboards, from the SQL below:
`python deploy/grafana/dashboards.py` after a change (tests/deploy checks the files are its output,
and runs every panel's query on chDB against the real schema).

The panels read what the hub's own dashboard reads: `requests` by the minute for up to 2 days,
`requests_hourly` up to 62 days, `requests_daily` beyond (one branch of a UNION ALL answers, the
others are cut by a constant condition; a rollup's first hour or day is whole, as in the hub's
own dashboard); percentiles and Apdex with tallyhub's SQL functions.
Queries use the ClickHouse plugin's macros ($__timeFilter, $__fromTime, $__toTime, $__timeInterval)
and the variables ${app} and ${env} ('__all' for every env).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "tallyhub-clickhouse"}
HERE = Path(__file__).resolve().parent
TWO_DAYS_S, SIXTY_TWO_DAYS_S = 2 * 86400, 62 * 86400
RANGE = "($__toTime - $__fromTime)"
ENV = "('${env}' = '__all' OR env = '${env}')"


def requests_source(columns: str) -> str:
    """`requests` and its rollups as one table of ``t`` (the row's minute, hour or day) and
    ``columns``, of the level that suits the dashboard's time range."""
    levels = [
        ("requests", "minute", "toStartOfMinute", f"{RANGE} <= {TWO_DAYS_S}"),
        ("requests_hourly", "hour", "toStartOfHour", f"{RANGE} > {TWO_DAYS_S} AND {RANGE} <= {SIXTY_TWO_DAYS_S}"),
        ("requests_daily", "day", "toStartOfDay", f"{RANGE} > {SIXTY_TWO_DAYS_S}"),
    ]
    branches = [
        f"SELECT {column} AS t, {columns} FROM {table}\n"
        f"    WHERE app = '${{app}}' AND {ENV} AND {column} >= {start}($__fromTime) AND {column} <= $__toTime\n"
        f"      AND {condition}"
        for table, column, start, condition in levels
    ]
    return "(\n    " + "\n    UNION ALL\n    ".join(branches) + "\n)"


COLUMNS = (
    "method, route, status, consumer, toUInt64(requests) AS n, "
    "CAST(duration_buckets, 'Map(Int32, UInt64)') AS buckets, toFloat64(duration_sum) AS duration"
)

TRAFFIC = f"""SELECT $__timeInterval(t) AS time,
    sum(n) AS requests,
    sumIf(n, status BETWEEN 400 AND 499) AS `4xx`,
    sumIf(n, status >= 500) AS `5xx`
FROM {requests_source(COLUMNS)}
GROUP BY time
ORDER BY time"""

LATENCY = f"""SELECT time,
    1000 * tallyhub_quantile(0.5, buckets, total) AS p50,
    1000 * tallyhub_quantile(0.95, buckets, total) AS p95,
    1000 * tallyhub_quantile(0.99, buckets, total) AS p99
FROM
(
    SELECT $__timeInterval(t) AS time, sum(n) AS total, sumMap(buckets) AS buckets
    FROM {requests_source(COLUMNS)}
    GROUP BY time
)
ORDER BY time"""

SUMMARY = f"""SELECT
    sum(n) AS requests,
    sumIf(n, status BETWEEN 400 AND 499) / sum(n) AS client_error_rate,
    sumIf(n, status >= 500) / sum(n) AS server_error_rate,
    tallyhub_apdex(0.5, sumMap(buckets), sum(n)) AS apdex
FROM {requests_source(COLUMNS)}"""

ENDPOINTS = f"""SELECT method, route, requests,
    client_errors / requests AS client_error_rate,
    server_errors / requests AS server_error_rate,
    1000 * tallyhub_quantile(0.5, buckets, requests) AS p50_ms,
    1000 * tallyhub_quantile(0.95, buckets, requests) AS p95_ms,
    1000 * tallyhub_quantile(0.99, buckets, requests) AS p99_ms,
    tallyhub_apdex(0.5, buckets, requests) AS apdex
FROM
(
    SELECT method, route, sum(n) AS requests,
        sumIf(n, status BETWEEN 400 AND 499) AS client_errors,
        sumIf(n, status >= 500) AS server_errors,
        sumMap(buckets) AS buckets
    FROM {requests_source(COLUMNS)}
    GROUP BY method, route
)
ORDER BY requests DESC
LIMIT 200"""

CONSUMERS = f"""SELECT r.consumer AS consumer, c.name AS name, c.group AS group, r.requests AS requests,
    r.errors AS errors, r.last_seen AS last_seen
FROM
(
    SELECT consumer, sum(n) AS requests, sumIf(n, status >= 400) AS errors, max(t) AS last_seen
    FROM {requests_source(COLUMNS)}
    WHERE consumer != ''
    GROUP BY consumer
) AS r
LEFT JOIN
(
    SELECT identifier, argMax(name, last_seen) AS name, argMax(`group`, last_seen) AS group
    FROM consumers
    WHERE app = '${{app}}' AND {ENV}
    GROUP BY identifier
) AS c ON c.identifier = r.consumer
ORDER BY requests DESC
LIMIT 200"""

VALIDATION_ERRORS = f"""SELECT method, route, location, type, any(message) AS message, sum(count) AS errors,
    uniqExact(consumer) AS consumers
FROM validation_errors
WHERE app = '${{app}}' AND {ENV} AND $__timeFilter(minute)
GROUP BY method, route, location, type
ORDER BY errors DESC
LIMIT 200"""

SERVER_ERRORS = f"""SELECT method, route, exception_type, any(message) AS message, sum(count) AS errors,
    max(minute) AS last_seen, any(stacktrace) AS stacktrace
FROM server_errors
WHERE app = '${{app}}' AND {ENV} AND $__timeFilter(minute)
GROUP BY method, route, exception_type, fingerprint
ORDER BY errors DESC
LIMIT 200"""

INSTANCES = f"""SELECT env, service, host, pid, versions['app'] AS version, started_at, last_seen, uptime,
    last_seen < now() - INTERVAL 5 MINUTE AS stale
FROM instance_uptime
WHERE app = '${{app}}' AND {ENV} AND last_seen >= $__fromTime AND started_at <= $__toTime
ORDER BY last_seen DESC
LIMIT 200"""

APPS = "SELECT DISTINCT app FROM requests_daily ORDER BY app"
ENVS = "SELECT DISTINCT env FROM requests_daily WHERE app = '${app}' ORDER BY env"

PANELS: list[tuple[str, str, str, dict[str, int], list[str]]] = [
    # title, type, SQL, grid position, the columns the panel reads
    (
        "Requests, 4xx and 5xx",
        "timeseries",
        TRAFFIC,
        {"h": 8, "w": 12, "x": 0, "y": 4},
        ["time", "requests", "4xx", "5xx"],
    ),
    ("Latency (ms)", "timeseries", LATENCY, {"h": 8, "w": 12, "x": 12, "y": 4}, ["time", "p50", "p95", "p99"]),
    (
        "Requests, error rates, Apdex (T = 0.5 s)",
        "stat",
        SUMMARY,
        {"h": 4, "w": 24, "x": 0, "y": 0},
        ["requests", "client_error_rate", "server_error_rate", "apdex"],
    ),
    (
        "Endpoints",
        "table",
        ENDPOINTS,
        {"h": 10, "w": 24, "x": 0, "y": 12},
        [
            "method",
            "route",
            "requests",
            "client_error_rate",
            "server_error_rate",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "apdex",
        ],
    ),
    (
        "Consumers",
        "table",
        CONSUMERS,
        {"h": 9, "w": 12, "x": 0, "y": 22},
        ["consumer", "name", "group", "requests", "errors", "last_seen"],
    ),
    (
        "Instances",
        "table",
        INSTANCES,
        {"h": 9, "w": 12, "x": 12, "y": 22},
        ["env", "service", "host", "pid", "version", "started_at", "last_seen", "uptime", "stale"],
    ),
    (
        "Validation errors",
        "table",
        VALIDATION_ERRORS,
        {"h": 9, "w": 12, "x": 0, "y": 31},
        ["method", "route", "location", "type", "message", "errors", "consumers"],
    ),
    (
        "Server errors",
        "table",
        SERVER_ERRORS,
        {"h": 9, "w": 12, "x": 12, "y": 31},
        ["method", "route", "exception_type", "message", "errors", "last_seen", "stacktrace"],
    ),
]


def panel(number: int, title: str, kind: str, sql: str, grid: dict[str, int], _columns: list[str]) -> dict[str, Any]:
    time_series = kind == "timeseries"
    return {
        "id": number,
        "title": title,
        "type": kind,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "targets": [
            {
                "refId": "A",
                "datasource": DATASOURCE,
                "editorType": "sql",
                "queryType": "timeseries" if time_series else "table",
                "format": 0 if time_series else 1,
                "rawSql": sql,
            }
        ],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }


def variable(name: str, label: str, query: str, include_all: bool) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 2,
        "includeAll": include_all,
        "multi": False,
        "sort": 1,
    }
    if include_all:
        found["allValue"] = "__all"
        found["current"] = {"text": "All", "value": "$__all"}
    return found


def overview() -> dict[str, Any]:
    return {
        "uid": "tallyhub-overview",
        "title": "tallyhub: API overview",
        "tags": ["tallyhub"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [variable("app", "App", APPS, False), variable("env", "Environment", ENVS, True)]},
        "panels": [panel(n, *spec) for n, spec in enumerate(PANELS, 1)],
    }


def main() -> None:
    path = HERE / "dashboards" / "tallyhub-overview.json"
    path.write_text(json.dumps(overview(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(HERE.parent.parent)}")


if __name__ == "__main__":
    main()
