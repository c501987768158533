"""The dashboard's web application (Starlette): the page, its JSON API (docs/dashboard-api.md) and
signing in. Every number comes from `storage/` (through `dashboard/api.py`); this module only checks
who asks, parses what they ask for and serialises the answer."""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tallyhub.dashboard import api
from tallyhub.dashboard.passwords import verify_password
from tallyhub.dashboard.sessions import COOKIE, SESSION_TTL_S, Sessions
from tallyhub.storage.apps import SqlRunner
from tallyhub.storage.dashboard_queries import known_app, known_endpoint
from tallyhub.storage.users import list_users, password_hash_of
from tallyhub.storage.window import WindowError

logger = logging.getLogger("tallyhub.dashboard")

STATIC = Path(str(resources.files("tallyhub.dashboard") / "static"))
PAGES = {
    *("traffic", "latency", "endpoints", "endpoint", "errors", "consumers", "instances", "requests", "request"),
    "alerts",
}
MAX_BODY = 64 * 1024

# Nothing the page loads may come from elsewhere: scripts, styles, data and images from this origin.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


@dataclass
class Dashboard:
    runner: SqlRunner
    """Reads run read-only; settings are written through it too."""
    sessions: Sessions = field(default_factory=Sessions)
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    over_quota_today: Callable[[str], int] = lambda app: 0
    """Logged requests of an app the hub refused today, over its request log quota."""
    _sign_in: threading.Lock = field(default_factory=threading.Lock)
    """One password check at a time: scrypt is slow on purpose, and so is guessing."""


