"""The dashboard's reads and settings: one function per endpoint of `docs/dashboard-api.md`.

Each read takes a ``SqlRunner``, a ``Window`` (`storage/window.py`) and ``Filters`` and returns the
endpoint's JSON answer as a dict. Every number is computed by ClickHouse, with the functions of
migrations 0007 and 0012 (``tallyhub_quantile``, ``tallyhub_apdex``) on the table of the window's level, and
client errors as migration 0010 defines them (``CLIENT_ERROR_SQL``), the same SQL as `tallyhub
report`. User values reach SQL only as query parameters; what is formatted into the SQL is fixed
text (the level's table and column, the conditions for the filters that are set). Times are Unix
seconds; NaN (a quantile or a rate of nothing) is None. Time series have one point per
``window.step``, every bucket of the window present (counts 0, quantiles and rates None).

The error tables and ``consumers`` exist per minute only: errors are read from them over the same
window at any level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal

from tallyhub.storage.apps import SqlRunner
from tallyhub.storage.json_rows import as_float, as_int, json_rows
from tallyhub.storage.window import DAY, HOUR, MINUTE, Level, Window
from tallyhub.wire import CPU_UTILIZATION, MEMORY_USAGE, UPTIME

DEFAULT_APDEX_T = 0.5
MAX_APDEX_T = 3600.0
LIST_LIMIT = 1000
"""The most rows of a list (endpoints, consumers, instances), the largest first."""
ERROR_LIMIT = 200
"""The most rows of an error list (each server error carries a stack trace of up to 64 KB)."""

STATUS_CLASSES = {"2xx": (200, 299), "3xx": (300, 399), "4xx": (400, 499), "5xx": (500, 599)}

CLIENT_ERROR_SQL = (
    "status BETWEEN 400 AND 499 AND (app, method, route, status) NOT IN "
    "(SELECT app, method, route, status FROM expected_client_statuses)"
)
"""A request that counts as a client error: a 4xx that its endpoint does not expect (migration 0010)."""
SERVER_ERROR_SQL = "status >= 500"

# A status for the rows of the error tables, which have none, so that a status class filter
# keeps validation errors for 4xx and server errors for 5xx.
_VALIDATION_ERROR_STATUS = "400"
_SERVER_ERROR_STATUS = "500"


class FilterError(ValueError):
    """A filter that cannot be applied: an unknown status class, a method without its route."""


class SettingsError(ValueError):
    """A setting out of its range."""


class UnknownEndpoint(LookupError):
    pass


class _Keep(Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP
"""``save_endpoint_settings``: leave this setting as it is."""


@dataclass(frozen=True)
class Filters:
    """The dashboard's filters; empty strings filter nothing."""

    env: str = ""
    consumer: str = ""
    method: str = ""
    route: str = ""
    status: str = ""
    """A status class: ``2xx``, ``3xx``, ``4xx`` or ``5xx``."""

    def __post_init__(self) -> None:
        if self.status and self.status not in STATUS_CLASSES:
            raise FilterError(f"unknown status class {self.status!r}: send one of {', '.join(STATUS_CLASSES)}")
        if bool(self.method) != bool(self.route):
            raise FilterError("method and route go together: send both, or neither")

    def parameters(self) -> dict[str, Any]:
        """The query parameters of the filters that are set (the hub's query endpoint drops empty ones)."""
        strings = {"env": self.env, "consumer": self.consumer, "method": self.method, "route": self.route}
        values: dict[str, Any] = {name: value for name, value in strings.items() if value}
        if self.status:
            values["status_min"], values["status_max"] = STATUS_CLASSES[self.status]
        return values

    def where(self, column: str, status: str = "status", prefix: str = "", app: bool = True) -> str:
        """The conditions of the window and the filters on a table whose time column is ``column``;
        ``status``: the expression a status class filter tests; ``prefix``: a table alias and a dot."""
        p = prefix
        parts = [f"{p}{column} >= {{from:DateTime}} AND {p}{column} < {{to:DateTime}}"]
        if app:
            parts.insert(0, f"{p}app = {{app:String}}")
        if self.env:
            parts.append(f"{p}env = {{env:String}}")
        if self.consumer:
            parts.append(f"{p}consumer = {{consumer:String}}")
        if self.method:
            parts.append(f"{p}method = {{method:String}} AND {p}route = {{route:String}}")
        if self.status:
            parts.append(f"{status} BETWEEN {{status_min:UInt16}} AND {{status_max:UInt16}}")
        return " AND ".join(parts)


# ---------------------------------------------------------------------------------------------
# Helpers


_DAY_S = 86400

# What a read without a time series (totals, lists) reads at the hour level: the window's whole UTC
# days from the daily rollup, the hours before and after them from the hourly one. The same sums
# (both rollups hold every row of `requests`), from ~1/8 of the rows (and the histogram maps to merge).
_WHOLE_DAYS = """(
    SELECT hour, __COLUMNS__
    FROM __HOURLY__
    WHERE hour >= {from:DateTime} AND hour < {to:DateTime}
      AND (hour < {whole_from:DateTime} OR hour >= {whole_to:DateTime})
    UNION ALL
    SELECT day AS hour, __COLUMNS__
    FROM __DAILY__
    WHERE day >= {whole_from:DateTime} AND day < {whole_to:DateTime}
)"""
_COLUMNS = "app, env, service, method, route, status, requests, duration_buckets, request_size_sum, response_size_sum"


