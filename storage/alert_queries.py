"""The alerts' reads and writes (migration 0016): rules, states, history, deliveries, and the numbers
rules are evaluated on.

The numbers are the dashboard's: the same sums, ``CLIENT_ERROR_SQL`` / ``SERVER_ERROR_SQL``,
``tallyhub_quantile`` and ``tallyhub_apdex`` (with the app's Apdex threshold, or the endpoint's) as
`storage/dashboard_queries.py`, on the per-minute ``requests`` table. Every rule of one shape (which
of env, endpoint, consumer, consumer group it narrows to) and one window is measured by one query
grouped by those keys, however many apps and rules there are.

Works on any ``SqlRunner`` (a local client or the running hub). Rows go in as JSONEachRow text in a
query parameter, times as text: typed by the ``format()`` schema, never as epoch integers.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tallyhub.storage.apps import SqlRunner
from tallyhub.storage.dashboard_queries import CLIENT_ERROR_SQL, DEFAULT_APDEX_T, SERVER_ERROR_SQL
from tallyhub.storage.json_rows import as_float, as_int, json_rows
from tallyhub.wire import UPTIME

# ---------------------------------------------------------------------------------------------
# Writing rows


def sql_time(value: datetime | None) -> str | None:
    """A time as ClickHouse reads it in a typed column (UTC, milliseconds)."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def read_time(text: str | None) -> datetime | None:
    """A DateTime64 column's JSON text (UTC) as an aware datetime."""
    return None if not text else datetime.fromisoformat(text).replace(tzinfo=UTC)


Schema = tuple[tuple[str, str], ...]
"""(column, type) of the rows a table takes."""


def insert_rows(runner: SqlRunner, table: str, schema: Schema, rows: Iterable[Mapping[str, Any]]) -> int:
    """One INSERT of ``rows`` (dicts keyed by the schema's columns); returns how many."""
    text = "\n".join(json.dumps(row, separators=(",", ":")) for row in rows)
    if not text:
        return 0
    columns = ", ".join(f"`{name}`" for name, _ in schema)
    runner.raw(
        f"INSERT INTO {table} ({columns}) "
        f"SELECT {columns} FROM format(JSONEachRow, {{schema:String}}, {{rows:String}})",
        {"schema": ", ".join(f"`{name}` {kind}" for name, kind in schema), "rows": text},
    )
    return text.count("\n") + 1


# ---------------------------------------------------------------------------------------------
# Rules

_RULES_SCHEMA = (
    ("name", "String"),
    ("app", "String"),
    ("metric", "String"),
    ("rule", "String"),
    ("source", "String"),
    ("removed", "UInt8"),
)


def save_rule(runner: SqlRunner, name: str, app: str, metric: str, rule_json: str, source: str) -> None:
    insert_rows(
        runner,
        "alert_rules",
        _RULES_SCHEMA,
        [{"name": name, "app": app, "metric": metric, "rule": rule_json, "source": source, "removed": 0}],
    )


def remove_rules(runner: SqlRunner, names: Collection[str]) -> None:
    rows = [{"name": name, "app": "", "metric": "", "rule": "", "source": "", "removed": 1} for name in names]
    insert_rows(runner, "alert_rules", _RULES_SCHEMA, rows)


def stored_rules(runner: SqlRunner) -> list[dict[str, str]]:
    """``{"name", "rule", "source"}`` of every rule, by name; ``rule`` is its JSON."""
    return json_rows(
        runner,
        "SELECT name, rule, source FROM alert_rules FINAL WHERE removed = 0 ORDER BY name",
        {},
    )


# ---------------------------------------------------------------------------------------------
# States, history, deliveries

