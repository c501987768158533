"""tallyhub: API monitoring and analytics for Python web APIs, on OpenTelemetry and ClickHouse.

``tallyhub.instrument(app)``, ``tallyhub.set_consumer(request, ...)`` and ``tallyhub.Consumer``
are the client's entry points; they are imported on first use, so that the hub's command line
does not load the client (and a web framework) it does not need.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["Consumer", "__version__", "instrument", "set_consumer"]


def instrument(app: Any, **config: Any) -> Any:
    """Measure every request of a FastAPI, Starlette, Litestar, Flask or Django app (or any ASGI or
    WSGI app) and return the app to serve; see ``tallyhub.instrumentation.instrument``."""
    from tallyhub.instrumentation.instrument import instrument as _instrument

    return _instrument(app, **config)


def __getattr__(name: str) -> Any:
    if name in ("Consumer", "set_consumer"):
        from tallyhub.instrumentation import consumers

        return getattr(consumers, name)
    raise AttributeError(f"module 'tallyhub' has no attribute {name!r}")
