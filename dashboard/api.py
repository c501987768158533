"""The dashboard's JSON API (docs/dashboard-api.md): a request's query string → the arguments of
a function of `storage/` (`dashboard_queries`, `alert_queries`, `uptime_queries`), and its answer
back. No SQL here, and no arithmetic but comparing times with now. Alert rules, stored as JSON, are
read with `tallyhub.alerts.rules` (their conditions as people read them); their channels are shown
redacted only (a Slack webhook's URL is its secret)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from tallyhub.alerts.notify.channels import parse_channel
from tallyhub.alerts.rules import DEFAULT_HEARTBEAT_MINUTES, Rule, RuleError, parse_rule
from tallyhub.storage import alert_queries, uptime_queries
from tallyhub.storage import dashboard_queries as q
from tallyhub.storage.apps import SqlRunner
from tallyhub.storage.request_log_queries import FilterError, LogFilter, search, status_ranges
from tallyhub.storage.window import Window, dashboard_window

MAX_VALUE = 1024
"""A filter value longer than this is refused (a route template, a consumer id)."""
MAX_LOGGED = 1000
"""Logged requests one page of the request log shows at most."""


class BadRequest(ValueError):
    pass


class NotFound(LookupError):
    pass


Query = Mapping[str, str]


def _value(query: Query, name: str) -> str:
    value = query.get(name, "")
    if len(value) > MAX_VALUE:
        raise BadRequest(f"{name} is too long (at most {MAX_VALUE} characters)")
    return value


def _window(query: Query, now: datetime) -> Window:
    start = _value(query, "from") or None
    return dashboard_window(
        now,
        range_=None if start else (_value(query, "range") or None),
        start=start,
        end=_value(query, "to") or None,
    )


def _filters(query: Query) -> q.Filters:
    try:
        return q.Filters(
            env=_value(query, "env"),
            consumer=_value(query, "consumer"),
            method=_value(query, "method").upper(),
            route=_value(query, "route"),
            status=_value(query, "status"),
        )
    except q.FilterError as exc:
        raise BadRequest(str(exc)) from None


def _app(runner: SqlRunner, query: Query) -> str:
    app = _value(query, "app")
    if not app:
        raise BadRequest("app is missing: send app=NAME")
    if not q.known_app(runner, app):
        raise NotFound(f"no app {app!r}")
    return app


def _for_app(read: Callable[..., dict[str, Any]]) -> Callable[[SqlRunner, Query, datetime], dict[str, Any]]:
    def handler(runner: SqlRunner, query: Query, now: datetime) -> dict[str, Any]:
        window, filters = _window(query, now), _filters(query)
        return read(runner, _app(runner, query), window, filters)

    return handler


def _apps(runner: SqlRunner, query: Query, now: datetime) -> dict[str, Any]:
    return q.apps_overview(runner, _window(query, now), q.Filters(env=_value(query, "env")))


def _endpoints(runner: SqlRunner, query: Query, now: datetime) -> dict[str, Any]:
    window, filters = _window(query, now), _filters(query)
    return q.endpoints(runner, _app(runner, query), window, filters, include_hidden=query.get("hidden") == "1")


def _endpoint(runner: SqlRunner, query: Query, now: datetime) -> dict[str, Any]:
    window, filters = _window(query, now), _filters(query)
    app = _app(runner, query)
    if not filters.method:
        raise BadRequest("send the endpoint's method and route")
    try:
        return q.endpoint_detail(runner, app, window, filters)
    except q.UnknownEndpoint as exc:
        raise NotFound(str(exc)) from None


def _log_filter(runner: SqlRunner, query: Query, now: datetime, request_id: str = "") -> tuple[Window, LogFilter]:
    window = _window(query, now)
    min_ms = _value(query, "min_ms")
    limit = _value(query, "limit") or "200"
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LOGGED:
        raise BadRequest(f"limit: 1 to {MAX_LOGGED}")
    try:
        f = LogFilter(
            _app(runner, query),
            window.start,
            window.end,
            env=_value(query, "env"),
            status=_value(query, "status"),
            method=_value(query, "method"),
            path=_value(query, "path") or _value(query, "route"),
            consumer=_value(query, "consumer"),
            client_ip=_value(query, "client_ip"),
            min_duration_ms=float(min_ms) if min_ms else None,
            body=_value(query, "body"),
            request_id=request_id,
            limit=int(limit),
        )
        status_ranges(f.status)
    except (ValueError, FilterError) as exc:
        raise BadRequest(str(exc)) from None
    return window, f


def _requests(runner: SqlRunner, query: Query, now: datetime) -> dict[str, Any]:
    """The request log's page: the newest logged requests of the window that match the filters."""
    window, f = _log_filter(runner, query, now)
    return {"window": window.describe(), "requests": search(runner, f)}


def _request(runner: SqlRunner, query: Query, now: datetime) -> dict[str, Any]:
    """One logged request in full (headers, bodies, exception), by ``id``, whenever it was."""
    request_id = _value(query, "id")
    if not request_id:
        raise BadRequest("id is missing: send id=REQUEST_ID")
    since = (now - timedelta(days=3650)).strftime("%Y-%m-%dT%H:%M:%S")  # as long as the log may be kept
    _, f = _log_filter(runner, {**query, "from": since, "to": ""}, now, request_id)
    found = search(runner, f, detail=True)
    if not found:
        raise NotFound(f"no logged request {request_id!r} (kept 15 days by default)")
    return {"request": found[0]}


