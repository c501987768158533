"""`tallyhub report`'s renderings: pure functions of the report that ``storage.report_queries.build_report``
builds (``render_table``, ``render_json``, ``render_csv``). The window it covers comes from
``storage.window.resolve_window``.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from tallyhub.storage.report_queries import SECTIONS

# ---------------------------------------------------------------------------------------------
# The renderings


def render_json(report: Mapping[str, Any]) -> str:
    return json.dumps(_rounded(report), indent=2, ensure_ascii=False) + "\n"


def _rounded(value: Any, key: str = "") -> Any:
    """Floats to what was measured: durations to the microsecond (``*_ms``: 3 decimals; the
    percentiles come from buckets ~2 % wide), bytes to the byte, rates and Apdex to 4 decimals,
    anything else to 6 significant digits — not full binary precision."""
    if isinstance(value, Mapping):
        return {k: _rounded(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v, key) for v in value]
    if not isinstance(value, float) or value != value or value in (float("inf"), float("-inf")):
        return value
    if key.endswith("_ms") or key.endswith("_s"):
        return round(value, 3)
    if key.endswith("_bytes"):
        return round(value)
    if "rate" in key or key.endswith("per_minute") or key == "apdex":
        return round(value, 4)
    return float(f"{value:.6g}")


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
    """A rate in the unit that shows it: per minute, else per hour, else per day (0.0002/min of an
    API with traffic would print as 0.00)."""
    if x is None:
        return "-"
    if x == 0:
        return "0/min"
    if x >= 10:
        return f"{x:,.1f}/min"
    if x >= 0.1:
        return f"{x:.2f}/min"
    if x * 60 >= 0.1:
        return f"{x * 60:.2f}/h"
    return f"{x * 1440:.2f}/d"


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
    return text if len(text) <= width else text[: width - 1] + ELLIPSIS


ELLIPSIS = "…"
MIN_CUT_WIDTH = 8
"""The narrowest a text column is cut to when a table is fitted to the terminal."""


def text_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    right: Iterable[int] = (),
    fit: Sequence[int] = (),
    width: int | None = None,
) -> list[str]:
    """Columns padded to their widest cell, two spaces apart; ``right``: indices aligned right.
    With ``width``, the text columns in ``fit`` are cut (widest first, with an ellipsis, as rich's
    tables do) until every line fits in it, or they are all down to ``MIN_CUT_WIDTH``."""
    table: list[list[str]] = [list(r) for r in rows]
    right = set(right)
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *table, strict=True)]
    if width is not None and fit:
        while sum(widths) + 2 * (len(widths) - 1) > width:
            widest = max(fit, key=lambda i: widths[i])
            if widths[widest] <= max(MIN_CUT_WIDTH, len(headers[widest])):
                break
            widths[widest] -= 1
        for row in table:
            for i in fit:
                row[i] = _cut(row[i], widths[i])

    def line(cells: Sequence[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(r) for r in table)]


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
        f"{_per_minute(summary['requests_per_minute'])}, "
        f"4xx {_percent(summary['client_error_rate'])}, 5xx {_percent(summary['server_error_rate'])}, "
        f"p50 {_duration_ms(summary['p50_ms'])} ms, p95 {_duration_ms(summary['p95_ms'])} ms, "
        f"p99 {_duration_ms(summary['p99_ms'])} ms, Apdex {_apdex(summary['apdex'])} "
        f"(T = {apdex_threshold_s * 1000:g} ms)"
    )


def _table_section(section: str, rows: Sequence[Mapping[str, Any]], width: int | None) -> tuple[str, list[str]]:
    headers: tuple[str, ...]
    cells: list[tuple[Any, ...]]
    if section == "endpoints":
        headers = ("METHOD", "ROUTE", "REQUESTS", "RATE", "4XX", "5XX", "P50", "P95", "P99", "APDEX")
        cells = [
            (
                r["method"],
                _cut(r["route"], 200),
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
        return "Endpoints (p50, p95, p99 in ms)", text_table(headers, cells, right=range(2, 10), fit=[1], width=width)
    if section == "validation_errors":
        headers = ("ERRORS", "METHOD", "ROUTE", "LOCATION", "TYPE", "MESSAGE")
        cells = [
            (
                _count(r["errors"]),
                r["method"],
                _cut(r["route"], 200),
                _cut(r["location"], 30),
                _cut(r["type"], 24),
                _cut(r["message"], 70),
            )
            for r in rows
        ]
        return "Validation errors", text_table(headers, cells, right=[0], fit=[2, 3, 4, 5], width=width)
    if section == "server_errors":
        headers = ("ERRORS", "METHOD", "ROUTE", "TYPE", "MESSAGE", "LAST SEEN")
        cells = [
            (
                _count(r["errors"]),
                r["method"],
                _cut(r["route"], 200),
                _cut(r["exception_type"], 40),
                _cut(r["message"], 70),
                (r["last_seen"] or "-").replace("T", " ").removesuffix("Z"),
            )
            for r in rows
        ]
        return "Server errors", text_table(headers, cells, right=[0], fit=[2, 3, 4], width=width)
    if section == "consumers":
        headers = ("CONSUMER", "NAME", "GROUP", "REQUESTS", "ERRORS", "IN THE WINDOW")
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
        return "Consumers", text_table(headers, cells, right=[3, 4], fit=[0, 1, 2], width=width)
    raise ValueError(f"unknown section {section!r}")


def render_table(report: Mapping[str, Any], width: int | None = None) -> str:
    """Aligned text for a terminal: the window, the summary, then each section (long text cut);
    with ``width``, every line fits in that many columns (the summary wrapped, text columns cut)."""
    lines = [_window_line(report)]
    if not report["traffic"]:
        lines.append("No traffic: no requests in this window.")
    elif "summary" in report:
        summary = _summary_line(report["summary"], report["apdex_threshold_s"])
        lines.extend(textwrap.wrap(summary, width) if width else [summary])
    for section in SECTIONS[1:]:
        if section not in report:
            continue
        rows = report[section]
        if not rows and not report["traffic"]:
            continue  # nothing to say beyond "no traffic"
        title, table = _table_section(section, rows, width)
        lines.append("")
        lines.append(title)
        lines.extend(table if rows else ["(none)"])
        if section in report["truncated"]:
            lines.append(f"(the first {report['limit']}; --limit for more)")
    return "\n".join(lines) + "\n"


RENDERERS = {"table": render_table, "json": render_json, "csv": render_csv}