_STATES_SCHEMA = (
    ("rule", "String"),
    ("state", "String"),
    ("since", "Nullable(DateTime64(3, 'UTC'))"),
    ("breach_since", "Nullable(DateTime64(3, 'UTC'))"),
    ("clear_since", "Nullable(DateTime64(3, 'UTC'))"),
    ("value", "Nullable(Float64)"),
    ("evaluated_at", "DateTime64(3, 'UTC')"),
)
_HISTORY_SCHEMA = (
    ("time", "DateTime64(3, 'UTC')"),
    ("rule", "String"),
    ("app", "String"),
    ("env", "String"),
    ("metric", "String"),
    ("before", "String"),
    ("after", "String"),
    ("value", "Nullable(Float64)"),
    ("threshold", "Float64"),
    ("condition", "String"),
    ("since", "DateTime64(3, 'UTC')"),
    ("notification_id", "String"),
    ("notification", "String"),
    ("channels", "Array(String)"),
)
_DELIVERIES_SCHEMA = (
    ("time", "DateTime64(3, 'UTC')"),
    ("notification_id", "String"),
    ("rule", "String"),
    ("state", "String"),
    ("channel", "String"),
    ("channel_id", "String"),
    ("attempt", "UInt16"),
    ("ok", "Bool"),
    ("final", "Bool"),
    ("error", "String"),
    ("duration_ms", "Float64"),
)


def load_states(runner: SqlRunner) -> dict[str, dict[str, Any]]:
    """Each rule's last state: ``{"state", "since", "breach_since", "clear_since", "value", "evaluated_at"}``."""
    rows = json_rows(runner, "SELECT * FROM alert_states FINAL", {})
    return {
        row["rule"]: {
            "state": row["state"],
            **{key: read_time(row[key]) for key in ("since", "breach_since", "clear_since", "evaluated_at")},
            "value": as_float(row["value"]),
        }
        for row in rows
    }


def save_states(runner: SqlRunner, states: Mapping[str, Mapping[str, Any]]) -> None:
    """Store the rules' states (one row each, the newest ``evaluated_at`` wins)."""
    rows = [
        {
            "rule": rule,
            "state": state["state"],
            **{key: sql_time(state[key]) for key in ("since", "breach_since", "clear_since", "evaluated_at")},
            "value": state["value"],
        }
        for rule, state in states.items()
    ]
    insert_rows(runner, "alert_states", _STATES_SCHEMA, rows)


def record_history(runner: SqlRunner, rows: Sequence[Mapping[str, Any]]) -> None:
    """Transitions: dicts with the columns of ``alert_history`` (``time`` an aware datetime)."""
    insert_rows(runner, "alert_history", _HISTORY_SCHEMA, [{**row, "time": sql_time(row["time"])} for row in rows])


def record_deliveries(runner: SqlRunner, rows: Sequence[Mapping[str, Any]]) -> None:
    """Delivery attempts: dicts with the columns of ``alert_deliveries`` (``time`` an aware datetime)."""
    insert_rows(
        runner, "alert_deliveries", _DELIVERIES_SCHEMA, [{**row, "time": sql_time(row["time"])} for row in rows]
    )


def latest_transitions(runner: SqlRunner) -> dict[str, dict[str, Any]]:
    """Each rule's latest recorded transition: ``{"after", "time", "since"}``."""
    rows = json_rows(
        runner,
        "SELECT rule, argMax(after, time) AS after, max(time) AS latest, argMax(since, time) AS began "
        "FROM alert_history GROUP BY rule",
        {},
    )
    return {
        row["rule"]: {"after": row["after"], "time": read_time(row["latest"]), "since": read_time(row["began"])}
        for row in rows
    }


_UNFINISHED_SQL = """
SELECT h.notification AS notification, h.channels AS channels, d.done AS done
FROM
(
    SELECT notification_id, notification, channels FROM alert_history
    WHERE notification_id != '' AND time >= {since:DateTime64(3)}
) AS h
LEFT JOIN
(
    SELECT notification_id, groupUniqArrayIf(channel_id, final) AS done FROM alert_deliveries
    WHERE time >= {since:DateTime64(3)}
    GROUP BY notification_id
) AS d USING (notification_id)
"""


def notifications_since(runner: SqlRunner, since: datetime) -> list[tuple[str, list[str], list[str]]]:
    """The notifications of transitions since ``since``: ``(notification JSON, its channels as the
    rule named them, the ``channel_id`` of those that delivered it or gave up)``."""
    rows = json_rows(runner, _UNFINISHED_SQL, {"since": sql_time(since)})
    return [(row["notification"], row["channels"], row["done"] or []) for row in rows]


