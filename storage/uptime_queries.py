"""The `health_checks` table (migration 0017): the results of the hub's uptime checks, written in
batches, and read as the latest result per URL (what alert rules evaluate) and as uptime and
incidents per app over 24 h, 7 d and 30 d (the dashboard's uptime page).

Works on any `SqlRunner` (`storage/apps.py`); reads are read-only queries. User values reach SQL only
as query parameters; times go in as Unix milliseconds (``Int64``) and are typed in SQL, never as
epoch integers in ``VALUES`` (which chDB misreads for ``DateTime64``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tallyhub.storage.apps import SqlRunner
from tallyhub.storage.json_rows import as_int, json_rows

WINDOWS = {"24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
"""The windows of ``uptime``, each ending at its ``now``; the last is the longest."""
INCIDENT_LIMIT = 1000
"""The most incidents read (the latest first): a URL that flaps every other minute has thousands a month."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class CheckResult:
    """One health check of one URL: its first attempt and, if that failed, its retry."""

    time: datetime
    """When the check began (UTC; a naive datetime is read as UTC)."""
    app: str
    env: str
    url: str
    ok: bool
    """A 2xx answer within the timeout, at the first attempt or the retry."""
    status: int = 0
    """The HTTP status of the last attempt; 0: no answer."""
    duration_ms: float = 0.0
    """How long the last attempt took."""
    attempts: int = 1
    error: str = ""
    """What went wrong at the last attempt (``HTTP 503``, ``timed out after 5 s``…); empty when ok."""


def record_checks(runner: SqlRunner, results: Sequence[CheckResult]) -> None:
    """Store ``results`` with one INSERT (a batch as one JSON parameter, typed by ``JSONExtract``:
    the same on every runner, the hub's query endpoint included)."""
    if not results:
        return
    rows = [[_ms(r.time), r.app, r.env, r.url, r.ok, r.status, r.duration_ms, r.attempts, r.error] for r in results]
    runner.raw(
        "INSERT INTO health_checks (time, app, env, url, ok, status, duration_ms, attempts, error) "
        "SELECT fromUnixTimestamp64Milli(r.1, 'UTC'), r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9 "
        "FROM (SELECT arrayJoin(JSONExtract({rows:String}, "
        "'Array(Tuple(Int64, String, String, String, Bool, UInt16, Float64, UInt8, String))')) AS r)",
        {"rows": json.dumps(rows)},
    )


_LATEST_SQL = """
SELECT
    app, env, url,
    toUnixTimestamp64Milli(max(time)) AS time_ms,
    argMax(ok, time) AS ok,
    argMax(status, time) AS status,
    argMax(duration_ms, time) AS duration_ms,
    argMax(attempts, time) AS attempts,
    argMax(error, time) AS error
FROM health_checks
WHERE __WHERE__
GROUP BY app, env, url
"""


def latest_checks(
    runner: SqlRunner, apps: Sequence[str] | None = None, *, since: datetime | None = None
) -> dict[tuple[str, str, str], CheckResult]:
    """The latest result per (app, env, url), of ``apps`` (None: every app). ``since``: only checks
    from then on (a URL checked last before it is left out), so that a caller that runs every minute
    reads the recent parts only, not 12 months of checks."""
    if apps is not None and not apps:
        return {}
    conditions = ["1"]
    parameters: dict[str, Any] = {}
    if apps is not None:
        conditions.append("app IN {apps:Array(String)}")
        parameters["apps"] = list(apps)
    if since is not None:
        conditions.append("time >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')")
        parameters["since"] = _ms(since)
    rows = json_rows(runner, _LATEST_SQL.replace("__WHERE__", " AND ".join(conditions)), parameters)
    return {
        (row["app"], row["env"], row["url"]): CheckResult(
            time=_EPOCH + as_int(row["time_ms"]) * _MS,
            app=row["app"],
            env=row["env"],
            url=row["url"],
            ok=bool(row["ok"]),
            status=as_int(row["status"]),
            duration_ms=float(row["duration_ms"]),
            attempts=as_int(row["attempts"]),
            error=row["error"],
        )
        for row in rows
    }


# The checks of the longest window: totals per window, then the runs of failures.
_RANGE = (
    "app = {app:String} AND time > fromUnixTimestamp64Milli({from_30d:Int64}, 'UTC') "
    "AND time <= fromUnixTimestamp64Milli({now:Int64}, 'UTC')"
)

