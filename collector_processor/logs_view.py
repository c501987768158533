"""``tallyhub logs``: logged requests as a table fitted to the terminal, in detail, or as JSON lines."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tallyhub.collector_processor.report import text_table


def render_table(rows: Sequence[Mapping[str, Any]], width: int | None = None) -> str:
    """One line per request, newest first; the path (with its query) is cut to fit ``width``."""
    if not rows:
        return "No logged requests match (is request logging on in the app? request_logging=True)\n"
    headers = ("TIME (UTC)", "METHOD", "STATUS", "MS", "PATH", "CONSUMER", "CLIENT IP")
    # month-day time: the year is this one, and its place goes to the path
    cells = [
        (
            str(r["time"])[5:23],
            r["method"],
            str(r["status"]),
            f"{float(r['duration_ms']):.1f}",
            r["url_path"] + (f"?{r['url_query']}" if r["url_query"] else ""),
            r["consumer"] or "-",
            r["client_ip"] or "-",
        )
        for r in rows
    ]
    return "\n".join(text_table(headers, cells, right=[2, 3], fit=[4, 5, 6], width=width)) + "\n"


def render_detail(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every field of each request: headers, bodies (JSON pretty-printed), the stack trace."""
    parts = []
    for r in rows:
        query = f"?{r['url_query']}" if r["url_query"] else ""
        took = f"{r['status']} in {float(r['duration_ms']):.1f} ms"
        lines = [
            f"{r['time']} UTC  {r['method']} {r['url_path']}{query}  →  {took}",
            f"  request {r['request_id']}  route {r['route'] or '-'}  env {r['env'] or '-'}  instance {r['instance']}",
            f"  consumer {r['consumer'] or '-'}  client {r['client_ip'] or '-'}  {r['scheme']}://{r['host']}"
            + (f"  trace {r['trace_id']}" if r["trace_id"] else ""),
        ]
        for title, headers in (("Request headers", r["request_headers"]), ("Response headers", r["response_headers"])):
            if headers:
                lines.append(f"  {title}:")
                lines.extend(f"    {name}: {value}" for name, value in sorted(headers.items()))
        for title, body, cut in (
            ("Request body", r["request_body"], r["request_body_truncated"]),
            ("Response body", r["response_body"], r["response_body_truncated"]),
        ):
            if body or cut:
                lines.append(f"  {title}" + (" (truncated)" if cut else "") + ":")
                lines.extend(f"    {line}" for line in _pretty(body).splitlines())
        if r.get("log_lines"):
            lines.append("  Log lines:")
            lines.extend(f"    {line}" for line in r["log_lines"])
        if r["exception_type"]:
            lines.append(f"  Exception: {r['exception_type']}: {r['exception_message']}")
            lines.extend(f"    {line}" for line in r["stacktrace"].splitlines())
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n" if parts else render_table(rows)


def render_json(rows: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _pretty(body: str) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body
