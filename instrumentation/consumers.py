"""API consumers: who called. Set per request from a handler, or derived by a callback.

``set_consumer(request, "acme-42", name="Acme", group="customers")`` works with the request
object of every supported framework (Starlette/FastAPI and Litestar requests carry the ASGI
scope, Flask's the WSGI environ, Django's ``META``/``scope``). The identifier becomes the
``tallyhub.consumer.id`` attribute of the request metrics; name and group travel alongside
(``tallyhub.consumer.name``/``.group``) and end up in the hub's ``consumers`` table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("tallyhub")

MAX_IDENTIFIER = 128
MAX_NAME = 64  # also the limit of the group
CONSUMER_KEY = "tallyhub.consumer"
"""Where the consumer is kept for the request: a key of its ASGI scope or WSGI environ."""


@dataclass(frozen=True, slots=True)
class Consumer:
    identifier: str
    name: str | None = None
    group: str | None = None


def make_consumer(identifier: Any, name: Any = None, group: Any = None) -> Consumer | None:
    """A consumer with the documented length limits applied; None for an empty identifier."""
    ident = str(identifier).strip()[:MAX_IDENTIFIER] if identifier is not None else ""
    if not ident:
        return None
    return Consumer(ident, _clip(name), _clip(group))


def _clip(value: Any) -> str | None:
    text = str(value).strip()[:MAX_NAME] if value is not None else ""
    return text or None


def set_consumer(request: Any, identifier: Any, name: Any = None, group: Any = None) -> None:
    """Attribute the current request to a consumer (identifier up to 128 characters, name and
    group up to 64; longer values are cut). Call it from a handler or a dependency."""
    consumer = make_consumer(identifier, name, group)
    if consumer is not None:
        request_state(request)[CONSUMER_KEY] = consumer


def request_state(request: Any) -> MutableMapping[str, Any]:
    """The per-request mapping that the middleware reads back: the ASGI scope (Starlette,
    FastAPI, Litestar, Django under ASGI), else the WSGI environ (Flask, Django under WSGI)."""
    for attribute in ("scope", "environ"):
        state = getattr(request, attribute, None)
        if isinstance(state, MutableMapping):
            return state
    if isinstance(request, MutableMapping):  # a scope or environ itself
        return request
    raise TypeError(f"set_consumer() needs the framework's request object, not {type(request).__name__}")


def identify(callback: Callable[[Any], Any], request: Callable[[], Any]) -> Consumer | None:
    """The consumer that ``callback(request())`` derives (a ``Consumer``, an identifier, or None),
    for a request no handler attributed. The callback's errors never reach the app."""
    try:
        found = callback(request())
    except Exception:
        logger.exception("tallyhub: the identify_consumer callback failed; the request is counted without consumer")
        return None
    if found is None:
        return None
    if isinstance(found, Consumer):  # the same limits as set_consumer's
        return make_consumer(found.identifier, found.name, found.group)
    return make_consumer(found)