# An incident is a run of failed checks of one (env, url): the failed checks that have as many
# healthy checks before them (``run``); it ends at the first healthy check after it (``end_ms``, 0:
# none yet, ongoing). Runs are cut at the start of the 30 days: an incident older than that shows
# from its first failed check within them.
_INCIDENTS_SQL = f"""
SELECT
    env, url,
    toUnixTimestamp(min(time)) AS start,
    toUnixTimestamp64Milli(max(time)) AS last_failure_ms,
    any(end_ms) AS end_ms,
    count() AS checks,
    argMin(error, time) AS error
FROM
(
    SELECT
        env, url, time, ok, error,
        sum(toUInt32(ok)) OVER (PARTITION BY env, url ORDER BY time ROWS UNBOUNDED PRECEDING) AS run,
        minIf(toUnixTimestamp64Milli(time), ok)
            OVER (PARTITION BY env, url ORDER BY time ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS end_ms
    FROM health_checks
    WHERE {_RANGE} __ENV__
)
WHERE NOT ok
GROUP BY env, url, run
ORDER BY last_failure_ms DESC, env, url
LIMIT {{limit:UInt32}}
"""


def _totals_sql() -> str:
    columns = []
    for name in WINDOWS:
        since = f"time > fromUnixTimestamp64Milli({{from_{name}:Int64}}, 'UTC')"
        columns += [
            f"countIf({since}) AS checks_{name}",
            f"countIf({since} AND NOT ok) AS failed_{name}",
            f"if(checks_{name} = 0, NULL, (checks_{name} - failed_{name}) / checks_{name}) AS uptime_{name}",
        ]
    return f"SELECT {', '.join(columns)} FROM health_checks WHERE {_RANGE} __ENV__"


def uptime(runner: SqlRunner, app: str, now: datetime, env: str = "") -> dict[str, dict[str, Any]]:
    """Per window of ``WINDOWS`` (the checks after ``now`` minus the window, up to ``now``): ``checks``,
    ``failed``, ``uptime`` (the fraction of healthy checks, over all the app's URLs; None without
    checks) and ``incidents`` (the latest first), those with a failed check in the window: ``url``,
    ``env``, ``start`` (its first failed check, Unix seconds), ``end`` (its first healthy check after
    it; None while it goes on), ``checks`` (its failed checks) and ``error`` (the first one's).

    ``env``: the checks of that env only; empty: every env."""
    parameters: dict[str, Any] = {"app": app, "now": _ms(now), "limit": INCIDENT_LIMIT}
    parameters |= {f"from_{name}": _ms(now - span) for name, span in WINDOWS.items()}
    env_condition = ""
    if env:
        env_condition, parameters["env"] = "AND env = {env:String}", env
    (totals,) = json_rows(runner, _totals_sql().replace("__ENV__", env_condition), parameters)
    incidents = json_rows(runner, _INCIDENTS_SQL.replace("__ENV__", env_condition), parameters)
    incidents.sort(key=lambda i: (-as_int(i["start"]), i["env"], i["url"]))
    out = {}
    for name in WINDOWS:
        since_ms = parameters[f"from_{name}"]
        out[name] = {
            "checks": as_int(totals[f"checks_{name}"]),
            "failed": as_int(totals[f"failed_{name}"]),
            "uptime": totals[f"uptime_{name}"],
            "incidents": [
                {
                    "url": i["url"],
                    "env": i["env"],
                    "start": as_int(i["start"]),
                    "end": as_int(i["end_ms"]) // 1000 or None,
                    "checks": as_int(i["checks"]),
                    "error": i["error"],
                }
                for i in incidents
                if as_int(i["last_failure_ms"]) > since_ms
            ],
        }
    return out


def _ms(time: datetime) -> int:
    """Unix milliseconds, exactly (a naive ``time`` is UTC)."""
    if time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    return (time - _EPOCH) // _MS


def app_uptime(runner: SqlRunner, app: str, now: datetime, env: str = "") -> dict[str, Any]:
    """The dashboard's uptime section: ``uptime`` (as ``uptime()`` answers, up to ``now``) and
    ``checks``, the latest check of each of the app's URLs checked in the longest window, by env and
    URL: ``{"url", "env", "time" (Unix seconds, with milliseconds), "ok", "status", "duration_ms",
    "attempts", "error"}``. ``env``: that env only."""
    latest = latest_checks(runner, [app], since=now - max(WINDOWS.values()))
    checks = [
        {
            "url": check.url,
            "env": check.env,
            "time": _ms(check.time) / 1000,
            "ok": check.ok,
            "status": check.status,
            "duration_ms": check.duration_ms,
            "attempts": check.attempts,
            "error": check.error,
        }
        for (_, check_env, _), check in sorted(latest.items())
        if env in ("", check_env)
    ]
    return {"uptime": uptime(runner, app, now, env), "checks": checks}
