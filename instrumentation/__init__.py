"""The client: measures requests in the app and exports them to the hub as OTLP metrics."""

from tallyhub.instrumentation.asgi import TallyhubMiddleware
from tallyhub.instrumentation.client import TallyhubClient

__all__ = ["TallyhubClient", "TallyhubMiddleware"]
