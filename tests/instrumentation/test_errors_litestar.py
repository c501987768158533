"""Validation errors and server errors of a real Litestar app, measured by the plugin."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from litestar import Litestar, Request, get, post
from litestar.exceptions import InternalServerException, NotFoundException
from litestar.params import Body, Parameter
from litestar.testing import TestClient

from tallyhub import set_consumer
from tallyhub.instrumentation.litestar import LitestarMiddleware, TallyhubPlugin
from tallyhub.wire import SERVER_ERRORS, VALIDATION_ERRORS

from .conftest import capturing_client, error_counts, request_counts


class StockExhausted(Exception):
    pass


@dataclass
class Item:
    name: str
    price: float


def build_app(plugins: list) -> Litestar:
    @get("/items")
    async def list_items(request: Request, limit: Annotated[int, Parameter()] = 10) -> list:
        return []

    @post("/items")
    async def create_item(data: Annotated[Item, Body()]) -> Item:
        return data

    @post("/orders/{order_id:int}/ship")
    async def ship(request: Request, order_id: Annotated[int, Parameter()]) -> None:
        set_consumer(request, "warehouse-2")
        raise StockExhausted(f"no stock left for order {order_id}")

    @get("/items/{item_id:int}")
    async def read_item(item_id: Annotated[int, Parameter()]) -> dict:
        raise NotFoundException(f"no item {item_id}")

    @get("/maintenance")
    async def maintenance() -> None:
        raise InternalServerException("down for maintenance")  # an HTTPException: on purpose

    return Litestar(
        route_handlers=[list_items, create_item, ship, read_item, maintenance],
        plugins=plugins,
        logging_config=None,  # the 500s would log their tracebacks
    )


def attributes(method: str, route: str, location: str, message: str) -> tuple:
    return tuple(
        sorted(
            {
                "http.request.method": method,
                "http.route": route,
                "tallyhub.validation_error.location": location,
                "tallyhub.validation_error.message": message,
            }.items()
        )
    )


def test_litestar_validation_errors() -> None:
    plugin = TallyhubPlugin(client=capturing_client())
    with TestClient(build_app([plugin])) as http:
        assert http.get("/items", params={"limit": "many-secret"}).status_code == 400
        assert http.get("/items", params={"limit": "few-secret"}).status_code == 400
        assert http.post("/items", json={"name": 5, "price": 1.0}).status_code == 400
        assert http.post("/items", json={"name": "pen", "price": "cheap-secret"}).status_code == 400
        assert http.post("/items", json={"price": 2.0}).status_code == 400
        malformed = http.post("/items", content=b"{secret", headers={"content-type": "application/json"})
        assert malformed.status_code == 400 and "extra" not in malformed.json()  # no errors listed
        assert http.get("/items", params={"limit": "3"}).status_code == 200
    batches = plugin.client.metrics_out.batches
    assert request_counts(*batches) == {
        ("GET", "/items", 400): 2,
        ("POST", "/items", 400): 4,
        ("GET", "/items", 200): 1,
    }
    assert error_counts(VALIDATION_ERRORS, *batches) == {
        attributes("GET", "/items", "query.limit", "Expected `int`, got `str`"): 2,
        attributes("POST", "/items", "body.name", "Expected `str`, got `int`"): 1,
        attributes("POST", "/items", "body.price", "Expected `float`, got `str`"): 1,
        attributes("POST", "/items", "body.data", "Object missing required field `name`"): 1,
    }
    assert not any("secret" in repr(key) for key in error_counts(VALIDATION_ERRORS, *batches))
    assert error_counts(SERVER_ERRORS, *batches) == {}


def test_litestar_server_errors_and_http_exceptions() -> None:
    plugin = TallyhubPlugin(client=capturing_client())
    with TestClient(build_app([plugin])) as http:
        response = http.post("/orders/5/ship")
        assert (response.status_code, response.json()) == (500, {"status_code": 500, "detail": "Internal Server Error"})
        assert http.post("/orders/5/ship").status_code == 500
        assert http.get("/items/3").status_code == 404
        assert http.get("/maintenance").status_code == 500
        assert http.get("/nowhere").status_code == 404
    batches = plugin.client.metrics_out.batches
    assert request_counts(*batches) == {
        ("POST", "/orders/{order_id:int}/ship", 500): 2,
        ("GET", "/items/{item_id:int}", 404): 1,
        ("GET", "/maintenance", 500): 1,
        ("GET", "(unmatched)", 404): 1,
    }
    ((key, count),) = error_counts(SERVER_ERRORS, *batches).items()  # the HTTPExceptions are not
    error = dict(key)
    assert count == 2
    assert error.keys() == {
        "http.request.method",
        "http.route",
        "tallyhub.consumer.id",
        "exception.type",
        "exception.message",
        "exception.stacktrace",
        "tallyhub.error.fingerprint",
    }
    assert (error["http.request.method"], error["http.route"]) == ("POST", "/orders/{order_id:int}/ship")
    assert error["tallyhub.consumer.id"] == "warehouse-2"
    assert error["exception.type"] == f"{__name__}.StockExhausted"
    assert error["exception.message"] == "no stock left for order 5"
    assert 'in ship\n    raise StockExhausted(f"no stock left for order {order_id}")\n' in error["exception.stacktrace"]
    assert error["exception.stacktrace"].endswith(f"{__name__}.StockExhausted: no stock left for order 5\n")
    assert re.fullmatch(r"[0-9a-f]{16}", error["tallyhub.error.fingerprint"])


def test_litestar_middleware_by_hand_reads_validation_errors() -> None:
    middleware = LitestarMiddleware(build_app([]), client=capturing_client())
    with TestClient(middleware) as http:
        assert http.post("/orders/1/ship").status_code == 500
        assert http.get("/items", params={"limit": "x"}).status_code == 400
    batches = middleware.client.metrics_out.batches
    assert request_counts(*batches) == {("POST", "/orders/{order_id:int}/ship", 500): 1, ("GET", "/items", 400): 1}
    assert error_counts(VALIDATION_ERRORS, *batches) == {
        attributes("GET", "/items", "query.limit", "Expected `int`, got `str`"): 1
    }
