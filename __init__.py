"""tallyhub: API monitoring and analytics for Python web APIs, on OpenTelemetry and ClickHouse."""

__version__ = "0.1.0"


def instrument(app, **config):  # type: ignore[no-untyped-def]
    """Measure every request of a FastAPI, Starlette, Litestar, Flask or Django app (or any ASGI or
    WSGI app) and return the app to serve; see ``tallyhub.instrumentation.instrument``."""
    from tallyhub.instrumentation.instrument import instrument as _instrument

    return _instrument(app, **config)
