"""The marks of a request being measured, shared by the ASGI and WSGI middlewares (and kept apart
from them: a WSGI app imports neither asyncio nor the ASGI middleware)."""

from __future__ import annotations

from contextvars import ContextVar

MEASURED = "tallyhub.measured"
"""Set in the scope (environ) of a request being measured, to the middleware measuring it, so
that a mounted app that tallyhub instruments too, or a middleware added twice, does not count it
again."""
MEASURING: ContextVar[bool] = ContextVar("tallyhub.measuring", default=False)
"""The same, across bridges that build a new environ or scope (an ASGI app mounting a WSGI app
with a2wsgi, asgiref's sync_to_async): they run the inner app in a copy of this context."""
