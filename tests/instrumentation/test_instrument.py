"""`tallyhub.instrument(app)` picks the right adapter for each kind of app."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from flask import Flask
from litestar import Litestar, get
from starlette.testclient import TestClient

import tallyhub
from tallyhub.instrumentation import flask as tallyhub_flask
from tallyhub.instrumentation.asgi import ASGIMiddleware
from tallyhub.instrumentation.litestar import LitestarMiddleware
from tallyhub.instrumentation.routes import UNKNOWN_ROUTE
from tallyhub.instrumentation.starlette import TallyhubMiddleware
from tallyhub.instrumentation.wsgi import WSGIMiddleware

from .conftest import capturing_client, request_counts


def test_fastapi_gets_the_middleware_and_stays_the_app() -> None:
    app = FastAPI()

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict:
        return {"id": item_id}

    client = capturing_client()
    assert tallyhub.instrument(app, client=client) is app
    assert [m.cls for m in app.user_middleware] == [TallyhubMiddleware]
    with TestClient(app) as http:
        assert http.get("/items/3").status_code == 200
    assert request_counts(*client.metrics_out.batches) == {("GET", "/items/{item_id}", 200): 1}


def test_flask_is_wrapped_in_place() -> None:
    app = Flask(__name__)
    assert tallyhub.instrument(app, client=capturing_client()) is app
    assert isinstance(app.wsgi_app, tallyhub_flask.TallyhubMiddleware)


def test_litestar_comes_back_wrapped() -> None:
    @get("/")
    async def index() -> str:
        return "hi"

    app = Litestar([index])
    assert isinstance(tallyhub.instrument(app, client=capturing_client()), LitestarMiddleware)


async def plain_asgi(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def plain_wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_unknown_frameworks_are_measured_under_one_route() -> None:
    client = capturing_client()
    asgi = tallyhub.instrument(plain_asgi, client=client)
    assert type(asgi) is ASGIMiddleware
    assert TestClient(asgi).post("/anything/1").status_code == 204  # (no lifespan: the app has none)
    wsgi = tallyhub.instrument(plain_wsgi, client=client)
    assert type(wsgi) is WSGIMiddleware
    body = wsgi({"REQUEST_METHOD": "GET", "PATH_INFO": "/x/2"}, lambda status, headers, exc_info=None: None)
    assert b"".join(body) == b"hello"
    if hasattr(body, "close"):  # as a server does (PEP 3333)
        body.close()
    client.loop.export_once()
    assert request_counts(*client.metrics_out.batches) == {
        ("POST", UNKNOWN_ROUTE, 204): 1,
        ("GET", UNKNOWN_ROUTE, 200): 1,
    }


def test_something_that_is_not_an_app_is_refused() -> None:
    with pytest.raises(TypeError, match="ASGI or WSGI"):
        tallyhub.instrument(42)
