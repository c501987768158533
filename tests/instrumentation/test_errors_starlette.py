"""Validation errors and server errors of real FastAPI and Starlette apps, through the middleware."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Request
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tallyhub import set_consumer
from tallyhub.instrumentation import validation_errors
from tallyhub.instrumentation.asgi import ASGIMiddleware
from tallyhub.instrumentation.routes import UNKNOWN_ROUTE
from tallyhub.instrumentation.starlette import TallyhubMiddleware
from tallyhub.instrumentation.validation_errors import MAX_BODY
from tallyhub.wire import SERVER_ERRORS, VALIDATION_ERRORS

from .conftest import capturing_client, error_counts, request_counts


class PaymentDeclined(Exception):
    pass


class Item(BaseModel):
    name: str
    price: float


def identify(request: Request) -> None:
    """A dependency: FastAPI runs it before it validates the request's parameters."""
    if "x-consumer" in request.headers:
        set_consumer(request, request.headers["x-consumer"], name="Acme")


def shop(raised: list[Exception] | None = None) -> FastAPI:
    app = FastAPI(dependencies=[Depends(identify)])

    @app.post("/items")
    def create_item(item: Item) -> Item:
        return item

    @app.get("/items")
    def list_items(limit: int = 10) -> list:
        return []

    @app.post("/orders/{order_id}/pay")
    def pay_order(order_id: int) -> dict:
        exc = PaymentDeclined(f"card declined for order {order_id}")
        if raised is not None:
            raised.append(exc)
        raise exc

    return app


def attributes(method: str, route: str, **named: Any) -> tuple:
    names = {
        "consumer": "tallyhub.consumer.id",
        "location": "tallyhub.validation_error.location",
        "message": "tallyhub.validation_error.message",
        "type": "tallyhub.validation_error.type",
    }
    items = {"http.request.method": method, "http.route": route} | {names[k]: v for k, v in named.items()}
    return tuple(sorted(items.items()))


NAME = {"location": "body.name", "message": "Input should be a valid string", "type": "string_type"}
PRICE = {
    "location": "body.price",
    "message": "Input should be a valid number, unable to parse string as a number",
    "type": "float_parsing",
}
LIMIT = {
    "location": "query.limit",
    "message": "Input should be a valid integer, unable to parse string as an integer",
    "type": "int_parsing",
}


def exported(middleware: TallyhubMiddleware) -> list:
    return middleware.client.metrics_out.batches


def test_fastapi_validation_errors() -> None:
    middleware = TallyhubMiddleware(shop(), client=capturing_client())
    with TestClient(middleware) as http:
        for _ in range(2):
            response = http.post("/items", json={"name": 5, "price": "secret-price-x"})
            assert response.status_code == 422
            assert "secret-price-x" in response.text  # FastAPI echoes the input to the client...
        assert http.get("/items", params={"limit": "secret-limit-abc"}).status_code == 422
        assert http.post("/items", json={"name": "pen", "price": 1.5}).status_code == 200
        assert http.get("/items", params={"limit": "3"}).status_code == 200
    batches = exported(middleware)
    assert request_counts(*batches) == {
        ("POST", "/items", 422): 2,
        ("GET", "/items", 422): 1,
        ("POST", "/items", 200): 1,
        ("GET", "/items", 200): 1,
    }
    assert error_counts(VALIDATION_ERRORS, *batches) == {
        attributes("POST", "/items", **NAME): 2,
        attributes("POST", "/items", **PRICE): 2,
        attributes("GET", "/items", **LIMIT): 1,
    }
    assert error_counts(SERVER_ERRORS, *batches) == {}
    for batch in batches:  # ...tallyhub never sends it anywhere
        assert b"secret-" not in encode_metrics(batch).SerializeToString()


def test_fastapi_errors_carry_the_consumer() -> None:
    app = shop()
    client = capturing_client()
    app.add_middleware(TallyhubMiddleware, client=client)
    with TestClient(app, raise_server_exceptions=False) as http:
        headers = {"x-consumer": "acme-7"}
        assert http.get("/items", params={"limit": "x"}, headers=headers).status_code == 422
        assert http.get("/items", params={"limit": "y"}).status_code == 422
        assert http.post("/orders/3/pay", headers=headers).status_code == 500
    assert error_counts(VALIDATION_ERRORS, *client.metrics_out.batches) == {
        attributes("GET", "/items", consumer="acme-7", **LIMIT): 1,
        attributes("GET", "/items", **LIMIT): 1,
    }
    (server_error,) = error_counts(SERVER_ERRORS, *client.metrics_out.batches)
    assert dict(server_error)["tallyhub.consumer.id"] == "acme-7"
    assert dict(server_error)["exception.message"] == "card declined for order 3"