def _whole_days(by_endpoint: bool) -> str:
    """``_WHOLE_DAYS`` from the rollups, or from those by endpoint (no ``consumer`` column)."""
    if by_endpoint:
        hourly, daily, columns = HOUR.by_endpoint, DAY.by_endpoint, _COLUMNS
    else:
        hourly, daily, columns = HOUR.table, DAY.table, f"consumer, {_COLUMNS}"
    return _WHOLE_DAYS.replace("__HOURLY__", hourly).replace("__DAILY__", daily).replace("__COLUMNS__", columns)


def _parameters(app: str, window: Window, filters: Filters, **extra: Any) -> dict[str, Any]:
    start, end = window.parameters()["from"], window.parameters()["to"]
    whole_from = -(-start // _DAY_S) * _DAY_S
    return {
        "app": app,
        **window.parameters(),
        "whole_from": whole_from,
        "whole_to": max(end // _DAY_S * _DAY_S, whole_from),
        "step": window.step,
        "minutes": window.minutes,
        **filters.parameters(),
        **extra,
    }


def _time(value: Any) -> int | None:
    """Unix seconds; 0 (no row joined) is None."""
    return as_int(value) or None


def _bucket(level_column: str) -> str:
    """The start (Unix seconds) of the series point that holds ``level_column``; points start at ``from``."""
    return (
        f"toUInt32(toStartOfInterval({level_column}, INTERVAL {{step:UInt32}} SECOND, "
        "toDateTime({from:DateTime}, 'UTC')))"
    )


def _series(
    window: Window, rows: Sequence[Mapping[str, Any]], counts: Sequence[str] = (), values: Sequence[str] = ()
) -> dict[str, list[Any]]:
    """Columns of equal length, one point per bucket of the window: ``counts`` 0 and ``values``
    None where ``rows`` (each with its bucket ``t``) have nothing."""
    times = window.buckets()
    index = {t: i for i, t in enumerate(times)}
    series: dict[str, list[Any]] = {"time": times}
    series |= {name: [0] * len(times) for name in counts}
    series |= {name: [None] * len(times) for name in values}
    for row in rows:
        i = index.get(as_int(row["t"]))
        if i is None:
            continue
        for name in counts:
            series[name][i] = as_int(row[name])
        for name in values:
            series[name][i] = as_float(row[name])
    return series


# ---------------------------------------------------------------------------------------------
# GET /api/apps

_APPS_SQL = """
SELECT
    a.app AS app,
    t.envs AS envs,
    t.n AS requests,
    (t.n_client + t.n_server) / t.n AS error_rate,
    __P95__ AS p95
FROM
(
    SELECT name AS app FROM apps
    UNION DISTINCT
    SELECT DISTINCT app FROM __TOTALS_TABLE__ WHERE __WHERE__
) AS a
LEFT JOIN
(
    SELECT
        app,
        arraySort(groupUniqArray(env)) AS envs,
        sum(requests) AS n,
        sumIf(requests, __CLIENT__) AS n_client,
        sumIf(requests, __SERVER__) AS n_server,
        sumMap(duration_buckets) AS buckets
    FROM __TOTALS_TABLE__
    WHERE __WHERE__
    GROUP BY app
) AS t USING (app)
ORDER BY requests DESC, app
""".replace("__P95__", "tallyhub_quantile(0.95, t.buckets, t.n)")

_SPARK_SQL = """
SELECT app, __BUCKET__ AS t, sum(requests) AS requests
FROM __TABLE__
WHERE __WHERE__
GROUP BY app, t
"""


def _sql(template: str, level: Level, where: str, by_endpoint: bool = False, **more: str) -> str:
    """``template`` with the level's table (``__TOTALS_TABLE__``: whole days from the daily rollup at
    the hour level) and time column, and fixed SQL fragments, in place. ``by_endpoint``: the tables
    without the consumer (ordered by endpoint), for every read that neither filters nor groups by
    consumer: the same sums from fewer rows."""
    table = level.by_endpoint if by_endpoint else level.table
    sql = (
        template.replace("__TOTALS_TABLE__", _whole_days(by_endpoint) if level == HOUR else table)
        .replace("__TABLE__", table)
        .replace("__BUCKET__", _bucket(level.column))
        .replace("__CLIENT__", CLIENT_ERROR_SQL)
        .replace("__SERVER__", SERVER_ERROR_SQL)
    )
    for name, fragment in more.items():
        sql = sql.replace(f"__{name.upper()}__", fragment)
    return sql.replace("__WHERE__", where)


def apps_overview(runner: SqlRunner, window: Window, filters: Filters = Filters()) -> dict[str, Any]:
    """Every app with traffic in the window or a key: its envs, requests, error rate, p95 and a
    sparkline of requests per step. Filters other than ``env`` are ignored."""
    only_env = Filters(env=filters.env)
    where = only_env.where(window.level.column, app=False)
    parameters = _parameters("", window, only_env)
    per_app: dict[str, list[dict[str, Any]]] = {}
    for row in json_rows(runner, _sql(_SPARK_SQL, window.level, where, by_endpoint=True), parameters):
        per_app.setdefault(row["app"], []).append(row)
    sparks = {app: _series(window, rows, counts=["requests"])["requests"] for app, rows in per_app.items()}
    empty = [0] * len(window.buckets())
    apps = [
        {
            "app": row["app"],
            "envs": row["envs"],
            "requests": as_int(row["requests"]),
            "error_rate": as_float(row["error_rate"]),
            "p95": as_float(row["p95"]),
            "spark": sparks.get(row["app"], empty),
        }
        for row in json_rows(runner, _sql(_APPS_SQL, window.level, where, by_endpoint=True), parameters)
    ]
    return {"window": window.describe(), "apps": apps}


# ---------------------------------------------------------------------------------------------
# GET /api/traffic

_TRAFFIC_TOTALS_SQL = """
SELECT
    n AS requests,
    n / {minutes:UInt32} AS requests_per_minute,
    n_client AS client_errors,
    n_server AS server_errors,
    (n_client + n_server) / n AS error_rate,
    n_client / n AS client_error_rate,
    n_server / n AS server_error_rate,
    toUInt64(round(bytes_in)) AS bytes_in,
    toUInt64(round(bytes_out)) AS bytes_out
FROM
(
    SELECT
        sum(requests) AS n,
        sumIf(requests, __CLIENT__) AS n_client,
        sumIf(requests, __SERVER__) AS n_server,
        sum(request_size_sum) AS bytes_in,
        sum(response_size_sum) AS bytes_out
    FROM __TOTALS_TABLE__
    WHERE __WHERE__
)
"""

_TRAFFIC_SERIES_SQL = """
SELECT
    t,
    n AS requests,
    n_client AS client_errors,
    n_server AS server_errors,
    toUInt64(round(bytes_in)) AS bytes_in,
    toUInt64(round(bytes_out)) AS bytes_out
FROM
(
    SELECT
        __BUCKET__ AS t,
        sum(requests) AS n,
        sumIf(requests, __CLIENT__) AS n_client,
        sumIf(requests, __SERVER__) AS n_server,
        sum(request_size_sum) AS bytes_in,
        sum(response_size_sum) AS bytes_out
    FROM __TABLE__
    WHERE __WHERE__
    GROUP BY t
)
"""

_TRAFFIC_COUNTS = ("requests", "client_errors", "server_errors", "bytes_in", "bytes_out")
_TRAFFIC_RATES = ("requests_per_minute", "error_rate", "client_error_rate", "server_error_rate")


def _traffic_totals(runner: SqlRunner, app: str, window: Window, filters: Filters) -> dict[str, Any]:
    sql = _sql(_TRAFFIC_TOTALS_SQL, window.level, filters.where(window.level.column), not filters.consumer)
    (row,) = json_rows(runner, sql, _parameters(app, window, filters))
    totals: dict[str, Any] = {name: as_int(row[name]) for name in _TRAFFIC_COUNTS}
    return totals | {name: as_float(row[name]) for name in _TRAFFIC_RATES}


def traffic(runner: SqlRunner, app: str, window: Window, filters: Filters = Filters()) -> dict[str, Any]:
    """Requests, client and server errors, and bytes: totals of the window and of the one as long
    just before it (``previous``), and per step."""
    sql = _sql(_TRAFFIC_SERIES_SQL, window.level, filters.where(window.level.column), not filters.consumer)
    rows = json_rows(runner, sql, _parameters(app, window, filters))
    return {
        "window": window.describe(),
        "totals": _traffic_totals(runner, app, window, filters),
        "previous": _traffic_totals(runner, app, window.previous(), filters),
        "series": _series(window, rows, counts=_TRAFFIC_COUNTS),
    }


# ---------------------------------------------------------------------------------------------
# GET /api/latency

_LATENCY_COLUMNS = ",".join(
    [
        *(f"\n    tallyhub_quantile({q}, buckets, n) AS p{q[2:]}" for q in ("0.50", "0.95", "0.99")),
        "\n    tallyhub_apdex({apdex_t:Float64}, buckets, n) AS apdex",
    ]
)

# The series and the totals in one scan: ROLLUP adds the window's row (``total``), merged from the
# steps' rows (no row at all when nothing matched).
_LATENCY_SQL = f"""
SELECT t, total, {_LATENCY_COLUMNS}
FROM
(
    SELECT __BUCKET__ AS t, grouping(t) AS total, sum(requests) AS n, sumMap(duration_buckets) AS buckets
    FROM __TABLE__
    WHERE __WHERE__
    GROUP BY ROLLUP(t)
)
"""

_LATENCY_VALUES = ("p50", "p95", "p99", "apdex")


def latency(runner: SqlRunner, app: str, window: Window, filters: Filters = Filters()) -> dict[str, Any]:
    """p50, p95, p99 (seconds) and Apdex, in total and per step; Apdex with the app's threshold, or
    the endpoint's when the filters name one."""
    apdex_t = _apdex_t(runner, app, filters)
    where = filters.where(window.level.column)
    parameters = _parameters(app, window, filters, apdex_t=apdex_t)
    rows = json_rows(runner, _sql(_LATENCY_SQL, window.level, where, not filters.consumer), parameters)
    totals = next((row for row in rows if as_int(row["total"])), dict.fromkeys(_LATENCY_VALUES))
    return {
        "window": window.describe(),
        "apdex_t": apdex_t,
        "totals": {name: as_float(totals[name]) for name in _LATENCY_VALUES},
        "series": _series(window, [row for row in rows if not as_int(row["total"])], values=_LATENCY_VALUES),
    }


def _apdex_t(runner: SqlRunner, app: str, filters: Filters) -> float:
    if filters.method:
        own = endpoint_settings(runner, app, filters.method, filters.route)["apdex_t"]
        if own is not None:
            return own
    return app_settings(runner, app)["apdex_t"]


# ---------------------------------------------------------------------------------------------
# GET /api/endpoints

# Endpoints: the introspected ones (for the env, if one is asked) and those with traffic; with a
# method and route filter, that endpoint alone, whether or not it is known.
_ENDPOINTS_SQL = (
    """
WITH
    introspected AS
    (
        SELECT method, route, argMax(summary, last_seen) AS summary
        FROM endpoints FINAL
        WHERE __INTROSPECTED__
        GROUP BY method, route
    ),
    measured AS
    (
        SELECT
            method,
            route,
            sum(requests) AS n,
            sumIf(requests, __CLIENT__) AS n_client,
            sumIf(requests, __SERVER__) AS n_server,
            sumMap(duration_buckets) AS buckets
        FROM __TOTALS_TABLE__
        WHERE __WHERE__
        GROUP BY method, route
    )
SELECT
    method,
    route,
    d.summary AS summary,
    s.hidden AS hidden,
    s.apdex_t AS own_apdex_t,
    ifNull(own_apdex_t, {apdex_t:Float64}) AS apdex_t,
    x.statuses AS expected_statuses,
    t.n AS requests,
    t.n / {minutes:UInt32} AS requests_per_minute,
    t.n_client AS client_errors,
    t.n_server AS server_errors,
    (t.n_client + t.n_server) / t.n AS error_rate,
    __P50__ AS p50,
    __P95__ AS p95,
    __P99__ AS p99,
    __APDEX__ AS apdex,
    e.errors > 0 AS has_server_errors
FROM measured AS t
FULL JOIN
(
    SELECT method, route FROM introspected
    __ASKED__
) AS k USING (method, route)
LEFT JOIN introspected AS d USING (method, route)
LEFT JOIN
(
    SELECT method, route, hidden, apdex_t FROM endpoint_settings FINAL WHERE app = {app:String}
) AS s USING (method, route)
LEFT JOIN
(
    SELECT method, route, statuses FROM expected_client_error_codes WHERE app = {app:String}
) AS x USING (method, route)
LEFT JOIN
(
    SELECT method, route, sum(count) AS errors FROM server_errors WHERE __SERVER_ERRORS__ GROUP BY method, route
) AS e USING (method, route)
__VISIBLE__
ORDER BY requests DESC, route, method
LIMIT {limit:UInt32}
""".replace("__P50__", "tallyhub_quantile(0.50, t.buckets, t.n)")
    .replace("__P95__", "tallyhub_quantile(0.95, t.buckets, t.n)")
    .replace("__P99__", "tallyhub_quantile(0.99, t.buckets, t.n)")
    .replace("__APDEX__", "tallyhub_apdex(apdex_t, t.buckets, t.n)")
)


def _introspected_where(filters: Filters) -> str:
    parts = ["app = {app:String}"]
    if filters.env:
        parts.append("env = {env:String}")
    if filters.method:
        parts.append("method = {method:String} AND route = {route:String}")
    return " AND ".join(parts)


def _endpoint_rows(
    runner: SqlRunner, app: str, window: Window, filters: Filters, include_hidden: bool, limit: int
) -> list[dict[str, Any]]:
    sql = _sql(
        _ENDPOINTS_SQL,
        window.level,
        filters.where(window.level.column),
        by_endpoint=not filters.consumer,
        introspected=_introspected_where(filters),
        asked="UNION DISTINCT SELECT {method:String}, {route:String}" if filters.method else "",
        server_errors=filters.where(MINUTE.column, status=_SERVER_ERROR_STATUS),
        visible="" if include_hidden else "WHERE NOT hidden",
    )
    parameters = _parameters(app, window, filters, apdex_t=app_settings(runner, app)["apdex_t"], limit=limit)
    return [_endpoint(row) for row in json_rows(runner, sql, parameters)]


def _endpoint(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "method": row["method"],
        "route": row["route"],
        "summary": row["summary"],
        "hidden": bool(as_int(row["hidden"])),
        "apdex_t": as_float(row["apdex_t"]),
        "apdex_t_custom": row["own_apdex_t"] is not None,
        "expected_statuses": [int(s) for s in row["expected_statuses"]],
        "requests": as_int(row["requests"]),
        "requests_per_minute": as_float(row["requests_per_minute"]),
        "client_errors": as_int(row["client_errors"]),
        "server_errors": as_int(row["server_errors"]),
        "error_rate": as_float(row["error_rate"]),
        "p50": as_float(row["p50"]),
        "p95": as_float(row["p95"]),
        "p99": as_float(row["p99"]),
        "apdex": as_float(row["apdex"]),
        "has_server_errors": bool(as_int(row["has_server_errors"])),
    }


def endpoints(
    runner: SqlRunner,
    app: str,
    window: Window,
    filters: Filters = Filters(),
    include_hidden: bool = False,
    limit: int = LIST_LIMIT,
) -> dict[str, Any]:
    """Every endpoint the app introspected (with no traffic: 0 requests, None quantiles) and every
    one with traffic, most requests first; Apdex with each one's threshold. Hidden ones only
    with ``include_hidden``."""
    return {
        "window": window.describe(),
        "endpoints": _endpoint_rows(runner, app, window, filters, include_hidden, limit),
    }


# ---------------------------------------------------------------------------------------------
# GET /api/endpoint

_KNOWN_ENDPOINT_SQL = """
SELECT
    (SELECT count() FROM endpoints WHERE app = {app:String} AND method = {method:String} AND route = {route:String})
    + (SELECT count() FROM (SELECT 1 FROM requests_daily
                            WHERE app = {app:String} AND method = {method:String} AND route = {route:String} LIMIT 1))
    AS found
"""

# Histogram bars of a quarter octave (8 stored buckets, about ±9 %), and the requests of 0 s.
_HISTOGRAM_SQL = """
SELECT le, sum(c) AS count
FROM (SELECT sum(requests) AS n, sumMap(duration_buckets) AS b FROM __TOTALS_TABLE__ WHERE __WHERE__)
ARRAY JOIN
    arrayConcat([0.], arrayMap(k -> pow(2., (floor(k / 8) + 1) / 4), mapKeys(b))) AS le,
    arrayConcat([toUInt64(n - arraySum(mapValues(b)))], mapValues(b)) AS c
WHERE c > 0
GROUP BY le
ORDER BY le
"""

_STATUSES_SQL = """
SELECT __BUCKET__ AS t, status, sum(requests) AS requests
FROM __TABLE__
WHERE __WHERE__
GROUP BY t, status
"""

_CONSUMER_NAMES = """
(
    SELECT
        identifier,
        argMax(name, last_seen) AS name,
        argMax(`group`, last_seen) AS `group`,
        min(first_seen) AS first_minute,
        max(last_seen) AS last_minute
    FROM consumers FINAL
    WHERE __CONSUMERS__
    GROUP BY identifier
)"""

_ENDPOINT_CONSUMERS_SQL = f"""
SELECT r.consumer AS consumer, any(c.name) AS name, sum(r.requests) AS requests,
       sumIf(r.requests, r.status >= 400) AS errors
FROM __TOTALS_TABLE__ AS r
LEFT JOIN {_CONSUMER_NAMES} AS c ON c.identifier = r.consumer
WHERE __WHERE__ AND r.consumer != ''
GROUP BY r.consumer
ORDER BY requests DESC, consumer
LIMIT {{limit:UInt32}}
"""

_VALIDATION_ERRORS_SQL = """
SELECT method, route, location, message, type, sum(count) AS errors, uniqExact(consumer) AS consumers
FROM validation_errors
WHERE __WHERE__
GROUP BY method, route, location, message, type
ORDER BY errors DESC, route, method, location, message, type
LIMIT {limit:UInt32}
"""

# The stack trace of each group is read from its last row only: reading (decompressing) every row's
# trace of a month to pick one took most of the endpoint page's time.
_SERVER_ERRORS_SQL = """
SELECT t.*, s.stacktrace AS stacktrace
FROM
(
    SELECT
        method, route, exception_type, message, fingerprint, sum(count) AS errors,
        toUInt32(min(minute)) AS first_seen, toUInt32(max(minute)) AS last_seen
    FROM server_errors
    WHERE __WHERE__
    GROUP BY method, route, exception_type, message, fingerprint
    ORDER BY errors DESC, route, method, exception_type, message, fingerprint
    LIMIT {limit:UInt32}
) AS t
LEFT JOIN
(
    SELECT method, route, exception_type, message, fingerprint, any(stacktrace) AS stacktrace
    FROM server_errors
    WHERE __WHERE__ AND (method, route, exception_type, message, fingerprint, minute) IN
    (
        SELECT method, route, exception_type, message, fingerprint, max(minute)
        FROM server_errors
        WHERE __WHERE__
        GROUP BY method, route, exception_type, message, fingerprint
    )
    GROUP BY method, route, exception_type, message, fingerprint
) AS s USING (method, route, exception_type, message, fingerprint)
ORDER BY errors DESC, route, method, exception_type, message, fingerprint
"""


def known_endpoint(runner: SqlRunner, app: str, method: str, route: str) -> bool:
    """Whether the app introspected the endpoint or it ever had traffic."""
    (row,) = json_rows(runner, _KNOWN_ENDPOINT_SQL, {"app": app, "method": method, "route": route})
    return as_int(row["found"]) > 0


def _consumers_where(filters: Filters) -> str:
    return "app = {app:String} AND env = {env:String}" if filters.env else "app = {app:String}"


def endpoint_detail(
    runner: SqlRunner, app: str, window: Window, filters: Filters, limit: int = ERROR_LIMIT
) -> dict[str, Any]:
    """One endpoint (the filters' method and route): its row as in ``endpoints``, a histogram of
    durations, requests per status per step, its consumers and its errors."""
    if not filters.method:
        raise FilterError("an endpoint needs a method and a route")
    if not known_endpoint(runner, app, filters.method, filters.route):
        raise UnknownEndpoint(f"no endpoint {filters.method} {filters.route} in app {app!r}")
    level, where = window.level, filters.where(window.level.column)
    parameters = _parameters(app, window, filters, limit=limit)
    (endpoint,) = _endpoint_rows(runner, app, window, filters, include_hidden=True, limit=1)
    by_endpoint = not filters.consumer
    status_rows = json_rows(runner, _sql(_STATUSES_SQL, level, where, by_endpoint), parameters)
    consumer_sql = _sql(
        _ENDPOINT_CONSUMERS_SQL,
        level,
        filters.where(level.column, "r.status", "r."),
        consumers=_consumers_where(filters),
    )
    return {
        "window": window.describe(),
        "endpoint": endpoint,
        "histogram": [
            {"le": float(row["le"]), "count": as_int(row["count"])}
            for row in json_rows(runner, _sql(_HISTOGRAM_SQL, level, where, by_endpoint), parameters)
        ],
        "statuses": _status_series(window, status_rows),
        "consumers": [
            {
                "consumer": row["consumer"],
                "name": row["name"],
                "requests": as_int(row["requests"]),
                "errors": as_int(row["errors"]),
            }
            for row in json_rows(runner, consumer_sql, parameters)
        ],
        "validation_errors": [
            {key: value for key, value in error.items() if key not in ("method", "route", "consumers")}
            for error in _validation_errors(runner, app, window, filters, limit)
        ],
        "server_errors": _server_errors(runner, app, window, filters, limit),
    }


def _status_series(window: Window, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    codes = sorted({as_int(row["status"]) for row in rows})
    per_code = {
        str(code): _series(window, [row for row in rows if as_int(row["status"]) == code], counts=["requests"])[
            "requests"
        ]
        for code in codes
    }
    return {"time": window.buckets(), "codes": per_code}


def _validation_errors(
    runner: SqlRunner, app: str, window: Window, filters: Filters, limit: int
) -> list[dict[str, Any]]:
    sql = _sql(_VALIDATION_ERRORS_SQL, MINUTE, filters.where(MINUTE.column, status=_VALIDATION_ERROR_STATUS))
    return [
        {
            "method": row["method"],
            "route": row["route"],
            "location": row["location"],
            "message": row["message"],
            "type": row["type"],
            "count": as_int(row["errors"]),
            "consumers": as_int(row["consumers"]),
        }
        for row in json_rows(runner, sql, _parameters(app, window, filters, limit=limit))
    ]


def _server_errors(runner: SqlRunner, app: str, window: Window, filters: Filters, limit: int) -> list[dict[str, Any]]:
    sql = _sql(_SERVER_ERRORS_SQL, MINUTE, filters.where(MINUTE.column, status=_SERVER_ERROR_STATUS))
    return [
        {
            "method": row["method"],
            "route": row["route"],
            "exception_type": row["exception_type"],
            "message": row["message"],
            "fingerprint": row["fingerprint"],
            "count": as_int(row["errors"]),
            "first_seen": _time(row["first_seen"]),
            "last_seen": _time(row["last_seen"]),
            "stacktrace": row["stacktrace"],
        }
        for row in json_rows(runner, sql, _parameters(app, window, filters, limit=limit))
    ]


# ---------------------------------------------------------------------------------------------
# GET /api/errors


def errors(
    runner: SqlRunner, app: str, window: Window, filters: Filters = Filters(), limit: int = ERROR_LIMIT
) -> dict[str, Any]:
    """Server errors (with a stack trace) and validation errors, most frequent first. A status
    class filter keeps server errors for 5xx and validation errors for 4xx."""
    return {
        "window": window.describe(),
        "server_errors": _server_errors(runner, app, window, filters, limit),
        "validation_errors": _validation_errors(runner, app, window, filters, limit),
    }


# ---------------------------------------------------------------------------------------------
# GET /api/consumers

_CONSUMER_ROWS_SQL = f"""
SELECT
    r.consumer AS consumer,
    any(c.name) AS name,
    any(c.`group`) AS `group`,
    sum(r.requests) AS requests,
    sumIf(r.requests, r.status >= 400) AS errors,
    toUInt32(any(c.first_minute)) AS first_seen,
    toUInt32(any(c.last_minute)) AS last_seen
FROM __TOTALS_TABLE__ AS r
LEFT JOIN {_CONSUMER_NAMES} AS c ON c.identifier = r.consumer
WHERE __WHERE__ AND r.consumer != ''
GROUP BY r.consumer
"""

_CONSUMERS_SQL = f"{_CONSUMER_ROWS_SQL}ORDER BY requests DESC, consumer LIMIT {{limit:UInt32}}"

_CONSUMER_GROUPS_SQL = f"""
SELECT `group`, count() AS consumers, sum(requests) AS requests, sum(errors) AS errors
FROM ({_CONSUMER_ROWS_SQL})
GROUP BY `group`
ORDER BY requests DESC, `group`
LIMIT {{limit:UInt32}}
"""

# Per step, the consumers with requests in it: new when first seen in it (at or after its start).
_NEW_CONSUMERS_SQL = f"""
SELECT t, countIf(first_seen >= t) AS new, countIf(first_seen < t) AS returning
FROM
(
    SELECT __BUCKET__ AS t, r.consumer AS consumer, toUInt32(any(c.first_minute)) AS first_seen
    FROM __TABLE__ AS r
    LEFT JOIN {_CONSUMER_NAMES} AS c ON c.identifier = r.consumer
    WHERE __WHERE__ AND r.consumer != ''
    GROUP BY t, consumer
    HAVING sum(r.requests) > 0
)
GROUP BY t
"""


def consumers(
    runner: SqlRunner, app: str, window: Window, filters: Filters = Filters(), limit: int = LIST_LIMIT
) -> dict[str, Any]:
    """New and returning consumers per step, each consumer's requests and errors (status ≥ 400, as
    in `consumer_activity`), and the same per group."""
    level = window.level
    where = filters.where(level.column, "r.status", "r.")
    consumers_where = _consumers_where(filters)
    parameters = _parameters(app, window, filters, limit=limit)
    series_rows = json_rows(runner, _sql(_NEW_CONSUMERS_SQL, level, where, consumers=consumers_where), parameters)
    rows = json_rows(runner, _sql(_CONSUMERS_SQL, level, where, consumers=consumers_where), parameters)
    groups = json_rows(runner, _sql(_CONSUMER_GROUPS_SQL, level, where, consumers=consumers_where), parameters)
    return {
        "window": window.describe(),
        "series": _series(window, series_rows, counts=["new", "returning"]),
        "consumers": [
            {
                "consumer": row["consumer"],
                "name": row["name"],
                "group": row["group"],
                "requests": as_int(row["requests"]),
                "errors": as_int(row["errors"]),
                "first_seen": _time(row["first_seen"]),
                "last_seen": _time(row["last_seen"]),
            }
            for row in rows
        ],
        "groups": [
            {
                "group": row["group"],
                "consumers": as_int(row["consumers"]),
                "requests": as_int(row["requests"]),
                "errors": as_int(row["errors"]),
            }
            for row in groups
        ],
    }


# ---------------------------------------------------------------------------------------------
# GET /api/instances, and the instances' resources for alert rules

# Each instance's CPU and memory in [from, to), from the gauges its client sends with every export
# (`process.cpu.utilization`, `process.memory.usage`: wire.py): the last, highest and average
# values. Read where `metrics` is ordered by (app, env, name, time). Only gauges without
# attributes: what tallyhub's client sends. The same names from OpenTelemetry's own
# instrumentations are split by attributes (a CPU mode) or sent as a sum (memory, stored by the
# hub as deltas), which these reads must not average with the totals.
_RESOURCES_SQL = """(
    SELECT
        app, env, service, instance,
        argMaxIfOrNull(value, time, name = {cpu_metric:String}) AS cpu,
        maxIfOrNull(value, name = {cpu_metric:String}) AS cpu_max,
        avgIfOrNull(value, name = {cpu_metric:String}) AS cpu_avg,
        argMaxIfOrNull(value, time, name = {memory_metric:String}) AS memory,
        maxIfOrNull(value, name = {memory_metric:String}) AS memory_max,
        avgIfOrNull(value, name = {memory_metric:String}) AS memory_avg
    FROM metrics
    WHERE __APPS__ AND name IN ({cpu_metric:String}, {memory_metric:String})
      AND time >= {from:DateTime} AND time < {to:DateTime}
      AND kind = 'gauge' AND empty(attributes)
    GROUP BY app, env, service, instance
)"""
_RESOURCE_NAMES = {"cpu_metric": CPU_UTILIZATION, "memory_metric": MEMORY_USAGE}

# The view `instance_uptime` (migration 0014), read for one app: the view takes every app's last
# minute per instance from all of `requests` and its last heartbeat (`process.uptime`, what an
# idle instance sends) from `metrics`; here only the app's, from the window's start on (an
# instance last seen before it is not shown either way: its last_seen is then before the start).
_INSTANCES_SQL = """
SELECT
    i.env AS env, i.service AS service, i.instance AS instance, i.host AS host, i.pid AS pid,
    i.versions AS versions, i.started_at AS started_at,
    greatest(i.started_at, ifNull(r.last_minute, i.started_at), ifNull(h.last_heartbeat, i.started_at)) AS last_seen,
    toUInt64(greatest(0, dateDiff('second', i.started_at, last_seen))) AS uptime_s,
    toUInt32(started_at) AS started_at_s,
    toUInt32(last_seen) AS last_seen_s,
    last_seen < {now:DateTime} - INTERVAL 5 MINUTE AS stale,
    p.cpu AS cpu, p.cpu_max AS cpu_max, p.memory AS memory, p.memory_max AS memory_max
FROM (SELECT * FROM instances FINAL WHERE __WHERE__) AS i
LEFT JOIN
(
    SELECT env, service, instance, max(minute) AS last_minute
    FROM requests
    WHERE __WHERE__ AND minute >= {from:DateTime}
      AND instance IN (SELECT instance FROM instances WHERE __WHERE__)
    GROUP BY env, service, instance
) AS r
ON i.env = r.env AND i.service = r.service AND i.instance = r.instance
LEFT JOIN
(
    SELECT env, service, instance, max(time) AS last_heartbeat
    FROM metrics
    WHERE __WHERE__ AND name = {uptime:String} AND time >= {from:DateTime}
    GROUP BY env, service, instance
) AS h
ON i.env = h.env AND i.service = h.service AND i.instance = h.instance
LEFT JOIN __RESOURCES__ AS p
ON i.env = p.env AND i.service = p.service AND i.instance = p.instance
WHERE last_seen >= {from:DateTime} AND started_at < {to:DateTime}
ORDER BY last_seen DESC, started_at DESC, instance
LIMIT {limit:UInt32}
"""


def instances(
    runner: SqlRunner, app: str, window: Window, filters: Filters = Filters(), limit: int = LIST_LIMIT
) -> dict[str, Any]:
    """The app's processes that ran during the window (started before its end, last seen after its
    start), latest first; ``stale`` when last seen more than 5 minutes before ``window.now``;
    ``cpu`` (0..1 of the CPUs available to the process) and ``memory`` (resident bytes): the last
    values the instance sent in the window, ``cpu_max`` and ``memory_max`` the highest, None when
    it sent none. Filters other than ``env`` are ignored."""
    where = "app = {app:String}"
    if filters.env:
        where += " AND env = {env:String}"
    parameters = _parameters(
        app,
        window,
        Filters(env=filters.env),
        now=int(window.now.timestamp()),
        limit=limit,
        uptime=UPTIME,
        **_RESOURCE_NAMES,
    )
    sql = _INSTANCES_SQL.replace("__RESOURCES__", _RESOURCES_SQL.replace("__APPS__", where))
    rows = json_rows(runner, sql.replace("__WHERE__", where), parameters)
    return {
        "instances": [
            {
                "env": row["env"],
                "service": row["service"],
                "instance": row["instance"],
                "host": row["host"],
                "pid": as_int(row["pid"]),
                "versions": row["versions"],
                "started_at": as_int(row["started_at_s"]),
                "last_seen": as_int(row["last_seen_s"]),
                "uptime_s": as_int(row["uptime_s"]),
                "stale": bool(as_int(row["stale"])),
                "cpu": as_float(row["cpu"]),
                "cpu_max": as_float(row["cpu_max"]),
                "memory": _bytes(row["memory"]),
                "memory_max": _bytes(row["memory_max"]),
            }
            for row in rows
        ]
    }


def _bytes(value: Any) -> int | None:
    number = as_float(value)
    return None if number is None else round(number)


_INSTANCE_RESOURCES_SQL = f"""
SELECT app, env, max(cpu_avg) AS cpu, max(memory_avg) AS memory
FROM {_RESOURCES_SQL.replace("__APPS__", "app IN {apps:Array(String)}")}
GROUP BY app, env
ORDER BY app, env
"""


def instance_resources(runner: SqlRunner, apps: Sequence[str], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Per app and env that sent any: ``cpu``, the highest of its instances' average
    ``process.cpu.utilization`` over ``[start, end)`` (0..1 of the CPUs available to a process),
    and ``memory``, the highest of their average ``process.memory.usage`` (resident bytes); None
    when no instance sent that one. For alert rules ("an instance above 80 % CPU for 10 minutes").

    Read with the same SQL as ``instances()`` (``_RESOURCES_SQL``), so the dashboard and the alerts
    see one number. Times are whole seconds (naive ones are taken as UTC)."""
    if not apps:
        return []
    parameters = {
        "apps": list(apps),
        "from": _unix_seconds(start),
        "to": _unix_seconds(end),
        **_RESOURCE_NAMES,
    }
    return [
        {"app": row["app"], "env": row["env"], "cpu": as_float(row["cpu"]), "memory": _bytes(row["memory"])}
        for row in json_rows(runner, _INSTANCE_RESOURCES_SQL, parameters)
    ]


def _unix_seconds(value: datetime) -> int:
    return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())


# ---------------------------------------------------------------------------------------------
# Settings (migration 0010): PUT /api/settings/app, PUT /api/settings/endpoint

_KNOWN_APP_SQL = """
SELECT
    (SELECT count() FROM apps WHERE name = {app:String})
    + (SELECT count() FROM (SELECT 1 FROM requests_daily WHERE app = {app:String} LIMIT 1)) AS found
"""

_ENDPOINT_SETTINGS_SQL = """
SELECT s.hidden AS hidden, s.apdex_t AS apdex_t, x.statuses AS expected_statuses
FROM (SELECT {method:String} AS method, {route:String} AS route) AS k
LEFT JOIN
(
    SELECT method, route, hidden, apdex_t FROM endpoint_settings FINAL
    WHERE app = {app:String} AND method = {method:String} AND route = {route:String}
) AS s USING (method, route)
LEFT JOIN
(
    SELECT method, route, statuses FROM expected_client_error_codes
    WHERE app = {app:String} AND method = {method:String} AND route = {route:String}
) AS x USING (method, route)
"""


def known_app(runner: SqlRunner, app: str) -> bool:
    """Whether the app has a key (or had one) or ever had traffic."""
    (row,) = json_rows(runner, _KNOWN_APP_SQL, {"app": app})
    return as_int(row["found"]) > 0


def app_settings(runner: SqlRunner, app: str) -> dict[str, Any]:
    """``{"app", "apdex_t"}``: the app's Apdex threshold in seconds (DEFAULT_APDEX_T if never set)."""
    rows = json_rows(runner, "SELECT apdex_t FROM app_settings FINAL WHERE app = {app:String}", {"app": app})
    return {"app": app, "apdex_t": float(rows[0]["apdex_t"]) if rows else DEFAULT_APDEX_T}


def save_app_settings(runner: SqlRunner, app: str, apdex_t: object) -> dict[str, Any]:
    """Store the app's Apdex threshold (checked: ``SettingsError``); returns the settings as stored."""
    runner.raw(
        "INSERT INTO app_settings (app, apdex_t) SELECT {app:String}, {apdex_t:Float64}",
        {"app": app, "apdex_t": _checked_apdex_t(apdex_t)},
    )
    return app_settings(runner, app)


def endpoint_settings(runner: SqlRunner, app: str, method: str, route: str) -> dict[str, Any]:
    """``{"app", "method", "route", "hidden", "apdex_t", "expected_statuses"}``: ``apdex_t`` None
    for the app's; ``expected_statuses`` the 4xx statuses that are no client errors (0: every 4xx,
    as an endpoint in `expected_client_errors` has)."""
    (row,) = json_rows(runner, _ENDPOINT_SETTINGS_SQL, {"app": app, "method": method, "route": route})
    return {
        "app": app,
        "method": method,
        "route": route,
        "hidden": bool(as_int(row["hidden"])),
        "apdex_t": as_float(row["apdex_t"]),
        "expected_statuses": [int(s) for s in row["expected_statuses"]],
    }


def save_endpoint_settings(
    runner: SqlRunner,
    app: str,
    method: str,
    route: str,
    *,
    hidden: bool | None = None,
    apdex_t: float | Literal[_Keep.KEEP] | None = KEEP,
    expected_statuses: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Change the settings given (None for ``hidden`` and ``expected_statuses``, KEEP for
    ``apdex_t``, leave one as it is; ``apdex_t=None``: the app's); returns them as stored. The
    endpoint must be known (introspected, or with traffic)."""
    if not known_endpoint(runner, app, method, route):
        raise UnknownEndpoint(f"no endpoint {method} {route} in app {app!r}")
    current = endpoint_settings(runner, app, method, route)
    new_apdex_t = current["apdex_t"] if apdex_t is KEEP else apdex_t
    runner.raw(
        "INSERT INTO endpoint_settings (app, method, route, hidden, apdex_t, expected_statuses) "
        "SELECT {app:String}, {method:String}, {route:String}, {hidden:UInt8}, {apdex_t:Nullable(Float64)}, "
        "{expected_statuses:Array(UInt16)}",
        {
            "app": app,
            "method": method,
            "route": route,
            "hidden": int(current["hidden"] if hidden is None else bool(hidden)),
            "apdex_t": None if new_apdex_t is None else _checked_apdex_t(new_apdex_t),
            "expected_statuses": _checked_statuses(
                current["expected_statuses"] if expected_statuses is None else expected_statuses
            ),
        },
    )
    return endpoint_settings(runner, app, method, route)


def _checked_apdex_t(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_APDEX_T:
        raise SettingsError(f"apdex_t: a number of seconds above 0 and at most {MAX_APDEX_T:g}, not {value!r}")
    return float(value)


def _checked_statuses(values: Sequence[Any]) -> list[int]:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not (value == 0 or 400 <= value <= 499):
            raise SettingsError(f"expected_statuses: 4xx status codes (or 0 for every 4xx), not {value!r}")
    return sorted(set(values))
