"""The marks of a request being measured, shared by the ASGI and WSGI middlewares (and kept apart
from them: a WSGI app imports neither asyncio nor the ASGI middleware).

They matter only while a second tallyhub middleware exists in the process (``nested``): with one
alone there is nothing to tell, and the ASGI middleware neither reads nor sets them (~1 µs a
request inside FastAPI)."""

from __future__ import annotations

import weakref
from contextvars import ContextVar

MEASURED = "tallyhub.measured"
"""Set in the scope (environ) of a request being measured, to the middleware measuring it, so
that a mounted app that tallyhub instruments too, or a middleware added twice, does not count it
again."""
MEASURING: ContextVar[bool] = ContextVar("tallyhub.measuring", default=False)
"""The same, across bridges that build a new environ or scope (an ASGI app mounting a WSGI app
with a2wsgi, asgiref's sync_to_async): they run the inner app in a copy of this context. Set only
while a second middleware exists (``nested``): setting a context variable copies the context
(~2 µs a request inside FastAPI), and one middleware alone has nothing to tell."""

_alive = 0
nested = False
"""Whether a request measured here could reach another tallyhub middleware: more than one is
alive. The middlewares read this module attribute on every request (cheaper than a call)."""


def middleware_built(middleware: object) -> None:
    """Called as each tallyhub middleware is built; counted while it lives. The apps that bridges
    mount (WSGI apps, Django's middleware) are built with their app, before the outer one serves
    a request."""
    _count(+1)
    weakref.finalize(middleware, _count, -1)


def _count(change: int) -> None:
    global _alive, nested
    _alive += change
    nested = _alive > 1
