"""Litestar: `Litestar(route_handlers=[...], plugins=[TallyhubPlugin(app_key=...)])`.

Route templates are the paths as declared in Litestar, prefixes of Routers and Controllers
included (`/v1/items/{item_id:int}`); a mounted ASGI app (`@asgi("/static", is_mount=True)`)
is recorded under its mount path (`/static`). Templates never include the root path.
"""

from __future__ import annotations

import inspect
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import unquote

from litestar import Litestar, Request
from litestar.config.app import AppConfig
from litestar.exceptions import HTTPException
from litestar.routes import ASGIRoute, HTTPRoute
from litestar.utils.helpers import unwrap_partial
from litestar.utils.path import normalize_path
from opentelemetry.sdk.resources import Resource

from tallyhub.instrumentation.asgi import ASGIApp, ASGIMiddleware, run_in_thread
from tallyhub.instrumentation.client import TallyhubClient
from tallyhub.instrumentation.introspection import Endpoint, package_version, startup_document
from tallyhub.instrumentation.routes import UNMATCHED_ROUTE
from tallyhub.instrumentation.server_errors import EXCEPTION_KEY

try:
    from litestar.plugins import InitPlugin as _InitPlugin  # Litestar >= 2.15
except ImportError:  # pragma: no cover - older Litestar 2
    from litestar.plugins import InitPluginProtocol as _InitPlugin  # type: ignore[assignment]

__all__ = ["LitestarMiddleware", "TallyhubPlugin", "litestar_endpoints", "litestar_openapi"]

ANY_METHOD = "*"
"""The method of an endpoint that is a mounted ASGI app: it serves every method."""


class TallyhubPlugin(_InitPlugin):
    """Measures every request of a Litestar app, 404s, 405s and 500s included.

    ``TallyhubPlugin(app_key=..., service_name=..., ...)`` takes the keyword arguments of
    :class:`TallyhubClient` (or a ready ``client``). At startup it wraps the app's whole request
    handler (Litestar's exception handling, routing and CORS inside) in :class:`LitestarMiddleware`
    and starts the export thread; at shutdown, after the app's own shutdown hooks, it makes the
    final export. Both happen in the ASGI lifespan, which Litestar always handles and every ASGI
    server runs by default; without a lifespan, wrap the app instead: ``LitestarMiddleware(app, ...)``.
    """

    def __init__(self, client: TallyhubClient | None = None, **config: Any) -> None:
        self.client = client or TallyhubClient(**config)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        # Middleware in `app_config.middleware` runs per route, after routing and inside the
        # exception handling: it would never see a 404 or a 405. The whole handler is only
        # reachable once the app exists, which the startup hooks are given.
        app_config.on_startup.insert(0, self._startup)
        app_config.on_shutdown.append(self._shutdown)  # shutdown hooks run in order: this one last
        # Litestar answers a handler's exception itself (a 500): the hook shows it to the middleware.
        app_config.after_exception.append(_keep_exception)  # type: ignore[arg-type]  # any ASGI scope
        return app_config

    def _startup(self, app: Litestar) -> None:
        handler: Any = app.asgi_handler
        if not (isinstance(handler, LitestarMiddleware) and handler.client is self.client):  # a second lifespan
            handler = LitestarMiddleware(handler, client=self.client)
            app.asgi_handler = handler
        handler.start(app)

    async def _shutdown(self, app: Litestar) -> None:
        # Export what this worker aggregated before the server lets it exit.
        await run_in_thread(self.client.shutdown)


async def _keep_exception(exception: Exception, scope: MutableMapping[str, Any]) -> None:
    """Litestar's ``after_exception`` hook: an exception that is not an ``HTTPException`` (which
    the app raises on purpose) is unhandled; the middleware records it with the 500 it became.

    A coroutine function: Litestar runs a plain function hook in a worker thread (~200 µs for
    every 4xx and 500 response, the thread hop alone)."""
    if not isinstance(exception, HTTPException):
        scope[EXCEPTION_KEY] = exception


class LitestarMiddleware(ASGIMiddleware):
    """ASGI middleware around a Litestar app (the plugin puts it there; also usable by hand:
    ``app = LitestarMiddleware(Litestar(...), app_key=...)``, the lifespan then handled as messages)."""

    def __init__(self, app: ASGIApp, client: TallyhubClient | None = None, **config: Any) -> None:
        super().__init__(app, client, **config)
        self._routes: _RouteIndex | None = None

    def request_object(self, scope: MutableMapping[str, Any]) -> Any:
        return Request(scope)  # type: ignore[arg-type]  # a plain ASGI scope

    def describe(self, app: Any, resource: Resource) -> str:
        if not isinstance(app, Litestar):
            return super().describe(app, resource)
        return startup_document(litestar_endpoints(app), litestar_openapi(app), package_version("litestar"), resource)

    def route_of(self, scope: MutableMapping[str, Any], entry_root_path: str, entry_app: Any) -> str:
        app = scope.get("litestar_app", entry_app)
        index = self._routes
        if index is not None and index.app is app:  # the common case: a handler declared at one path
            route = index.single_path.get(id(scope.get("route_handler")))
            if route is not None:
                return route
        if not isinstance(app, Litestar):
            return UNMATCHED_ROUTE
        if index is None or index.app is not app:
            index = self._routes = _RouteIndex(app)
        return litestar_route(scope, app, index)


