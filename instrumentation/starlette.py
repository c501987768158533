"""Starlette and FastAPI: `app.add_middleware(TallyhubMiddleware, app_key=...)`.

Route templates are Starlette's own (`/items/{item_id}`, `/users/{user_id:int}`), never the raw path.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

from opentelemetry.sdk.resources import Resource

from tallyhub.instrumentation.asgi import ASGIMiddleware
from tallyhub.instrumentation.introspection import Endpoint, docstring_parts, package_version, startup_document
from tallyhub.instrumentation.routes import UNMATCHED_ROUTE

try:
    from starlette.routing import Match, Mount
except ImportError:  # the middleware still works for ASGI apps without Starlette
    Match = Mount = None  # type: ignore[assignment,misc]


def starlette_route(scope: MutableMapping[str, Any], entry_root_path: str, app: Any) -> str:
    """The template of the route that handled ``scope``, after ``app`` (the Starlette app) ran.

    Starlette's router leaves the matched route in ``scope["route"]`` (also for a method that
    is not allowed) and each ``Mount`` it passes appends its matched prefix to ``root_path``:
    the template is that prefix, relative to the root path the request entered with, plus the
    route's own path. Where no plain route was left there (a mounted ASGI app such as static
    files; FastAPI clears it for mounts), the app's route tree is matched again.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and (Mount is None or not isinstance(route, Mount)):
        root_path = scope.get("root_path", "")
        if root_path == entry_root_path:  # no mount on the way: the common case
            return path
        return root_path[len(entry_root_path) :] + path
    routes = getattr(app, "routes", None)
    if Match is None or routes is None:
        return UNMATCHED_ROUTE
    entry_scope = {**scope, "root_path": entry_root_path, "path_params": {}}
    return _match_template(routes, entry_scope) or UNMATCHED_ROUTE


class TallyhubMiddleware(ASGIMiddleware):
    """ASGI middleware for Starlette and FastAPI (and any ASGI app: unmatched routes then)."""

    # Called as it is, with no method of its own in between (a call less per request).
    route_of = staticmethod(starlette_route)  # type: ignore[assignment]  # the same call, without self

    def request_object(self, scope: MutableMapping[str, Any]) -> Any:
        from starlette.requests import Request

        return Request(scope)

    def describe(self, app: Any, resource: Resource) -> str:
        openapi = app.openapi() if callable(getattr(app, "openapi", None)) else None  # FastAPI
        framework = package_version("fastapi" if openapi is not None else "starlette")
        return startup_document(starlette_endpoints(getattr(app, "routes", [])), openapi, framework, resource)


def starlette_endpoints(routes: Iterable[Any], prefix: str = "") -> list[Endpoint]:
    """Every (method, route template) of a route tree, with FastAPI's summary and description
    (else the endpoint's docstring). Routes hidden from the schema (/docs, /openapi.json) are left out."""
    endpoints: list[Endpoint] = []
    for route in _flattened(routes):
        path = getattr(route, "path", None)
        if not isinstance(path, str) or not getattr(route, "include_in_schema", True):
            continue
        original = getattr(route, "original_route", route)
        if Mount is not None and isinstance(original, Mount):
            if original.routes:
                endpoints.extend(starlette_endpoints(original.routes, prefix + path))
            continue
        methods = sorted(getattr(route, "methods", None) or ())
        summary, description = docstring_parts(getattr(route, "endpoint", None))
        summary = getattr(route, "summary", None) or summary
        description = getattr(route, "description", None) or description
        for method in methods:
            if method == "HEAD" and "GET" in methods:  # Starlette adds HEAD to every GET route
                continue
            endpoints.append(Endpoint(method, prefix + path, summary, description))
    return endpoints


def _flattened(routes: Iterable[Any]) -> Iterable[Any]:
    """FastAPI from 0.16x keeps included routers as one entry; its ``iter_route_contexts`` gives
    their routes with the prefixes applied (older FastAPI and Starlette list them flat already)."""
    iter_route_contexts = getattr(sys.modules.get("fastapi.routing"), "iter_route_contexts", None)
    return iter_route_contexts(list(routes)) if iter_route_contexts is not None else routes


def _match_template(routes: Iterable[Any], scope: dict[str, Any]) -> str | None:
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, Mount):
            if not route.routes:  # a plain ASGI app serves everything under its prefix
                return f"{route.path}/{{path}}"
            inner = _match_template(route.routes, {**scope, **child_scope})
            return None if inner is None else route.path + inner
        path = getattr(route, "path", None)
        return path if isinstance(path, str) else None
    return None
