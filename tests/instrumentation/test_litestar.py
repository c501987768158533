"""Route templates from a real Litestar app, measured by the plugin (or the middleware by hand)."""

from __future__ import annotations

import json
from typing import Annotated

import pytest
from litestar import Controller, Litestar, Router, asgi, get, post
from litestar.params import Body, Parameter
from litestar.testing import TestClient
from litestar.types import Receive, Scope, Send

from tallyhub.instrumentation import TallyhubClient
from tallyhub.instrumentation.introspection import Endpoint
from tallyhub.instrumentation.litestar import (
    LitestarMiddleware,
    TallyhubPlugin,
    litestar_endpoints,
    litestar_openapi,
)
from tallyhub.instrumentation.routes import UNMATCHED_ROUTE
from tallyhub.wire import DURATION, REQUEST_SIZE, RESPONSE_SIZE

from .conftest import capturing_client, request_counts  # exports into memory; one at lifespan shutdown


def recorded(client: TallyhubClient):
    return request_counts(*client.metrics_out.batches)


def points(client: TallyhubClient, name: str) -> dict:
    """{(method, route, status): data point} of one metric over all exports."""
    found = {}
    for data in client.metrics_out.batches:
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        for p in metric.data.data_points:
                            a = p.attributes
                            found[a["http.request.method"], a["http.route"], a["http.response.status_code"]] = p
    return found


async def file_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A plain ASGI app, as static files or another framework's app would be."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"file " + scope["path"].encode()})


def build_app(plugins: list | None = None, **kwargs) -> Litestar:
    @get("/items/{item_id:int}", summary="Read an item")
    async def read_item(item_id: Annotated[int, Parameter()]) -> dict:
        """Read one item.

        By its id."""
        return {"id": item_id}

    @get("/items", description="All items, paged.")
    async def list_items(limit: Annotated[int, Parameter()] = 10) -> list:
        return []

    @post("/items")
    async def create_item(data: Annotated[dict, Body()]) -> dict:
        return {**data, "id": 1}

    @get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaput")

    @get("/")
    async def index() -> str:
        return "home"

    @get(["/health", "/healthz/{probe:str}"])
    async def health(probe: Annotated[str, Parameter()] = "all") -> str:
        return probe

    class UserController(Controller):
        path = "/users"

        @get("/{user_id:str}/orders/{order_id:int}")
        async def order(self, user_id: Annotated[str, Parameter()], order_id: Annotated[int, Parameter()]) -> dict:
            """An order of a user."""
            return {}

    @get("/ping")
    async def ping() -> str:
        return "pong"

    v1 = Router("/v1", route_handlers=[UserController, ping])
    static = asgi("/static", is_mount=True, copy_scope=True)(file_app)
    files = asgi(["/files", "/assets"], is_mount=True, copy_scope=True)(file_app)
    return Litestar(
        route_handlers=[read_item, list_items, create_item, boom, index, health, v1, static, files],
        plugins=plugins or [],
        logging_config=None,  # the 500 below would log its traceback
        **kwargs,
    )


@pytest.mark.parametrize("root_path", ["", "/api"])
def test_plugin_route_templates(root_path: str) -> None:
    plugin = TallyhubPlugin(client=capturing_client())
    app = build_app([plugin])
    # ASGI servers put the root path in front of the path too (uvicorn --root-path does).
    with TestClient(app, root_path=root_path, base_url=f"http://testserver.local{root_path}") as client:
        assert plugin.client.loop.running  # started at lifespan startup
        assert client.get("/items/1").status_code == 200
        assert client.get("/items/2").status_code == 200
        assert client.get("/items/abc").status_code == 404  # Litestar: a path parameter that does not parse
        assert client.get("/items", params={"limit": "many"}).status_code == 400
        assert client.post("/items", json={"name": "widget"}).status_code == 201
        assert client.get("/boom").status_code == 500
        assert client.delete("/items/3").status_code == 405
        assert client.put("/").status_code == 405
        assert client.get("/").status_code == 200
        assert client.get("/v1/ping").status_code == 200
        assert client.get("/v1/users/u1/orders/9").status_code == 200
        assert client.get("/health").status_code == 200
        assert client.get("/healthz/db").text == "db"
        assert client.post("/healthz/db").status_code == 405
        assert client.get("/static/css/site.css").text == "file /css/site.css/"
        assert client.get("/static").status_code == 200
        assert client.get("/files/a.txt", params={"v": "1"}).status_code == 200
        assert client.get("/assets/b.png").status_code == 200
        assert client.options("/items").status_code == 204  # Litestar answers OPTIONS on every route
        for i in range(5):
            assert client.get(f"/wp-admin/{i}.php").status_code == 404
        assert plugin.client.metrics_out.batches == []  # nothing exported before shutdown
    assert not plugin.client.loop.running
    assert recorded(plugin.client) == {
        ("GET", "/items/{item_id:int}", 200): 2,
        ("GET", UNMATCHED_ROUTE, 404): 6,
        ("GET", "/items", 400): 1,
        ("POST", "/items", 201): 1,
        ("GET", "/boom", 500): 1,
        ("DELETE", "/items/{item_id:int}", 405): 1,
        ("PUT", "/", 405): 1,
        ("GET", "/", 200): 1,
        ("GET", "/v1/ping", 200): 1,
        ("GET", "/v1/users/{user_id:str}/orders/{order_id:int}", 200): 1,
        ("GET", "/health", 200): 1,
        ("GET", "/healthz/{probe:str}", 200): 1,
        ("POST", "/healthz/{probe:str}", 405): 1,
        ("GET", "/static", 200): 2,
        ("GET", "/files", 200): 1,
        ("GET", "/assets", 200): 1,
        ("OPTIONS", "/items", 204): 1,
    }