def history(runner: SqlRunner, rule: str = "", app: str = "", limit: int = 100) -> list[dict[str, Any]]:
    """The newest transitions first, of one rule or one app (or every one)."""
    where = ["1"]
    if rule:
        where.append("rule = {rule:String}")
    if app:
        where.append("app = {app:String}")
    return json_rows(
        runner,
        "SELECT toUnixTimestamp64Milli(time) / 1000 AS time, rule, app, env, metric, before, after, value, threshold, "
        f"condition, notification_id, channels FROM alert_history WHERE {' AND '.join(where)} "
        "ORDER BY time DESC, rule LIMIT {limit:UInt32}",
        {"rule": rule, "app": app, "limit": limit},
    )


def deliveries(runner: SqlRunner, rule: str = "", limit: int = 100) -> list[dict[str, Any]]:
    """The newest delivery attempts first, of one rule (or every one)."""
    where = "rule = {rule:String}" if rule else "1"
    return json_rows(
        runner,
        "SELECT toUnixTimestamp64Milli(time) / 1000 AS time, notification_id, rule, state, channel, attempt, ok, "
        f"final, error, duration_ms FROM alert_deliveries WHERE {where} ORDER BY time DESC LIMIT {{limit:UInt32}}",
        {"rule": rule, "limit": limit},
    )


# ---------------------------------------------------------------------------------------------
# What rules measure


@dataclass(frozen=True)
class Scope:
    """What a request metric is measured over: an app, narrowed by what is set (``""``: not narrowed)."""

    app: str
    env: str = ""
    method: str = ""
    route: str = ""
    consumer: str = ""
    consumer_group: str = ""

    def keys(self) -> tuple[str, ...]:
        """The columns a query groups by to measure every scope of this shape at once."""
        keys = ["app"]
        keys += ["env"] if self.env else []
        keys += ["method", "route"] if self.method else []
        keys += ["consumer"] if self.consumer else []
        keys += ["consumer_group"] if self.consumer_group else []
        return tuple(keys)


REQUEST_VALUES = (
    "requests",
    "requests_per_minute",
    "client_errors",
    "server_errors",
    "error_rate",
    "consumers",
    "bytes_in",
    "bytes_out",
    "p50",
    "p95",
    "p99",
    "apdex",
)

_REQUEST_VALUES_SQL = """
SELECT
    __OUTER_KEYS__,
    m.n AS requests,
    m.n / {minutes:UInt32} AS requests_per_minute,
    m.n_client AS client_errors,
    m.n_server AS server_errors,
    (m.n_client + m.n_server) / m.n AS error_rate,
    m.consumers AS consumers,
    m.bytes_in AS bytes_in,
    m.bytes_out AS bytes_out,
    tallyhub_quantile(0.5, m.buckets, m.n) AS p50,
    tallyhub_quantile(0.95, m.buckets, m.n) AS p95,
    tallyhub_quantile(0.99, m.buckets, m.n) AS p99,
    tallyhub_apdex(coalesce(__ENDPOINT_APDEX__, s.apdex_t, {default_apdex_t:Float64}), m.buckets, m.n) AS apdex
FROM
(
    SELECT
        __KEYS__,
        sum(requests) AS n,
        sumIf(requests, __CLIENT__) AS n_client,
        sumIf(requests, __SERVER__) AS n_server,
        uniqExactIf(consumer, consumer != '') AS consumers,
        sum(request_size_sum) AS bytes_in,
        sum(response_size_sum) AS bytes_out,
        sumMap(duration_buckets) AS buckets
    FROM __SOURCE__
    WHERE app IN {apps:Array(String)} AND minute >= {from:DateTime} AND minute < {to:DateTime}
    GROUP BY __KEYS__
) AS m
LEFT JOIN (SELECT app, toNullable(apdex_t) AS apdex_t FROM app_settings FINAL) AS s ON s.app = m.app
__ENDPOINT_JOIN__
"""

# the requests rows with each consumer's group (its latest, as `consumers` keeps it)
_WITH_GROUPS = """(
    SELECT
        r.app AS app, r.env AS env, r.method AS method, r.route AS route, r.status AS status, r.consumer AS consumer,
        r.requests AS requests, r.duration_buckets AS duration_buckets, r.request_size_sum AS request_size_sum,
        r.response_size_sum AS response_size_sum, r.minute AS minute, g.consumer_group AS consumer_group
    FROM requests AS r
    INNER JOIN
    (
        SELECT app, identifier, tupleElement(max(latest), 'group') AS consumer_group
        FROM consumers WHERE app IN {apps:Array(String)} GROUP BY app, identifier
    ) AS g ON g.app = r.app AND g.identifier = r.consumer
    WHERE r.app IN {apps:Array(String)} AND r.minute >= {from:DateTime} AND r.minute < {to:DateTime}
)"""

