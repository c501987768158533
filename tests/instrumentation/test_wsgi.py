"""The WSGI middleware on plain WSGI apps: when a response is recorded, and with which size."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from tallyhub.instrumentation.routes import UNKNOWN_ROUTE
from tallyhub.instrumentation.wsgi import WSGIMiddleware
from tallyhub.wire import DURATION, REQUEST_SIZE, RESPONSE_SIZE

from .conftest import capturing_client, request_counts


class Chunks:
    """A body that is neither a list nor a generator (as werkzeug's ClosingIterator), counting
    how far the server iterated it and whether it closed it."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.iterated = 0
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.iterated += 1
            yield chunk

    def close(self) -> None:
        self.closed = True


def call(app: Any, method: str = "GET") -> Any:
    return app({"REQUEST_METHOD": method, "PATH_INFO": "/x"}, lambda status, headers, exc_info=None: None)


def serve(app: Any, method: str = "GET") -> bytes:
    """What a WSGI server does with a response: iterate it, then close it (PEP 3333)."""
    body = call(app, method)
    sent = b"".join(body)
    if hasattr(body, "close"):
        body.close()
    return sent


def points(client: Any, name: str) -> dict[str, Any]:
    """The data points of one metric in a new export, by method."""
    client.loop.export_once()
    return points_of(client.metrics_out.batches[-1], name)


def points_of(data: Any, name: str) -> dict[str, Any]:
    (metric,) = [m for m in data.resource_metrics[0].scope_metrics[0].metrics if m.name == name]
    return {p.attributes["http.request.method"]: p for p in metric.data.data_points}


def test_a_body_of_declared_length_is_recorded_as_the_app_returns_it_with_that_length() -> None:
    client = capturing_client()
    body = Chunks(b"hello", b" world")

    def app(environ: dict, start_response: Any) -> Chunks:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
        return body

    middleware = WSGIMiddleware(app, client=client)
    returned = call(middleware)
    assert returned is body  # handed to the server as it is: no wrapper
    assert body.iterated == 0
    assert request_counts(client.aggregator.collect()) == {("GET", UNKNOWN_ROUTE, 200): 1}  # before it is sent
    assert b"".join(returned) == b"hello world"
    returned.close()
    assert body.closed
    assert serve(middleware) == b"hello world"
    assert points(client, RESPONSE_SIZE)["GET"].sum == 11


def test_a_list_body_is_recorded_as_the_app_returns_it_with_its_bytes() -> None:
    client = capturing_client()

    def app(environ: dict, start_response: Any) -> list[bytes]:
        start_response("201 Created", [])  # no Content-Length: a list's size is known anyway
        return [b"ab", b"cde"]

    returned = call(WSGIMiddleware(app, client=client), "POST")
    assert returned == [b"ab", b"cde"]
    point = points(client, RESPONSE_SIZE)["POST"]
    assert (point.count, point.sum) == (1, 5)


def test_a_streamed_body_is_counted_as_sent_and_recorded_when_the_server_closes_it() -> None:
    client = capturing_client()

    def stream() -> Iterator[bytes]:
        for _ in range(3):
            time.sleep(0.05)
            yield b"x" * 10

    def app(environ: dict, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return stream()

    middleware = WSGIMiddleware(app, client=client)
    body = call(middleware)
    assert request_counts(client.aggregator.collect()) == {}  # not sent yet: not recorded yet
    assert b"".join(body) == b"x" * 30
    body.close()
    assert points(client, RESPONSE_SIZE)["GET"].sum == 30
    duration = points_of(client.metrics_out.batches[-1], DURATION)["GET"]
    assert duration.min >= 0.15  # the streaming is part of it


def test_a_declared_length_is_read_when_folded_and_one_that_is_not_a_length_counts_nothing() -> None:
    """The request's ``CONTENT_LENGTH`` and the response's ``Content-Length`` are kept as text on the
    request path; what is not a length counts 0 (the request is still counted, as the app returned it)."""
    client = capturing_client()

    def app(environ: dict, start_response: Any) -> Chunks:
        length = "12" if environ["REQUEST_METHOD"] == "POST" else "twelve"
        start_response("200 OK", [("Content-Type", "text/plain"), ("content-length", length)])
        return Chunks(b"x" * 12)

    middleware = WSGIMiddleware(app, client=client)
    for method, declared in (("POST", "30"), ("PUT", "thirty")):
        environ = {"REQUEST_METHOD": method, "PATH_INFO": "/x", "CONTENT_LENGTH": declared}
        body = middleware(environ, lambda status, headers, exc_info=None: None)
        assert not body.iterated  # recorded as returned: not wrapped, not iterated yet
    client.loop.export_once()
    (data,) = client.metrics_out.batches
    responses, requests = points_of(data, RESPONSE_SIZE), points_of(data, REQUEST_SIZE)
    assert (requests["POST"].sum, responses["POST"].sum) == (30, 12)
    assert (requests["PUT"].sum, responses["PUT"].sum, responses["PUT"].count) == (0, 0, 1)


def test_a_declared_length_without_a_body_is_not_counted() -> None:
    """HEAD and 204/304 responses may declare the length of the body they do not send."""
    client = capturing_client()

    def app(environ: dict, start_response: Any) -> Chunks:
        status = "304 Not Modified" if environ["REQUEST_METHOD"] == "GET" else "200 OK"
        start_response(status, [("Content-Length", "11")])
        return Chunks()

    middleware = WSGIMiddleware(app, client=client)
    assert serve(middleware, "HEAD") == b""
    assert serve(middleware, "GET") == b""
    sizes = points(client, RESPONSE_SIZE)
    assert (sizes["HEAD"].count, sizes["HEAD"].sum) == (1, 0)
    assert (sizes["GET"].count, sizes["GET"].sum) == (1, 0)
    assert request_counts(client.metrics_out.batches[-1]) == {
        ("HEAD", UNKNOWN_ROUTE, 200): 1,
        ("GET", UNKNOWN_ROUTE, 304): 1,
    }
