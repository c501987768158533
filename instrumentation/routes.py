"""Route templates for Starlette and FastAPI: `/items/{item_id}`, never the raw path."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

try:
    from starlette.routing import Mount
except ImportError:  # the middleware still works for ASGI apps without Starlette
    Mount = None  # type: ignore[assignment,misc]

UNMATCHED_ROUTE = "(unmatched)"
"""The one route under which requests that match no route are recorded, so that a scanner
probing random paths cannot create unbounded series."""


def starlette_route(scope: MutableMapping[str, Any], entry_root_path: str) -> str:
    """The template of the route that handled ``scope``, after the app has run.

    Starlette's router stores the matched route in ``scope["route"]`` (also for a method that
    is not allowed) and each ``Mount`` it passes appends its matched prefix to ``root_path``;
    the template is that prefix, relative to the root path the request entered with, plus the
    route's own path. A ``Mount`` left in ``scope["route"]`` is either a mounted plain ASGI app
    (static files, say: recorded as ``{prefix}/{path}``) or a mounted router in which nothing
    matched (unmatched).
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED_ROUTE
    prefix = scope.get("root_path", "")[len(entry_root_path) :]
    if Mount is not None and isinstance(route, Mount):
        return UNMATCHED_ROUTE if route.routes else f"{prefix}/{{path}}"
    return (prefix + path) or "/"