def test_fastapi_server_error_is_recorded_and_still_propagates() -> None:
    raised: list[Exception] = []
    middleware = TallyhubMiddleware(shop(raised), client=capturing_client())
    with TestClient(middleware) as http:
        for order_id in (7, 7, 8):
            with pytest.raises(PaymentDeclined) as caught:
                http.post(f"/orders/{order_id}/pay")
            assert caught.value is raised[-1]  # the very exception the handler raised
    assert len(raised) == 3
    batches = exported(middleware)
    assert request_counts(*batches) == {("POST", "/orders/{order_id}/pay", 500): 3}
    errors = {
        dict(key)["exception.message"]: (dict(key), n) for key, n in error_counts(SERVER_ERRORS, *batches).items()
    }
    assert set(errors) == {"card declined for order 7", "card declined for order 8"}
    seven, count = errors["card declined for order 7"]
    assert count == 2
    assert errors["card declined for order 8"][1] == 1
    assert set(seven) == {
        "http.request.method",
        "http.route",
        "exception.type",
        "exception.message",
        "exception.stacktrace",
        "tallyhub.error.fingerprint",
    }
    assert seven["http.request.method"] == "POST"
    assert seven["http.route"] == "/orders/{order_id}/pay"
    assert seven["exception.type"] == f"{__name__}.PaymentDeclined"
    trace = seven["exception.stacktrace"]
    assert trace.startswith("Traceback (most recent call last):\n")
    assert "in pay_order\n    raise exc\n" in trace
    assert trace.endswith(f"{__name__}.PaymentDeclined: card declined for order 7\n")
    assert re.fullmatch(r"[0-9a-f]{16}", seven["tallyhub.error.fingerprint"])
    eight = errors["card declined for order 8"][0]
    assert eight["tallyhub.error.fingerprint"] == seven["tallyhub.error.fingerprint"]  # one raise site
    assert error_counts(VALIDATION_ERRORS, *batches) == {}


def responses(app: Any) -> list[tuple[int, str, bytes]]:
    with TestClient(app, raise_server_exceptions=False) as http:
        return [
            (r.status_code, r.headers["content-type"], r.content)
            for r in (http.post("/orders/1/pay"), http.post("/items", json={}), http.get("/items"))
        ]


def test_fastapi_answers_as_without_tallyhub() -> None:
    without = responses(shop())
    assert without[0] == (500, "text/plain; charset=utf-8", b"Internal Server Error")
    wrapped = TallyhubMiddleware(shop(), client=capturing_client())
    assert responses(wrapped) == without
    added = shop()
    added.add_middleware(TallyhubMiddleware, client=capturing_client())
    assert responses(added) == without
    with TestClient(shop()) as bare, pytest.raises(PaymentDeclined):
        bare.post("/orders/1/pay")  # raising through TestClient is the app's own behaviour too
    for app in (wrapped, added):
        client = app.client if isinstance(app, TallyhubMiddleware) else app.user_middleware[0].kwargs["client"]
        assert request_counts(*client.metrics_out.batches) == {
            ("POST", "/orders/{order_id}/pay", 500): 1,
            ("POST", "/items", 422): 1,
            ("GET", "/items", 200): 1,
        }
        assert sum(error_counts(SERVER_ERRORS, *client.metrics_out.batches).values()) == 1
        assert error_counts(VALIDATION_ERRORS, *client.metrics_out.batches) == {
            attributes("POST", "/items", location=f"body.{field}", message="Field required", type="missing"): 1
            for field in ("name", "price")
        }


