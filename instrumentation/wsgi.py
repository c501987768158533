"""Measuring requests in any WSGI app; the frameworks' modules say how to find the route template."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from time import perf_counter
from typing import Any

from opentelemetry.sdk.resources import Resource

from tallyhub.instrumentation import measuring
from tallyhub.instrumentation.client import TallyhubClient
from tallyhub.instrumentation.consumers import CONSUMER_KEY, identify
from tallyhub.instrumentation.introspection import startup_document
from tallyhub.instrumentation.measuring import MEASURED, MEASURING, middleware_built
from tallyhub.instrumentation.request_log import MAX_BODY_BYTES, wsgi_capture
from tallyhub.instrumentation.request_log import finish as finish_capture
from tallyhub.instrumentation.routes import UNKNOWN_ROUTE
from tallyhub.instrumentation.server_errors import EXCEPTION_KEY

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class WSGIMiddleware:
    """Wraps a WSGI app: method, route template, status, duration, request body size
    (``CONTENT_LENGTH``) and response body size. A response whose size is known when the app
    returns it (a list of chunks, or a declared ``Content-Length``: Flask's and most apps') is
    recorded then, with that size; a streamed one is counted as the server iterates it and
    recorded when the server closes it (the duration then includes the streaming). Keyword
    arguments are those of :class:`TallyhubClient`. Used as it is, it measures any WSGI app under
    one route, ``(unknown)``; framework adapters subclass it."""

    def __init__(self, app: WSGIApp, client: TallyhubClient | None = None, **config: Any) -> None:
        self.app = app
        self.client = client or TallyhubClient(**config)
        middleware_built(self)

    def route_of(self, environ: Environ, status: int) -> str:
        """The route template of a request, once the app has handled it (framework adapters know it)."""
        return UNKNOWN_ROUTE

    def request_object(self, environ: Environ) -> Any:
        """What the ``identify_consumer`` callback is given: the framework's request object
        (adapters override it); here the WSGI environ."""
        return environ

    def describe(self, resource: Resource) -> str:
        """The start-up document (``introspection.startup_document``) of the app."""
        return startup_document([], None, None, resource)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        client = self.client
        excluded = client.excluded
        if excluded is not None and excluded(environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")):
            return self.app(environ, start_response)
        token = None
        if measuring.nested:  # another tallyhub middleware exists: this request may be one it measures
            if MEASURED in environ or MEASURING.get():
                return self.app(environ, start_response)  # an inner app of one already measured
            token = MEASURING.set(True)
        environ[MEASURED] = self  # adapters read it back (Flask keeps its request for this middleware)
        if not client.loop.running:  # the first request of this process (or forked worker)
            client.start(self.describe)
        log = client.request_log
        captured = wsgi_capture(log, environ) if log is not None else None  # keeps what the app reads
        status = 500  # what the server answers when the app raises before responding
        response_headers: Any = ()

        def measuring_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status, response_headers
            status = int(status_line[:3])
            response_headers = headers
            return start_response(status_line, headers, exc_info)

        def finish(response_size: int, exception: BaseException | None = None) -> None:
            end = perf_counter()
            try:
                request_size = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                request_size = 0
            consumer = environ.get(CONSUMER_KEY)
            if consumer is None and client.identify_consumer is not None:
                consumer = identify(client.identify_consumer, lambda: self.request_object(environ))
            route = self.route_of(environ, status)
            server_error = client.record_request(
                environ["REQUEST_METHOD"],
                route,
                status,
                start,
                end,
                request_size,
                response_size,
                consumer,
                None,
                exception or environ.pop(EXCEPTION_KEY, None),  # the framework's hook may have kept it
            )
            if captured is not None and log is not None:
                captured.response_headers = response_headers
                finish_capture(
                    log, captured, route, status, end - start, request_size, response_size, consumer, server_error
                )

        start = perf_counter()
        try:
            body = self.app(environ, measuring_start_response)
        except BaseException as exc:
            finish(0, exc)
            raise
        finally:
            if token is not None:
                MEASURING.reset(token)
        if captured is None or captured.response_body is None:  # no body to keep for the request log
            # A body whose size is known now is recorded now, as the app returned it (as
            # OpenTelemetry's WSGI middleware and Apitally time it): no wrapper, no generator.
            if isinstance(body, list):
                finish(sum(map(len, body)))
                return body
            declared = _declared_length(response_headers)
            if declared >= 0 and status >= 200 and status not in NO_BODY and environ["REQUEST_METHOD"] != "HEAD":
                finish(declared)
                return body
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            # Served with sendfile() by the server: left as it is, its declared length counted.
            _finish_on_close(body, lambda: finish(max(_declared_length(response_headers), 0)))
            return body
        if captured is not None and captured.response_body is not None:
            if _declared_length(response_headers) > 0 or isinstance(body, list):
                chunks = captured.response_body  # kept as the server iterates (up to MAX_BODY_BYTES)
            else:
                captured.streaming, captured.response_body, chunks = True, None, None  # never buffered
            if chunks is not None:
                return _MeasuredBody(body, finish, chunks)
        return _MeasuredBody(body, finish)  # streamed: counted as the server sends it, recorded at close


NO_BODY = frozenset({204, 304})
"""Statuses whose response has no body, whatever its headers declare (as for HEAD)."""


def _declared_length(headers: Any) -> int:
    """The response's ``Content-Length``, or -1 when it declares none (or an invalid one)."""
    if headers:
        name, value = headers[-1]  # where werkzeug (Flask) puts it: found without a loop
        if name == "Content-Length" and value.isdigit():
            return int(value)
    for name, value in headers:
        if (name == "Content-Length" or name.lower() == "content-length") and value.isdigit():
            return int(value)
    return -1


def _finish_on_close(body: Any, finish: Callable[[], None]) -> None:
    close = getattr(body, "close", None)

    def closing() -> None:
        try:
            if close is not None:
                close()
        finally:
            finish()

    body.close = closing


class _MeasuredBody:
    """The response body, counted as the server sends it; the request is recorded when the
    server closes it (PEP 3333 servers always do)."""

    __slots__ = ("_body", "_chunks", "_finish", "_size")

    def __init__(self, body: Iterable[bytes], finish: Callable[[int], None], chunks: list[bytes] | None = None) -> None:
        self._body = body
        self._finish = finish
        self._size = 0
        self._chunks = chunks  # the request log's: the body's first MAX_BODY_BYTES

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            if self._chunks is not None and self._size < MAX_BODY_BYTES:
                self._chunks.append(chunk)
            self._size += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish(self._size)