def litestar_route(scope: MutableMapping[str, Any], app: Litestar, index: _RouteIndex | None = None) -> str:
    """The template of the route that handled ``scope``, after ``app`` ran.

    Litestar's router leaves the matched route handler in ``scope["route_handler"]``; the
    template is the path its route was declared with (``scope["path_template"]`` has the path
    without parameter types, is empty for mounts, wrong for plain paths in Litestar 2.12 and
    missing in 2.8). When routing failed, nothing is left: the path is routed again with any method,
    and the route found (the method was not allowed: a 405) gives the template; none (a 404, a
    path parameter that does not parse) gives the placeholder.
    """
    index = index or _RouteIndex(app)
    handler = scope.get("route_handler")
    if handler is None:
        path = scope.get("path", "")
        if root_path := scope.get("root_path", ""):  # as Litestar's router does
            path = path.split(root_path, maxsplit=1)[-1]
        handler = _handler_for_any_method(app, normalize_path(path))
        if handler is None:
            return UNMATCHED_ROUTE
    paths = index.paths_of(handler)
    if len(paths) == 1:  # the common case: a handler declared at one path
        return paths[0]
    if not paths:
        return UNMATCHED_ROUTE
    if getattr(handler, "is_mount", False):
        return _mount_path(paths, scope)
    # One handler declared at several paths: the route's own OPTIONS handler is unique to it.
    # Litestar has left the path it routed (root path taken off, normalized) in scope["path"].
    options = _handler_for_any_method(app, scope.get("path", ""))
    routed = index.paths_of(options) if options is not None else []
    if len(routed) == 1 and routed[0] in paths:
        return routed[0]
    return sorted(paths)[0]


def _handler_for_any_method(app: Litestar, path: str) -> Any:
    """The OPTIONS handler of the route at ``path`` (root path taken off), if one matches.

    Litestar gives every HTTP route an OPTIONS handler, so routing the path as OPTIONS finds the
    route of a request whose method was not allowed; a path that matches nothing (or whose path
    parameters do not parse) raises, as it did for the request.
    """
    try:
        return app.asgi_router.handle_routing(path=path, method="OPTIONS")[1]
    except Exception:  # NotFoundException; or a router unlike 2.x's: no template rather than an error
        return None


def _mount_path(paths: list[str], scope: MutableMapping[str, Any]) -> str:
    """Which of the paths of a mounted app the request went to.

    Litestar has replaced scope["path"] with the path under the mount: the request's original
    path is in ``raw_path`` (which Litestar's test client sends with the query string).
    """
    raw = scope.get("raw_path")
    if not raw:
        return sorted(paths)[0]
    path = unquote(bytes(raw).split(b"?", 1)[0].decode("latin-1"))
    if root_path := scope.get("root_path", ""):
        path = path.split(root_path, maxsplit=1)[-1]
    path = normalize_path(path)
    under = [p for p in paths if path == p or path.startswith(p.rstrip("/") + "/")]
    return max(under, key=len) if under else sorted(paths)[0]


class _RouteIndex:
    """The declared paths (Router and Controller prefixes included) of one app's route handlers."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        self._build()

    def _build(self) -> None:
        self.route_count = len(self.app.routes)
        by_handler: dict[int, list[str]] = {}
        for route in self.app.routes:
            handlers = route.route_handlers if isinstance(route, HTTPRoute) else [route.route_handler]
            for handler in handlers:
                by_handler.setdefault(id(handler), []).append(route.path)
        self.by_handler = by_handler
        self.single_path = {handler: paths[0] for handler, paths in by_handler.items() if len(paths) == 1}
        """The path of each handler declared at one path: one lookup per request."""

    def paths_of(self, handler: Any) -> list[str]:
        paths = self.by_handler.get(id(handler))
        if paths is None and len(self.app.routes) != self.route_count:  # routes registered since
            self._build()
            paths = self.by_handler.get(id(handler))
        return paths or []


def litestar_endpoints(app: Litestar) -> list[Endpoint]:
    """The app's endpoints: one per method and declared route, sorted by route then method.

    Left out are what Litestar adds by itself: each route's automatic OPTIONS handler and the
    OpenAPI documentation routes. A mounted ASGI app is one endpoint with the method ``*``.
    Summary and description are the handler's ``summary`` and ``description``, the description
    else its docstring.
    """
    endpoints: list[Endpoint] = []
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                if _litestar_own(handler):
                    continue
                for method in sorted(handler.http_methods):
                    endpoints.append(_endpoint(method, route.path, handler))
        elif isinstance(route, ASGIRoute) and not _litestar_own(route.route_handler):
            endpoints.append(_endpoint(ANY_METHOD, route.path, route.route_handler))
    endpoints.sort(key=lambda e: (e.route, e.method))
    return endpoints


def _endpoint(method: str, path: str, handler: Any) -> Endpoint:
    description = getattr(handler, "description", None)
    if description is None:
        # As Litestar's OpenAPI does; inspect.getdoc would find a controller method's docstring
        # missing and answer with the docstring of Litestar's decorator class.
        doc = getattr(_unwrap(handler.fn), "__doc__", None)
        description = inspect.cleandoc(doc) if doc else None
    return Endpoint(method=method, route=path, summary=getattr(handler, "summary", None), description=description)


def _litestar_own(handler: Any) -> bool:
    """Whether Litestar generated the handler: an automatic OPTIONS handler, the OpenAPI routes."""
    module = getattr(_unwrap(handler.fn), "__module__", "") or ""
    return module in ("litestar.routes.http", "litestar.openapi.controller", "litestar.openapi.plugins") or (
        module.startswith("litestar._openapi")
    )


def _unwrap(fn: Any) -> Any:
    fn = unwrap_partial(fn)
    return getattr(fn, "__func__", fn)  # a controller's handlers are bound methods


def litestar_openapi(app: Litestar) -> dict[str, Any] | None:
    """The app's OpenAPI document as a JSON-ready dict; ``None`` when OpenAPI is disabled."""
    if app.openapi_config is None:
        return None
    return app.openapi_schema.to_schema()
