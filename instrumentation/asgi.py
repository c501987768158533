"""Measuring requests in any ASGI app; the frameworks' modules say how to find the route template."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from time import perf_counter
from typing import Any

from opentelemetry.sdk.resources import Resource

from tallyhub.instrumentation import measuring
from tallyhub.instrumentation.aggregator import FOLD_SOON
from tallyhub.instrumentation.client import TallyhubClient
from tallyhub.instrumentation.consumers import CONSUMER_KEY, identify
from tallyhub.instrumentation.headers import first, text_headers
from tallyhub.instrumentation.introspection import startup_document
from tallyhub.instrumentation.measuring import MEASURED, MEASURING, middleware_built
from tallyhub.instrumentation.request_log import MAX_BODY_BYTES as MAX_LOGGED
from tallyhub.instrumentation.request_log import asgi_capture, keep_response
from tallyhub.instrumentation.request_log import finish as finish_capture
from tallyhub.instrumentation.routes import UNKNOWN_ROUTE
from tallyhub.instrumentation.server_errors import EXCEPTION_KEY, describe_exception
from tallyhub.instrumentation.validation_errors import MAX_BODY, VALIDATION_STATUSES, ValidationError, response_errors

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE", "QUERY"})


class ASGIMiddleware:
    """Measures every HTTP request: method, route template, status, duration, body sizes.

    The request path does no I/O: it updates in-memory aggregates that a background thread
    exports every interval. Keyword arguments are those of :class:`TallyhubClient`. Framework
    adapters subclass it to find the route template (``route_of``) and list the endpoints
    (``describe``); used as it is, it measures any ASGI app under one route, ``(unknown)``.
    """

    def __init__(self, app: ASGIApp, client: TallyhubClient | None = None, **config: Any) -> None:
        self.app = app
        self.client = client or TallyhubClient(**config)
        middleware_built(self)

    def route_of(self, scope: Scope, entry_root_path: str, entry_app: Any) -> str:
        """The route template of a request, once the app has handled it (framework adapters know it)."""
        return UNKNOWN_ROUTE

    def request_object(self, scope: Scope) -> Any:
        """What the ``identify_consumer`` callback is given: the framework's request object
        (adapters override it); here the ASGI scope."""
        return scope

    def describe(self, app: Any, resource: Resource) -> str:
        """The start-up document (``introspection.startup_document``) of ``app``; by default an
        app whose endpoints are unknown."""
        return startup_document([], None, None, resource)

    def start(self, app: Any) -> None:
        """Start exporting in this process and send ``app``'s start-up event (once per process)."""
        self.client.start(lambda resource: self.describe(app, resource))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One function for the whole request: an exception the app raises passes one frame of
        # tallyhub's on its way to the server, which formats every frame of the traceback it logs.
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        client = self.client
        excluded = client.excluded
        if excluded is not None and excluded(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        token = None
        if measuring.nested:  # another tallyhub middleware exists: this request may be one it measures
            if MEASURED in scope or MEASURING.get():
                await self.app(scope, receive, send)  # an inner app of one already measured
                return
            scope[MEASURED] = self
            token = MEASURING.set(True)
        entry_root_path = scope.get("root_path", "")
        # The framework's app: in scope when the middleware was added inside the framework, else
        # the app this middleware wraps. A mounted sub-app may replace scope["app"] later.
        entry_app = scope.get("app", self.app)
        if not client.loop.running:  # a server without lifespan, or a new forked worker
            self.start(entry_app)
        log = client.request_log
        captured = asgi_capture(log, scope) if log is not None else None  # the request log's, by reference
        status = 500  # what the server answers when the app raises before responding
        request_size = 0
        response_size = 0
        error_body: list[bytes] | None = None  # a 400/422 body, read for validation errors
        error_headers: Any = ()
        exception: BaseException | None = None

        async def counting_receive() -> Message:
            nonlocal request_size
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                if captured is not None and captured.request_body is not None and request_size < MAX_LOGGED and body:
                    captured.request_body.append(body)
                request_size += len(body)
            return message

        def counting_send(message: Message) -> Awaitable[None]:
            # Not a coroutine function: it hands back the server's own awaitable, one coroutine
            # fewer per message (ASGI only asks that ``send(message)`` be awaitable).
            nonlocal status, response_size, error_body, error_headers
            if captured is not None:
                keep_response(captured, message, response_size)
            if message["type"] == "http.response.body":
                body = message.get("body", b"")
                response_size += len(body)
                if error_body is not None:
                    if response_size > MAX_BODY:
                        error_body = None  # too large to read: skipped, nothing more kept
                    else:
                        error_body.append(body)
            elif message["type"] == "http.response.start":
                status = message["status"]
                if status in VALIDATION_STATUSES:  # kept as sent; its headers are read when folded
                    error_body, error_headers = [], message.get("headers", ())
            return send(message)

        start = perf_counter()
        try:
            await self.app(scope, counting_receive, counting_send)
        except Exception as exc:  # recorded as a server error, and propagated as it is
            exception = exc
            raise
        finally:
            end = perf_counter()
            if token is not None:
                MEASURING.reset(token)
            method = scope["method"]
            if not request_size and method in BODY_METHODS:
                request_size = header_content_length(scope)
            consumer = scope.get(CONSUMER_KEY)
            if consumer is None and client.identify_consumer is not None:
                consumer = identify(client.identify_consumer, lambda: self.request_object(scope))
            route = self.route_of(scope, entry_root_path, entry_app)
            if exception is None:
                exception = scope.pop(EXCEPTION_KEY, None)  # the framework's hook may have kept it
            server_error = None
            if exception is not None and status >= 500:
                server_error = describe_exception(exception)
            # What TallyhubClient.record_request does, inline: no call per request.
            aggregator = client.aggregator
            pending = aggregator.pending
            errors = partial(_validation_errors, status, error_headers, error_body) if error_body else None  # folded
            pending.append(
                (method, route, status, end - start, request_size, response_size, end + aggregator.wall_offset,
                 consumer, errors, server_error)
            )  # fmt: skip
            if len(pending) >= FOLD_SOON:
                aggregator.queued_many()
            exception = None  # the traceback holds this frame: no cycle left behind
            if captured is not None and log is not None:
                finish_capture(
                    log, captured, route, status, end - start, request_size, response_size, consumer, server_error
                )

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.start(scope.get("app", self.app))
            elif message["type"] == "lifespan.shutdown.complete":
                # Export what this worker aggregated before the server lets it exit.
                await run_in_thread(self.client.shutdown)
            await send(message)

        await self.app(scope, receive, lifespan_send)


async def run_in_thread(func: Callable[[], Any]) -> Any:
    """``func()`` in a worker thread, on whichever event loop the server runs (asyncio or trio)."""
    try:
        from anyio.to_thread import run_sync
    except ImportError:  # no anyio: the server's loop is asyncio
        return await asyncio.to_thread(func)
    return await run_sync(func)


def _validation_errors(status: int, headers: Any, chunks: list[bytes]) -> list[ValidationError]:
    """The validation errors of a 400/422 response, from its ASGI headers and body; run when the
    request is folded."""
    text = text_headers(headers)
    return response_errors(status, first(text, "content-type"), first(text, "content-encoding"), b"".join(chunks))


def header_content_length(scope: Scope) -> int:
    """The declared body size, for a request whose body the app did not read."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0
