"""`tallyhub.instrument(app)`: one call for any supported framework, or any ASGI/WSGI app."""

from __future__ import annotations

import inspect
import sys
from typing import Any

from tallyhub.instrumentation.asgi import ASGIMiddleware
from tallyhub.instrumentation.wsgi import WSGIMiddleware


def instrument(app: Any, **config: Any) -> Any:
    """Measure every request of ``app``; returns the app to serve (the same object, except for
    Litestar and plain ASGI/WSGI apps, which come back wrapped). Keyword arguments are those of
    ``TallyhubClient`` (``app_key``, ``endpoint``, ``env``, …), else the OTEL_* variables apply.
    """
    if _is_instance(app, "starlette.applications", "Starlette"):  # FastAPI too
        from tallyhub.instrumentation.starlette import TallyhubMiddleware

        app.add_middleware(TallyhubMiddleware, **config)
        return app
    if _is_instance(app, "flask", "Flask"):
        from tallyhub.instrumentation import flask

        flask.TallyhubMiddleware(app, **config)
        return app
    if _is_instance(app, "litestar", "Litestar"):
        from tallyhub.instrumentation.litestar import LitestarMiddleware

        return LitestarMiddleware(app, **config)
    if _is_instance(app, "django.core.handlers.base", "BaseHandler"):
        return _instrument_django(app, config)
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__):
        return ASGIMiddleware(app, **config)
    if callable(app):
        return WSGIMiddleware(app, **config)
    raise TypeError(f"tallyhub.instrument() needs a web app (ASGI or WSGI callable), not {type(app).__name__}")


def _is_instance(app: Any, module: str, name: str) -> bool:
    """isinstance(app, module.name), without importing a framework the app does not use."""
    cls = getattr(sys.modules.get(module), name, None)
    return cls is not None and isinstance(app, cls)


def _instrument_django(handler: Any, config: dict[str, Any]) -> Any:
    from django.conf import settings

    from tallyhub.instrumentation import django as tallyhub_django
    from tallyhub.instrumentation.client import TallyhubClient

    path = f"{tallyhub_django.__name__}.{tallyhub_django.TallyhubMiddleware.__name__}"
    if config:
        tallyhub_django.set_client(TallyhubClient(**config))
    if path not in settings.MIDDLEWARE:
        settings.MIDDLEWARE = [path, *settings.MIDDLEWARE]
        handler.load_middleware(is_async=_is_instance(handler, "django.core.handlers.asgi", "ASGIHandler"))
    return handler
