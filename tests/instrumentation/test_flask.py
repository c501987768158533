"""Flask through the WSGI middleware, with Flask's own test client."""

from __future__ import annotations

import json

from flask import Blueprint, Flask, Response, abort, request

from tallyhub.instrumentation.flask import TallyhubMiddleware
from tallyhub.instrumentation.routes import UNMATCHED_ROUTE

from .conftest import capturing_client, request_counts


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/items/<int:item_id>")
    def read_item(item_id: int):
        """Read an item.

        Looks it up by id."""
        if item_id == 0:
            abort(404)
        return {"id": item_id}

    @app.post("/items")
    def create_item():
        return request.get_json(), 201

    @app.get("/boom")
    def boom():
        raise RuntimeError("kaput")

    @app.get("/stream")
    def stream():
        return Response((b"x" * 10 for _ in range(5)), mimetype="text/plain")

    api = Blueprint("api", __name__, url_prefix="/api/v1")

    @api.route("/users/<user_id>/orders/<int:order_id>", methods=["GET", "DELETE"])
    def order(user_id: str, order_id: int):
        return "", 204

    app.register_blueprint(api)
    return app


class ClosingClient:
    """Flask's test client, closing each response as a WSGI server does once the body is sent."""

    def __init__(self, app: Flask) -> None:
        self.client = app.test_client()

    def __getattr__(self, method: str):
        def call(*args, **kwargs):
            response = getattr(self.client, method)(*args, **kwargs)
            response.get_data()
            response.close()
            return response

        return call


def test_flask_route_templates_statuses_and_sizes() -> None:
    app = flask_app()
    middleware = TallyhubMiddleware(app, client=capturing_client())
    http = ClosingClient(app)
    assert http.get("/items/1").status_code == 200
    assert http.get("/items/2").status_code == 200
    assert http.get("/items/0").status_code == 404  # the route matched; the view said 404
    assert http.post("/items", json={"name": "pen"}).status_code == 201
    assert http.put("/items").status_code == 405
    assert http.get("/boom").status_code == 500
    assert http.get("/stream").data == b"x" * 50
    assert http.delete("/api/v1/users/u1/orders/7").status_code == 204
    for i in range(3):
        assert http.get(f"/.env{i}").status_code == 404
    middleware.client.loop.export_once()
    data = middleware.client.metrics_out.batches
    assert request_counts(*data) == {
        ("GET", "/items/<int:item_id>", 200): 2,
        ("GET", "/items/<int:item_id>", 404): 1,
        ("POST", "/items", 201): 1,
        ("PUT", "/items", 405): 1,
        ("GET", "/boom", 500): 1,
        ("GET", "/stream", 200): 1,
        ("DELETE", "/api/v1/users/<user_id>/orders/<int:order_id>", 204): 1,
        ("GET", UNMATCHED_ROUTE, 404): 3,
    }
    metrics = {m.name: m for m in data[0].resource_metrics[0].scope_metrics[0].metrics}
    post = {
        name: next(p for p in m.data.data_points if p.attributes["http.request.method"] == "POST")
        for name, m in metrics.items()
        if name.startswith("http.server.")
    }
    assert post["http.server.request.body.size"].sum == len(json.dumps({"name": "pen"}))
    assert post["http.server.response.body.size"].sum == len(b'{"name":"pen"}\n')
    assert post["http.server.request.duration"].min > 0
    stream = next(
        p for p in metrics["http.server.response.body.size"].data.data_points if p.attributes["http.route"] == "/stream"
    )
    assert stream.sum == 50


def test_an_app_that_makes_its_own_request_context_keeps_it() -> None:
    """The middleware makes Flask's request context itself only when the app's is Flask's own."""

    class AppWithItsOwnContext(Flask):
        made = 0

        def request_context(self, environ: dict):  # type: ignore[no-untyped-def]
            AppWithItsOwnContext.made += 1
            return super().request_context(environ)

    app = AppWithItsOwnContext(__name__)
    app.get("/items/<int:item_id>")(lambda item_id: {"id": item_id})
    middleware = TallyhubMiddleware(app, client=capturing_client())
    http = ClosingClient(app)
    assert http.get("/items/3").status_code == 200
    assert http.get("/items/4").status_code == 200
    assert AppWithItsOwnContext.made == 2
    middleware.client.loop.export_once()
    assert request_counts(*middleware.client.metrics_out.batches) == {("GET", "/items/<int:item_id>", 200): 2}


def test_flask_startup_event_lists_the_rules() -> None:
    app = flask_app()
    middleware = TallyhubMiddleware(app, client=capturing_client(app_version="2.0.1"))
    ClosingClient(app).get("/items/1")
    assert middleware.client.startup.sent.wait(10)
    document = middleware.client.logs_out.startup_document()
    endpoints = {(e["method"], e["route"]): e for e in document["endpoints"]}
    assert set(endpoints) == {
        ("GET", "/items/<int:item_id>"),
        ("POST", "/items"),
        ("GET", "/boom"),
        ("GET", "/stream"),
        ("GET", "/api/v1/users/<user_id>/orders/<int:order_id>"),
        ("DELETE", "/api/v1/users/<user_id>/orders/<int:order_id>"),
    }
    assert endpoints["GET", "/items/<int:item_id>"]["summary"] == "Read an item."
    assert endpoints["GET", "/items/<int:item_id>"]["description"] == "Looks it up by id."
    assert document["versions"]["app"] == "2.0.1"
    assert document["versions"]["framework"].startswith("flask ")
