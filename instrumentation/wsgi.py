"""Measuring requests in any WSGI app; the frameworks' modules say how to find the route template."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from time import perf_counter
from typing import Any

from opentelemetry.sdk.resources import Resource

from tallyhub.instrumentation import measuring
from tallyhub.instrumentation.aggregator import FOLD_SOON, header_size, response_body_size
from tallyhub.instrumentation.client import TallyhubClient
from tallyhub.instrumentation.consumers import CONSUMER_KEY, identify
from tallyhub.instrumentation.introspection import startup_document
from tallyhub.instrumentation.measuring import MEASURED, MEASURING, middleware_built
from tallyhub.instrumentation.request_log import MAX_BODY_BYTES, Captured, wsgi_capture
from tallyhub.instrumentation.request_log import finish as finish_capture
from tallyhub.instrumentation.routes import UNKNOWN_ROUTE
from tallyhub.instrumentation.server_errors import EXCEPTION_KEY, describe_exception

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

        start = perf_counter()
        try:
            body = self.app(environ, measuring_start_response)
        except BaseException as exc:
            self._record(environ, status, start, 0, exc, captured, response_headers)
            raise
        finally:
            if token is not None:
                MEASURING.reset(token)
        if captured is None or captured.response_body is None:  # no body to keep for the request log
            # A body whose size is known now is recorded now, as the app returned it (as
            # OpenTelemetry's WSGI middleware and Apitally time it): no wrapper, no generator.
            if isinstance(body, list):
                self._record(environ, status, start, sum(map(len, body)), None, captured, response_headers)
                return body
            if response_headers:
                name, value = response_headers[-1]  # where werkzeug (Flask) puts it: found without a loop
                if name != "Content-Length":
                    value = _content_length(response_headers)
                if value is not None:  # read when folded (HEAD, 1xx, 204, 304: no body, whatever it says)
                    self._record(environ, status, start, value, None, captured, response_headers)
                    return body

        def finish(response_size: int | str) -> None:  # when the server closes the body: the status is final then
            self._record(environ, status, start, response_size, None, captured, response_headers)

        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            # Served with sendfile() by the server: left as it is, its declared length counted.
            _finish_on_close(body, lambda: finish(_content_length(response_headers) or 0))
            return body
        if captured is not None and captured.response_body is not None:
            if isinstance(body, list) or header_size(_content_length(response_headers) or 0) > 0:
                chunks = captured.response_body  # kept as the server iterates (up to MAX_BODY_BYTES)
            else:
                captured.streaming, captured.response_body, chunks = True, None, None  # never buffered
            if chunks is not None:
                return _MeasuredBody(body, finish, chunks)
        return _MeasuredBody(body, finish)  # streamed: counted as the server sends it, recorded at close

    def _record(
        self,
        environ: Environ,
        status: int,
        start: float,
        response_size: int | str,
        exception: BaseException | None,
        captured: Captured | None,
        response_headers: Any,
    ) -> None:
        """Record a finished request: what ``TallyhubClient.record_request`` does, inline (the same
        tuple queued, without its call), then the request log's capture."""
        end = perf_counter()
        client = self.client
        request_size = environ.get("CONTENT_LENGTH") or 0  # a header's text: read when folded
        consumer = environ.get(CONSUMER_KEY)
        if consumer is None and client.identify_consumer is not None:
            consumer = identify(client.identify_consumer, lambda: self.request_object(environ))
        route = self.route_of(environ, status)
        if exception is None:
            exception = environ.pop(EXCEPTION_KEY, None)  # the framework's hook may have kept it
        server_error = None
        if exception is not None and status >= 500 and isinstance(exception, Exception):
            server_error = describe_exception(exception)
        aggregator = client.aggregator
        pending = aggregator.pending
        method = environ["REQUEST_METHOD"]
        pending.append(
            (method, route, status, end - start, request_size, response_size,
             end + aggregator.wall_offset, consumer, None, server_error)
        )  # fmt: skip
        if len(pending) >= FOLD_SOON:
            aggregator.queued_many()
        if captured is not None:
            log = client.request_log
            if log is not None:
                captured.response_headers = response_headers
                received, sent = header_size(request_size), response_body_size(method, status, response_size)
                finish_capture(log, captured, route, status, end - start, received, sent, consumer, server_error)


def _content_length(headers: Any) -> str | None:
    """The response's ``Content-Length`` header, as it is (read when folded: ``header_size``), or None."""
    for name, value in headers:
        if name == "Content-Length" or name.lower() == "content-length":
            return value  # type: ignore[no-any-return]
    return None


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