_ENDPOINT_JOIN = (
    "LEFT JOIN (SELECT app, method, route, apdex_t FROM endpoint_settings FINAL) AS e "
    "ON e.app = m.app AND e.method = m.method AND e.route = m.route"
)


def request_values(
    runner: SqlRunner, scopes: Collection[Scope], start: datetime, end: datetime
) -> dict[Scope, dict[str, float | None]]:
    """Each scope's ``REQUEST_VALUES`` over ``[start, end)`` (whole minutes): counts 0 and rates,
    quantiles and Apdex None where the scope had no requests. One query per shape of scope."""
    shapes: dict[tuple[str, ...], list[Scope]] = {}
    for scope in scopes:
        shapes.setdefault(scope.keys(), []).append(scope)
    minutes = max(int((end - start).total_seconds()) // 60, 1)
    empty = {name: 0.0 if name in _COUNTS else None for name in REQUEST_VALUES}
    values: dict[Scope, dict[str, float | None]] = {scope: dict(empty) for scope in scopes}
    for keys, members in shapes.items():
        sql = (
            _REQUEST_VALUES_SQL.replace("__OUTER_KEYS__", ", ".join(f"m.{key} AS {key}" for key in keys))
            .replace("__KEYS__", ", ".join(keys))
            .replace("__SOURCE__", _WITH_GROUPS if "consumer_group" in keys else "requests")
            .replace("__ENDPOINT_APDEX__", "e.apdex_t" if "method" in keys else "NULL")
            .replace("__ENDPOINT_JOIN__", _ENDPOINT_JOIN if "method" in keys else "")
            .replace("__CLIENT__", CLIENT_ERROR_SQL)
            .replace("__SERVER__", SERVER_ERROR_SQL)
        )
        parameters = {
            "apps": sorted({scope.app for scope in members}),
            "from": int(start.timestamp()),
            "to": int(end.timestamp()),
            "minutes": minutes,
            "default_apdex_t": DEFAULT_APDEX_T,
        }
        wanted = {tuple(getattr(scope, key) for key in keys): scope for scope in members}
        for row in json_rows(runner, sql, parameters):
            found = wanted.get(tuple(row[key] for key in keys))
            if found is not None:
                values[found] = {name: as_float(row[name]) for name in REQUEST_VALUES}
    return values


_COUNTS = frozenset(
    {"requests", "requests_per_minute", "client_errors", "server_errors", "consumers", "bytes_in", "bytes_out"}
)

_LAST_EXPORT_SQL = """
SELECT app, env, toUnixTimestamp(max(t)) AS last_seen
FROM
(
    SELECT app, env, max(minute) + 60 AS t FROM requests
    WHERE app IN {apps:Array(String)} AND minute >= {since:DateTime}
    GROUP BY app, env
    UNION ALL
    SELECT app, env, max(toDateTime(time)) AS t FROM metrics
    WHERE app IN {apps:Array(String)} AND name = {uptime:String} AND time >= {since:DateTime}
    GROUP BY app, env
)
GROUP BY app, env
"""


def last_exports(
    runner: SqlRunner, apps: Collection[str], now: datetime, lookback: timedelta
) -> dict[tuple[str, str], datetime]:
    """When each (app, env) last exported, within ``lookback`` before ``now``: the end of its last
    minute with requests, or its last ``process.uptime`` (which tallyhub's client sends in every
    export, idle or not) — what the `instance_uptime` view calls last seen (migration 0014)."""
    rows = json_rows(
        runner,
        _LAST_EXPORT_SQL,
        {"apps": sorted(apps), "since": int((now - lookback).timestamp()), "uptime": UPTIME},
    )
    return {(row["app"], row["env"]): datetime.fromtimestamp(int(row["last_seen"]), UTC) for row in rows}


# ---------------------------------------------------------------------------------------------
# The dashboard's alerts page (GET /api/alerts)

HISTORY_LIMIT = 50
"""Transitions the dashboard's alerts page shows."""
_STATE_ORDER = {"firing": 0, "pending": 1}
"""Firing rules first, then pending ones, then the rest (by name)."""

_APP_RULES_SQL = """
SELECT name, rule, source FROM alert_rules FINAL
WHERE removed = 0 AND app = {app:String}
ORDER BY name
"""

_APP_STATES_SQL = """
SELECT
    rule, state,
    toUnixTimestamp64Milli(since) / 1000 AS since,
    toUnixTimestamp64Milli(breach_since) / 1000 AS breach_since,
    toUnixTimestamp64Milli(clear_since) / 1000 AS clear_since,
    value,
    toUnixTimestamp64Milli(evaluated_at) / 1000 AS evaluated_at
FROM alert_states FINAL
WHERE rule IN {rules:Array(String)}
"""

# Each rule's latest notification, and each channel's latest attempt at it (channels as deliveries
# record them: a URL shown up to its host; told apart by `channel_id` where two read alike).
_LAST_DELIVERIES_SQL = """
SELECT
    rule, notification_id, channel, channel_id,
    toUnixTimestamp64Milli(max(time)) / 1000 AS last_time,
    argMax(state, (time, attempt)) AS last_state,
    max(attempt) AS last_attempt,
    argMax(ok, (time, attempt)) AS last_ok,
    argMax(final, (time, attempt)) AS last_final,
    argMax(error, (time, attempt)) AS last_error
FROM alert_deliveries
WHERE rule IN {rules:Array(String)}
  AND (rule, notification_id) IN
  (
      SELECT rule, argMax(notification_id, time) FROM alert_deliveries
      WHERE rule IN {rules:Array(String)}
      GROUP BY rule
  )
GROUP BY rule, notification_id, channel, channel_id
ORDER BY rule, channel, channel_id
"""


def app_alerts(runner: SqlRunner, app: str, rule: str = "", limit: int = HISTORY_LIMIT) -> dict[str, Any]:
    """The app's rules and their latest transitions, for the dashboard:

    ``rules``: ``{"name", "source", "rule": the stored rule (its JSON, decoded), "state": {"state",
    "since", "breach_since", "clear_since", "value", "evaluated_at"} or None (never evaluated),
    "deliveries": each channel's latest attempt at the rule's latest notification}`` — firing first,
    then pending, then the rest, each by name; ``history``: the newest ``limit`` transitions of the
    app (of ``rule`` only, when given), without the channels they notified (which the stored rows
    keep unredacted). Times are Unix seconds (with milliseconds).

    Stored JSON is decoded, not parsed into rules: rules are `tallyhub.alerts`' (a layer above)."""
    rows = json_rows(runner, _APP_RULES_SQL, {"app": app})
    names = [row["name"] for row in rows]
    states: dict[str, dict[str, Any]] = {}
    delivered: dict[str, list[dict[str, Any]]] = {}
    if names:
        for row in json_rows(runner, _APP_STATES_SQL, {"rules": names}):
            states[row.pop("rule")] = {
                "state": row["state"],
                **{key: as_float(row[key]) for key in ("since", "breach_since", "clear_since", "evaluated_at")},
                "value": as_float(row["value"]),
            }
        for row in json_rows(runner, _LAST_DELIVERIES_SQL, {"rules": names}):
            delivered.setdefault(row["rule"], []).append(
                {
                    "notification_id": row["notification_id"],
                    "channel": row["channel"],
                    "time": as_float(row["last_time"]),
                    "state": row["last_state"],
                    "attempt": as_int(row["last_attempt"]),
                    "ok": bool(row["last_ok"]),
                    "final": bool(row["last_final"]),
                    "error": row["last_error"],
                }
            )
    rules = [
        {
            "name": row["name"],
            "source": row["source"],
            "rule": json.loads(row["rule"]),
            "state": states.get(row["name"]),
            "deliveries": delivered.get(row["name"], []),
        }
        for row in rows
    ]
    rules.sort(key=lambda r: (_STATE_ORDER.get((r["state"] or {}).get("state", ""), 2), r["name"]))
    transitions = [
        {key: value for key, value in row.items() if key != "channels"}
        for row in history(runner, rule=rule, app=app, limit=limit)
    ]
    return {"rules": rules, "history": transitions}