def test_sizes_and_durations() -> None:
    plugin = TallyhubPlugin(client=capturing_client())
    body = json.dumps({"name": "widget", "tags": ["a", "b"]}).encode()
    with TestClient(build_app([plugin])) as client:
        response = client.post("/items", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 201
        client.get("/boom")
    key = ("POST", "/items", 201)
    request_size, response_size = points(plugin.client, REQUEST_SIZE)[key], points(plugin.client, RESPONSE_SIZE)[key]
    assert (request_size.count, request_size.sum) == (1, len(body))
    assert (response_size.count, response_size.sum) == (1, len(response.content))
    durations = points(plugin.client, DURATION)
    assert durations.keys() == {key, ("GET", "/boom", 500)}
    assert all(p.count == 1 and p.min > 0 for p in durations.values())


def test_each_lifespan_exports_and_the_app_is_wrapped_once() -> None:
    plugin = TallyhubPlugin(client=capturing_client())
    app = build_app([plugin])
    for _ in range(2):  # e.g. two test clients on one app: two startups, two shutdowns
        with TestClient(app) as client:
            assert client.get("/items/1").status_code == 200
        assert not plugin.client.loop.running
    assert isinstance(app.asgi_handler, LitestarMiddleware)
    assert not isinstance(app.asgi_handler.app, LitestarMiddleware)
    assert len(plugin.client.metrics_out.batches) == 2
    assert recorded(plugin.client) == {("GET", "/items/{item_id:int}", 200): 2}


def test_middleware_around_the_whole_app() -> None:
    """Without the plugin: the lifespan then arrives as ASGI messages."""
    app = build_app()
    middleware = LitestarMiddleware(app, client=capturing_client())
    with TestClient(middleware) as client:
        assert middleware.client.loop.running
        assert client.get("/v1/ping").status_code == 200
        assert client.patch("/v1/ping").status_code == 405
        assert client.get("/nowhere").status_code == 404

        @get("/late/{n:int}")
        async def late(n: Annotated[int, Parameter()]) -> int:
            return n

        app.register(late)  # a route registered while serving
        assert client.get("/late/1").status_code == 200
    assert not middleware.client.loop.running
    assert recorded(middleware.client) == {
        ("GET", "/v1/ping", 200): 1,
        ("PATCH", "/v1/ping", 405): 1,
        ("GET", UNMATCHED_ROUTE, 404): 1,
        ("GET", "/late/{n:int}", 200): 1,
    }


def test_endpoints() -> None:
    endpoints = litestar_endpoints(build_app())
    file_doc = "A plain ASGI app, as static files or another framework's app would be."
    assert endpoints == [  # sorted by route, then method; Litestar's OPTIONS and /schema routes left out
        Endpoint("GET", "/", None, None),
        Endpoint("*", "/assets", None, file_doc),
        Endpoint("GET", "/boom", None, None),
        Endpoint("*", "/files", None, file_doc),
        Endpoint("GET", "/health", None, None),
        Endpoint("GET", "/healthz/{probe:str}", None, None),
        Endpoint("GET", "/items", None, "All items, paged."),
        Endpoint("POST", "/items", None, None),
        Endpoint("GET", "/items/{item_id:int}", "Read an item", "Read one item.\n\nBy its id."),
        Endpoint("*", "/static", None, file_doc),
        Endpoint("GET", "/v1/ping", None, None),
        Endpoint("GET", "/v1/users/{user_id:str}/orders/{order_id:int}", None, "An order of a user."),
    ]


def test_openapi() -> None:
    schema = litestar_openapi(build_app())
    assert schema is not None
    json.dumps(schema)  # goes into the start-up event as JSON
    assert schema["openapi"].startswith("3.")
    assert schema["paths"]["/items/{item_id}"]["get"]["summary"] == "Read an item"
    assert set(schema["paths"]["/items"]) == {"get", "post"}
    assert litestar_openapi(build_app(openapi_config=None)) is None


def test_the_startup_event_lists_the_routes() -> None:
    plugin = TallyhubPlugin(client=capturing_client(app_version="3.1"))
    with TestClient(app=build_app([plugin])):
        assert plugin.client.startup.sent.wait(10)
    document = plugin.client.logs_out.startup_document()
    assert ("GET", "/items/{item_id:int}") in {(e["method"], e["route"]) for e in document["endpoints"]}
    assert json.loads(document["openapi"])["paths"]
    assert document["versions"]["framework"].startswith("litestar ")
    assert document["versions"]["app"] == "3.1"
