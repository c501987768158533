"""The client: measures requests in the app and exports them to the hub as OTLP metrics.

Framework adapters live in ``tallyhub.instrumentation.frameworks``; they import their framework
only when used, so installing tallyhub adds no web framework to an app.
"""

from typing import Any

from tallyhub.instrumentation.client import TallyhubClient

__all__ = ["TallyhubClient", "TallyhubMiddleware"]


def __getattr__(name: str) -> Any:
    """``TallyhubMiddleware`` (Starlette's) when asked for: a Flask or Django app never imports Starlette."""
    if name == "TallyhubMiddleware":
        from tallyhub.instrumentation.frameworks.starlette import TallyhubMiddleware

        return TallyhubMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