def create_app(dashboard: Dashboard) -> Starlette:
    def page(request: Request) -> Response:
        token = request.query_params.get("token")
        if token is not None:
            return _redeem(dashboard, request, token)
        if dashboard.sessions.user(request.cookies.get(COOKIE)) is None:
            return _login_page(dashboard, request, status=401)
        app = request.path_params.get("app")
        name = request.path_params.get("page", "traffic")
        if app is not None and (name not in PAGES or not known_app(dashboard.runner, app)):
            return _not_found(f"no app {app!r}" if name in PAGES else f"no page {name!r}")
        if name == "endpoint":
            method, route = request.query_params.get("method", ""), request.query_params.get("route", "")
            if not known_endpoint(dashboard.runner, app or "", method, route):
                return _not_found(f"no endpoint {method} {route} in {app}")
        return _static_page("index.html")

    def api_get(request: Request) -> Response:
        if dashboard.sessions.user(request.cookies.get(COOKIE)) is None:
            return _error(401, "sign in first: open the link that `tallyhub serve` printed, or /login")
        handler = api.GETS.get(request.path_params["name"])
        if handler is None:
            return _error(404, f"no such API: {request.url.path}")
        query = dict(request.query_params)
        try:
            answer = handler(dashboard.runner, query, dashboard.now())
        except (api.BadRequest, WindowError) as exc:
            return _error(400, str(exc))
        except api.NotFound as exc:
            return _error(404, str(exc))
        if request.path_params["name"] == "requests":
            answer["over_quota_today"] = dashboard.over_quota_today(query.get("app", ""))
        if query.get("format") == "csv":
            return _csv(answer, query.get("table", ""), request.path_params["name"])
        return _json(answer)

    async def api_put(request: Request) -> Response:
        if dashboard.sessions.user(request.cookies.get(COOKIE)) is None:
            return _error(401, "sign in first")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "send the settings as application/json")
        handler = api.PUTS.get(request.path_params["name"])
        if handler is None:
            return _error(404, f"no such settings: {request.url.path}")
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(413, "too large")
        try:
            settings = json.loads(body)
            if not isinstance(settings, dict):
                raise api.BadRequest("send a JSON object")
            answer = await _in_thread(lambda: handler(dashboard.runner, settings))
        except (ValueError, api.BadRequest) as exc:
            return _error(400, str(exc))
        except api.NotFound as exc:
            return _error(404, str(exc))
        return _json(answer)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            if dashboard.sessions.user(request.cookies.get(COOKIE)) is not None:
                return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
            return await _in_thread(lambda: _login_page(dashboard, request))
        body = (await request.body())[:MAX_BODY].decode(errors="replace")
        form = dict(parse_qsl(body))
        name, password = form.get("name", ""), form.get("password", "")
        ok = await _in_thread(lambda: _check_password(dashboard, name, password))
        if not ok:
            logger.warning("dashboard: failed sign-in as %r from %s", name[:64], _peer(request))
            return await _in_thread(
                lambda: _login_page(
                    dashboard, request, status=401, message="Wrong name or password.", target=form.get("next")
                )
            )
        logger.info("dashboard: %s signed in from %s", name, _peer(request))
        response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
        _set_cookie(response, request, dashboard.sessions.open(name))
        return response

    def logout(request: Request) -> Response:
        dashboard.sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    routes = [
        Route("/", page),
        Route("/apps/{app}", page),
        Route("/apps/{app}/{page}", page),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/api/settings/{name}", api_put, methods=["PUT"]),
        Route("/api/{name}", api_get),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return _error(404, f"no such API: {request.url.path}")
        return _not_found(f"nothing at {request.url.path}")

    return Starlette(routes=routes, middleware=[Middleware(_Headers)], exception_handlers={404: not_found})


class _Headers:
    """Security headers on every answer; no caching of the API's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api_call = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.update(SECURITY_HEADERS)
                if api_call:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _in_thread(fn: Callable[[], Any]) -> Any:
    """Blocking work (SQL, scrypt) off the event loop."""
    return await run_in_threadpool(fn)


def _check_password(dashboard: Dashboard, name: str, password: str) -> bool:
    with dashboard._sign_in:
        stored = password_hash_of(dashboard.runner, name) if name else None
        return stored is not None and verify_password(password, stored)


def _redeem(dashboard: Dashboard, request: Request, token: str) -> Response:
    """A sign-in link: its token opens a session (once), and the page is shown without it."""
    session = dashboard.sessions.redeem(token)
    rest = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
    target = request.url.path + (f"?{rest}" if rest else "")
    if session is None:
        logger.warning("dashboard: an expired or used sign-in link from %s", _peer(request))
        return _login_page(dashboard, request, status=401, message="That sign-in link was used already or expired.")
    response = RedirectResponse(target, status_code=303)
    _set_cookie(response, request, session)
    return response


def _set_cookie(response: Response, request: Request, session: str) -> None:
    response.set_cookie(
        COOKIE,
        session,
        max_age=SESSION_TTL_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


_NEXT = re.compile(r"/(?!/)[^\s\\]*")


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site, never another site (``//evil``)."""
    return target if target and _NEXT.fullmatch(target) else "/"


def _peer(request: Request) -> str:
    return request.client.host if request.client else "?"


def _static_page(name: str) -> Response:
    return HTMLResponse((STATIC / name).read_text(encoding="utf-8"))


def _login_page(
    dashboard: Dashboard, request: Request, status: int = 200, message: str = "", target: str | None = None
) -> Response:
    """The sign-in form (users exist), or how to get a sign-in link; ``target``: where to go after,
    by default the page asked for."""
    has_users = bool(list_users(dashboard.runner))
    default = request.url.path if request.url.path != "/login" else None
    target = html.escape(_safe_next(target or request.query_params.get("next") or default), quote=True)
    note = f'<p class="error-box" role="alert">{html.escape(message)}</p>' if message else ""
    if has_users:
        body = f"""<form class="login" method="post" action="/login">
<h1>Sign in to tallyhub</h1>{note}
<label>Name <input name="name" autocomplete="username" required autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<input type="hidden" name="next" value="{target}">
<button type="submit">Sign in</button></form>"""
    else:
        body = f"""<div class="login"><h1>tallyhub</h1>{note}
<p>Open the link that <code>tallyhub serve</code> printed (<code>dashboard: http://…</code>),
or run <code>tallyhub dashboard</code> on the hub's machine for a new one.
To sign in with a password, add a user: <code>tallyhub users add NAME</code>.</p></div>"""
    return HTMLResponse(_shell("Sign in · tallyhub", body), status_code=status)


def _not_found(message: str) -> Response:
    body = f'<div class="login"><h1>Not found</h1><p>{html.escape(message)}.</p><p><a href="/">All apps</a></p></div>'
    return HTMLResponse(_shell("Not found · tallyhub", body), status_code=404)


def _shell(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/static/style.css"><script type="module" src="/static/js/theme.js"></script>'
        f"</head><body><main>{body}</main></body></html>"
    )


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers={"cache-control": "no-store"})


def _clean(value: Any) -> Any:
    """JSON without NaN or infinities (which JSON cannot carry): null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _json(answer: Any) -> Response:
    return Response(
        json.dumps(_clean(answer), separators=(",", ":"), allow_nan=False, default=str),
        media_type="application/json",
    )


def _csv(answer: dict[str, Any], table: str, name: str) -> Response:
    rows = answer.get(table) if table else None
    if not isinstance(rows, list):
        tables = ", ".join(k for k, v in answer.items() if isinstance(v, list))
        return _error(400, f"table= one of: {tables}")
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    filename = re.sub(r"[^A-Za-z0-9_.-]", "_", f"tallyhub-{name}-{table}.csv")
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"'},
    )


def _csv_cell(value: Any) -> Any:
    value = _clean(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else value
