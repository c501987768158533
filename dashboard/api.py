"""The dashboard's JSON API (docs/dashboard-api.md): a request's query string → the arguments of
a function of `storage.dashboard_queries`, and its answer back. No SQL and no arithmetic here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

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


GETS: dict[str, Callable[[SqlRunner, Query, datetime], dict[str, Any]]] = {
    "apps": _apps,
    "traffic": _for_app(q.traffic),
    "latency": _for_app(q.latency),
    "endpoints": _endpoints,
    "endpoint": _endpoint,
    "errors": _for_app(q.errors),
    "consumers": _for_app(q.consumers),
    "instances": _for_app(q.instances),
    "requests": _requests,
    "request": _request,
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
