"""The client: measures requests in the app and exports them to the hub as OTLP metrics.

One module per framework, each importing its framework only: ``tallyhub.instrumentation.fastapi``,
``.starlette``, ``.flask`` and ``.django`` give ``TallyhubMiddleware``, ``.litestar`` gives
``TallyhubPlugin``; ``tallyhub.instrument(app)`` picks the right one.
"""

from tallyhub.instrumentation.client import TallyhubClient

__all__ = ["TallyhubClient"]