DOWN_AFTER = timedelta(minutes=DEFAULT_HEARTBEAT_MINUTES)
"""An instance whose last export is this old is down: what a heartbeat rule fires on by default."""


def _instances(runner: SqlRunner, query: Query, now: datetime) -> dict[str, Any]:
    """The instances of the window, each ``down`` when it last exported ``DOWN_AFTER`` or more before now."""
    answer = _for_app(q.instances)(runner, query, now)
    down_before = int((now - DOWN_AFTER).timestamp())
    for instance in answer["instances"]:
        instance["down"] = instance["last_seen"] <= down_before
    return answer


def _redacted(channel: str) -> str:
    """A channel as it may be shown: a webhook's or Slack's URL up to its host (its path is its secret)."""
    try:
        return parse_channel(channel).redacted()
    except ValueError:
        return "(a channel that cannot be read)"


def _rule(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored rule as the alerts page shows it (``error``: it cannot be read, and is not evaluated)."""
    values = {key: value for key, value in row["rule"].items() if key != "source"}
    shown: dict[str, Any] = {"name": row["name"], "source": row["source"]}
    try:
        rule: Rule | None = parse_rule(values, source=row["source"])
    except (RuleError, ValueError, TypeError) as exc:
        rule, shown["error"] = None, f"cannot be read (stored by a newer tallyhub?): {exc}"
    if rule is not None:
        shown |= {
            "env": rule.env,
            "metric": rule.metric,
            "op": rule.op,
            "threshold": rule.threshold,
            "condition": rule.condition(),
            "scope": rule.scope(),
            "schedule": rule.schedule(),
            "pending_s": rule.pending_s,
            "keep_firing_s": rule.keep_firing_s,
            "channels": [_redacted(channel) for channel in rule.channels],
            "description": rule.description,
        }
    state = row["state"] or {}
    shown |= {
        "state": state.get("state", "not evaluated"),
        "since": state.get("since"),
        "value": state.get("value"),
        "evaluated_at": state.get("evaluated_at"),
        "deliveries": [{**d, "channel": _redacted(d["channel"])} for d in row["deliveries"]],
    }
    return shown


def _alerts(runner: SqlRunner, query: Query, now: datetime) -> dict[str, Any]:
    """The app's alert rules with their states and last notifications, and its latest transitions
    (of ``rule`` only, when given: the page a notification links to)."""
    found = alert_queries.app_alerts(runner, _app(runner, query), rule=_value(query, "rule"))
    return {
        "now": int(now.timestamp()),
        "rules": [_rule(row) for row in found["rules"]],
        "history": found["history"],
    }


def _uptime(runner: SqlRunner, query: Query, now: datetime) -> dict[str, Any]:
    """The app's health checks: uptime and incidents over 24 h, 7 d, 30 d, and each URL's latest check."""
    app = _app(runner, query)
    return {"now": int(now.timestamp()), **uptime_queries.app_uptime(runner, app, now, _value(query, "env"))}


GETS: dict[str, Callable[[SqlRunner, Query, datetime], dict[str, Any]]] = {
    "apps": _apps,
    "traffic": _for_app(q.traffic),
    "latency": _for_app(q.latency),
    "endpoints": _endpoints,
    "endpoint": _endpoint,
    "errors": _for_app(q.errors),
    "consumers": _for_app(q.consumers),
    "instances": _instances,
    "requests": _requests,
    "request": _request,
    "alerts": _alerts,
    "uptime": _uptime,
}


def _text(settings: Mapping[str, Any], name: str) -> str:
    value = settings.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_VALUE:
        raise BadRequest(f"{name}: a non-empty string of at most {MAX_VALUE} characters")
    return value


def _app_settings(runner: SqlRunner, settings: Mapping[str, Any]) -> dict[str, Any]:
    app = _app(runner, {"app": _text(settings, "app")})
    try:
        return q.save_app_settings(runner, app, settings.get("apdex_t"))
    except q.SettingsError as exc:
        raise BadRequest(str(exc)) from None


def _endpoint_settings(runner: SqlRunner, settings: Mapping[str, Any]) -> dict[str, Any]:
    app = _app(runner, {"app": _text(settings, "app")})
    unknown = set(settings) - {"app", "method", "route", "hidden", "apdex_t", "expected_statuses"}
    if unknown:
        raise BadRequest(f"unknown settings: {', '.join(sorted(unknown))}")
    hidden, statuses = settings.get("hidden"), settings.get("expected_statuses")
    if hidden is not None and not isinstance(hidden, bool):
        raise BadRequest("hidden: true or false")
    if statuses is not None and (not isinstance(statuses, list) or len(statuses) > 100):
        raise BadRequest("expected_statuses: a list of 4xx status codes")
    try:
        return q.save_endpoint_settings(
            runner,
            app,
            _text(settings, "method").upper(),
            _text(settings, "route"),
            hidden=hidden,
            apdex_t=settings.get("apdex_t", q.KEEP),
            expected_statuses=statuses,
        )
    except q.SettingsError as exc:
        raise BadRequest(str(exc)) from None
    except q.UnknownEndpoint as exc:
        raise NotFound(str(exc)) from None


PUTS: dict[str, Callable[[SqlRunner, Mapping[str, Any]], dict[str, Any]]] = {
    "app": _app_settings,
    "endpoint": _endpoint_settings,
}