def test_gzip_middleware_inside_tallyhub(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[tuple[int, str]] = []
    parse_body = validation_errors.parse_body

    def spy(body: bytes, encoding: str = "") -> Any:
        parsed.append((len(body), encoding))
        return parse_body(body, encoding)

    monkeypatch.setattr(validation_errors, "parse_body", spy)
    app = shop()
    client = capturing_client()
    app.add_middleware(GZipMiddleware, minimum_size=1)
    app.add_middleware(TallyhubMiddleware, client=client)  # added last: the outermost, around GZip
    assert [m.cls for m in app.user_middleware] == [TallyhubMiddleware, GZipMiddleware]
    with TestClient(app) as http:
        response = http.post("/items", json={"name": 5, "price": "x"}, headers={"accept-encoding": "gzip"})
        assert (response.status_code, response.headers["content-encoding"]) == (422, "gzip")
        assert response.json()["detail"][0]["loc"] == ["body", "name"]
        plain = http.get("/items", params={"limit": "x"}, headers={"accept-encoding": "identity"})
        assert plain.status_code == 422 and "content-encoding" not in plain.headers
    assert [encoding for _, encoding in parsed] == ["gzip", ""]
    assert parsed[0][0] == int(response.headers["content-length"])  # the compressed bytes
    assert error_counts(VALIDATION_ERRORS, *client.metrics_out.batches) == {
        attributes("POST", "/items", **NAME): 1,
        attributes("POST", "/items", **PRICE): 1,
        attributes("GET", "/items", **LIMIT): 1,
    }


def test_brotli_or_other_encodings_are_not_read() -> None:
    async def brotli(request: Any) -> Response:
        body = json.dumps({"detail": [{"loc": ["query", "q"], "msg": "m", "type": "t"}]}).encode()
        return Response(body, 422, media_type="application/json", headers={"content-encoding": "br"})

    middleware = TallyhubMiddleware(Starlette(routes=[Route("/br", brotli)]), client=capturing_client())
    with TestClient(middleware) as http:
        assert http.get("/br", headers={"accept-encoding": "identity"}).status_code == 422
    assert request_counts(*exported(middleware)) == {("GET", "/br", 422): 1}
    assert error_counts(VALIDATION_ERRORS, *exported(middleware)) == {}


def test_header_names_are_read_in_any_case() -> None:
    """Servers and frameworks write ASGI header names lowercase; an app may spell them as HTTP/1.1
    does: the body is read as they say (here gzipped JSON)."""
    body = gzip.compress(json.dumps({"detail": [{"loc": ["query", "q"], "msg": "m", "type": "t"}]}).encode())

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"Content-Type", b"application/json"), (b"CONTENT-ENCODING", b"gzip")]
        await send({"type": "http.response.start", "status": 422, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    middleware = ASGIMiddleware(app, client=capturing_client())
    assert TestClient(middleware).get("/q").status_code == 422  # no lifespan: the app has none
    middleware.client.shutdown()
    assert error_counts(VALIDATION_ERRORS, *exported(middleware)) == {
        attributes("GET", UNKNOWN_ROUTE, location="query.q", message="m", type="t"): 1
    }


def error_document(count: int, msg: str = "Field required") -> dict:
    return {"detail": [{"loc": ["query", f"q{i}"], "msg": msg, "type": "missing"} for i in range(count)]}


def starlette_app() -> Starlette:
    async def streamed(request: Any) -> StreamingResponse:
        body = json.dumps(error_document(3)).encode()
        parts = int(request.query_params.get("parts", "5"))
        size = -(-len(body) // parts)

        async def chunks():
            for i in range(0, len(body), size):
                yield body[i : i + size]

        return StreamingResponse(chunks(), status_code=422, media_type="application/json")

    async def large(request: Any) -> JSONResponse:
        document = error_document(600, "x" * 100)
        assert len(json.dumps(document, separators=(",", ":"))) > MAX_BODY
        return JSONResponse(document, status_code=422)

    async def large_streamed(request: Any) -> StreamingResponse:
        body = json.dumps(error_document(600, "x" * 100)).encode()

        async def chunks():
            for i in range(0, len(body), 16 * 1024):
                yield body[i : i + 16 * 1024]

        return StreamingResponse(chunks(), status_code=422, media_type="application/json")

    async def near_limit(request: Any) -> Response:
        body = json.dumps(error_document(3)).encode()
        return Response(body + b" " * (MAX_BODY - len(body)), 422, media_type="application/json")

    async def not_json(request: Any) -> Response:
        return Response(b'{"detail": [{"loc": ["query"', 422, media_type="application/json")

    async def plain_text(request: Any) -> Response:
        return Response(json.dumps(error_document(1)), 400, media_type="text/plain")

    async def ok(request: Any) -> JSONResponse:
        return JSONResponse(error_document(2))  # the shape, in a 200: not errors

    return Starlette(
        routes=[
            Route("/streamed", streamed),
            Route("/large", large),
            Route("/large-streamed", large_streamed),
            Route("/near-limit", near_limit),
            Route("/not-json", not_json),
            Route("/plain", plain_text),
            Route("/ok", ok),
        ]
    )


def test_starlette_error_bodies() -> None:
    middleware = TallyhubMiddleware(starlette_app(), client=capturing_client())
    with TestClient(middleware) as http:
        assert http.get("/streamed").json() == error_document(3)
        assert http.get("/streamed", params={"parts": "1"}).status_code == 422
        assert http.get("/large").status_code == 422
        assert http.get("/large-streamed").status_code == 422
        assert http.get("/near-limit").status_code == 422
        response = http.get("/not-json")
        assert (response.status_code, response.content) == (422, b'{"detail": [{"loc": ["query"')
        assert http.get("/plain").status_code == 400
        assert http.get("/ok").status_code == 200
    batches = exported(middleware)
    assert request_counts(*batches) == {
        ("GET", "/streamed", 422): 2,
        ("GET", "/large", 422): 1,
        ("GET", "/large-streamed", 422): 1,
        ("GET", "/near-limit", 422): 1,
        ("GET", "/not-json", 422): 1,
        ("GET", "/plain", 400): 1,
        ("GET", "/ok", 200): 1,
    }
    expected = {}
    for route, n in (("/streamed", 2), ("/near-limit", 1)):
        for i in range(3):
            expected[attributes("GET", route, location=f"query.q{i}", message="Field required", type="missing")] = n
    assert error_counts(VALIDATION_ERRORS, *batches) == expected
    assert error_counts(SERVER_ERRORS, *batches) == {}
