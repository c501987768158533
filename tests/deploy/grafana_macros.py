"""The Grafana ClickHouse plugin's SQL macros and dashboard variables, expanded as the plugin does
(grafana/clickhouse-datasource, pkg/macros): what tests/deploy runs a panel's query as."""

from __future__ import annotations

import datetime as dt
import re


def expand(sql: str, start: dt.datetime, end: dt.datetime, interval_s: int, variables: dict[str, str]) -> str:
    """``sql`` with the macros it uses for the time range [start, end] and ``$name``/``${name}`` replaced."""
    from_s, to_s = int(start.timestamp()), int(end.timestamp())
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)",
        lambda m: f"{m[1]} >= toDateTime({from_s}) AND {m[1]} <= toDateTime({to_s})",
        sql,
    )
    sql = re.sub(
        r"\$__timeInterval\(([^)]+)\)",
        lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {max(interval_s, 1)} second)",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({from_s})").replace("$__toTime", f"toDateTime({to_s})")
    sql = sql.replace("$__interval_s", str(max(interval_s, 1)))
    for name, value in variables.items():
        sql = sql.replace("${" + name + "}", value).replace("$" + name, value)
    leftover = re.search(r"\$\{?\w+", sql)
    assert leftover is None, f"unexpanded {leftover[0]!r} in {sql}"
    return sql
