"""API consumers, set from a handler in every framework or derived by a callback."""

from __future__ import annotations

from collections import Counter

import pytest
from fastapi import FastAPI, Request
from flask import Flask
from flask import request as flask_request
from litestar import Litestar, get
from litestar import Request as LitestarRequest
from litestar.testing import TestClient as LitestarTestClient
from starlette.testclient import TestClient

from tallyhub import Consumer, set_consumer
from tallyhub.instrumentation import flask as tallyhub_flask
from tallyhub.instrumentation.consumers import MAX_IDENTIFIER, MAX_NAME, make_consumer
from tallyhub.instrumentation.litestar import TallyhubPlugin
from tallyhub.instrumentation.starlette import TallyhubMiddleware
from tallyhub.wire import CONSUMER_GROUP, CONSUMER_ID, CONSUMER_NAME, DURATION

from .conftest import capturing_client


def consumers_seen(client) -> Counter:
    """{(consumer id, name, group, route): requests} over everything the client exported."""
    client.loop.export_once()
    seen: Counter = Counter()
    for batch in client.metrics_out.batches:
        for metric in batch.resource_metrics[0].scope_metrics[0].metrics:
            if metric.name == DURATION:
                for p in metric.data.data_points:
                    a = p.attributes
                    key = (a.get(CONSUMER_ID), a.get(CONSUMER_NAME), a.get(CONSUMER_GROUP), a["http.route"])
                    seen[key] += p.count
    return seen


def test_fastapi_handler_sets_the_consumer() -> None:
    app = FastAPI()

    @app.get("/items/{item_id}")
    def item(item_id: int, request: Request) -> dict:
        set_consumer(request, f"acme-{item_id % 2}", name="Acme", group="customers")
        return {}

    @app.get("/anonymous")
    def anonymous() -> dict:
        return {}

    client = capturing_client()
    app.add_middleware(TallyhubMiddleware, client=client)
    http = TestClient(app)
    for i in range(5):
        assert http.get(f"/items/{i}").status_code == 200
    assert http.get("/anonymous").status_code == 200
    assert consumers_seen(client) == {
        ("acme-0", "Acme", "customers", "/items/{item_id}"): 3,
        ("acme-1", "Acme", "customers", "/items/{item_id}"): 2,
        (None, None, None, "/anonymous"): 1,
    }


def test_flask_and_litestar_handlers_set_the_consumer() -> None:
    flask_app = Flask(__name__)

    @flask_app.get("/f")
    def f():
        set_consumer(flask_request, "flask-user", group="internal")
        return "ok"

    flask_client = capturing_client()
    tallyhub_flask.TallyhubMiddleware(flask_app, client=flask_client)
    response = flask_app.test_client().get("/f")
    response.close()
    assert consumers_seen(flask_client) == {("flask-user", None, "internal", "/f"): 1}

    @get("/l", sync_to_thread=False)
    def l_handler(request: LitestarRequest) -> str:
        set_consumer(request, "litestar-user", name="L")
        return "ok"

    plugin = TallyhubPlugin(client=capturing_client())
    with LitestarTestClient(app=Litestar([l_handler], plugins=[plugin])) as http:
        assert http.get("/l").status_code == 200
    assert consumers_seen(plugin.client) == {("litestar-user", "L", None, "/l"): 1}


def test_a_callback_derives_the_consumer_from_the_request() -> None:
    app = FastAPI()

    @app.get("/items")
    def items() -> list:
        return []

    def from_api_key(request: Request):
        key = request.headers.get("x-api-key")
        return Consumer(key, name=f"key {key}") if key else None

    client = capturing_client(identify_consumer=from_api_key)
    app.add_middleware(TallyhubMiddleware, client=client)
    http = TestClient(app)
    http.get("/items", headers={"x-api-key": "k1"})
    http.get("/items", headers={"x-api-key": "k1"})
    http.get("/items")
    assert consumers_seen(client) == {("k1", "key k1", None, "/items"): 2, (None, None, None, "/items"): 1}


def test_a_failing_callback_never_reaches_the_app(caplog) -> None:
    app = FastAPI()

    @app.get("/items")
    def items() -> list:
        return []

    def broken(request):
        raise KeyError("no such header")

    client = capturing_client(identify_consumer=broken)
    app.add_middleware(TallyhubMiddleware, client=client)
    assert TestClient(app).get("/items").status_code == 200
    assert consumers_seen(client) == {(None, None, None, "/items"): 1}
    assert "identify_consumer callback failed" in caplog.text


def test_lengths_are_limited() -> None:
    consumer = make_consumer("x" * 500, "n" * 100, "g" * 100)
    assert (len(consumer.identifier), len(consumer.name), len(consumer.group)) == (MAX_IDENTIFIER, MAX_NAME, MAX_NAME)
    assert make_consumer("  ") is None
    assert make_consumer(42) == Consumer("42")
    with pytest.raises(TypeError, match="request object"):
        set_consumer(object(), "x")


def test_distinct_consumers_beyond_the_cap_share_one_overflow_consumer() -> None:
    app = FastAPI()

    @app.get("/items")
    def items(request: Request) -> list:
        set_consumer(request, request.query_params["who"])
        return []

    client = capturing_client()
    client.aggregator.max_consumers = 5
    app.add_middleware(TallyhubMiddleware, client=client)
    http = TestClient(app)
    for i in range(50):
        http.get(f"/items?who=user-{i}")
    seen = consumers_seen(client)
    assert seen[("(overflow)", None, None, "/items")] == 45
    assert sum(seen.values()) == 50 and len(seen) == 6
