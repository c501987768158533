"""The client: measures requests in the app and exports them to the hub as OTLP metrics.

Framework adapters live in ``tallyhub.instrumentation.frameworks``; they import their framework
only when used, so installing tallyhub adds no web framework to an app.
"""

from tallyhub.instrumentation.client import TallyhubClient
from tallyhub.instrumentation.frameworks.starlette import TallyhubMiddleware

__all__ = ["TallyhubClient", "TallyhubMiddleware"]
