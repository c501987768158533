"""Route templates from real Starlette and FastAPI apps, driven through the middleware."""

from __future__ import annotations

import json
import os

import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from tallyhub.instrumentation.routes import UNMATCHED_ROUTE
from tallyhub.instrumentation.starlette import TallyhubMiddleware

from .conftest import capturing_client, request_counts


def instrumented(app) -> TallyhubMiddleware:
    """The app behind the middleware, exporting into memory (a flush happens at lifespan shutdown)."""
    return TallyhubMiddleware(app, client=capturing_client())


def recorded(middleware: TallyhubMiddleware):
    return request_counts(*middleware.client.metrics_out.batches)


async def plain_asgi(scope, receive, send):
    await PlainTextResponse("file")(scope, receive, send)


def fastapi_app() -> FastAPI:
    app = FastAPI(version="1.4.2")

    @app.get("/items/{item_id}", summary="Read an item")
    def item(item_id: int) -> dict:
        """Looks the item up.

        By its id."""
        return {"id": item_id}

    @app.post("/items", status_code=201)
    def create(body: dict) -> dict:
        return body

    users = APIRouter(prefix="/v1/users")

    @users.get("/{user_id}/orders/{order_id}")
    def order(user_id: str, order_id: str) -> dict:
        return {}

    app.include_router(users)
    sub = FastAPI()

    @sub.get("/things/{thing_id}")
    def thing(thing_id: str) -> dict:
        return {}

    app.mount("/sub", sub)
    app.mount("/static", plain_asgi)
    return app


@pytest.mark.parametrize("root_path", ["", "/api"])
def test_fastapi_route_templates(root_path: str) -> None:
    middleware = instrumented(fastapi_app())
    # ASGI servers put the root path in front of the path too (uvicorn --root-path does).
    with TestClient(middleware, root_path=root_path, base_url=f"http://testserver{root_path}") as client:
        assert client.get("/items/1").status_code == 200
        assert client.get("/items/2").status_code == 200
        assert client.get("/items/abc").status_code == 422
        assert client.post("/items", json={"a": 1}).status_code == 201
        assert client.delete("/items/3").status_code == 405
        assert client.get("/v1/users/u1/orders/o9").status_code == 200
        assert client.get("/sub/things/x").status_code == 200
        assert client.get("/sub/nothing/here").status_code == 404
        assert client.get("/static/css/site.css").status_code == 200
        for i in range(5):
            assert client.get(f"/wp-admin/{i}.php").status_code == 404
    assert recorded(middleware) == {
        ("GET", "/items/{item_id}", 200): 2,
        ("GET", "/items/{item_id}", 422): 1,
        ("POST", "/items", 201): 1,
        ("DELETE", "/items/{item_id}", 405): 1,
        ("GET", "/v1/users/{user_id}/orders/{order_id}", 200): 1,
        ("GET", "/sub/things/{thing_id}", 200): 1,
        ("GET", UNMATCHED_ROUTE, 404): 6,
        ("GET", "/static/{path}", 200): 1,
    }


def test_starlette_routes_and_unknown_method() -> None:
    async def user(request):
        return PlainTextResponse(str(request.path_params.get("user_id")))

    app = Starlette(routes=[Route("/users/{user_id:int}", user), Mount("/api", routes=[Route("/ping", user)])])
    middleware = instrumented(app)
    with TestClient(middleware) as client:
        assert client.get("/users/7").status_code == 200
        assert client.request("BREW", "/users/8").status_code == 405
        assert client.get("/users/x").status_code == 404
    assert recorded(middleware) == {
        ("GET", "/users/{user_id:int}", 200): 1,
        ("_OTHER", "/users/{user_id:int}", 405): 1,
        ("GET", UNMATCHED_ROUTE, 404): 1,
    }


def test_unhandled_exception_is_a_500_and_still_propagates() -> None:
    app = FastAPI()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaput")

    middleware = instrumented(app)
    with TestClient(middleware) as client, pytest.raises(RuntimeError, match="kaput"):
        client.get("/boom")
    assert recorded(middleware) == {("GET", "/boom", 500): 1}


def test_startup_event_lists_endpoints_and_openapi() -> None:
    middleware = instrumented(fastapi_app())
    with TestClient(middleware):
        assert middleware.client.startup.sent.wait(10)
    document = middleware.client.logs_out.startup_document()
    endpoints = {(e["method"], e["route"]): e for e in document["endpoints"]}
    assert set(endpoints) == {
        ("GET", "/items/{item_id}"),
        ("POST", "/items"),
        ("GET", "/v1/users/{user_id}/orders/{order_id}"),
        ("GET", "/sub/things/{thing_id}"),
    }
    assert endpoints["GET", "/items/{item_id}"]["summary"] == "Read an item"
    assert endpoints["GET", "/items/{item_id}"]["description"].startswith("Looks the item up.")
    assert json.loads(document["openapi"])["info"]["version"] == "1.4.2"
    assert document["versions"]["framework"].startswith("fastapi ")
    assert document["pid"] == os.getpid()


def test_excluded_urls_and_trailing_slash_redirects(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "^/health, /internal/")
    app = FastAPI()

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.get("/items")
    def items() -> list:
        return []

    middleware = instrumented(app)
    with TestClient(middleware) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/x/internal/y").status_code == 404
        assert client.get("/items/", follow_redirects=False).status_code == 307  # Starlette's redirect_slashes
        assert client.get("/items").status_code == 200
    assert recorded(middleware) == {("GET", UNMATCHED_ROUTE, 307): 1, ("GET", "/items", 200): 1}


def test_excluded_methods() -> None:
    app = FastAPI()

    @app.get("/items")
    def items() -> list:
        return []

    middleware = TallyhubMiddleware(app, client=capturing_client(excluded_methods=["options", "HEAD"]))
    with TestClient(middleware) as client:
        assert client.options("/items").status_code == 405
        assert client.head("/items").status_code in (200, 405)  # (FastAPI adds HEAD to GET routes, or not)
        assert client.get("/items").status_code == 200
    assert recorded(middleware) == {("GET", "/items", 200): 1}
