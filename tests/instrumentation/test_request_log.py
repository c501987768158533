"""The request log on a real FastAPI app: what is logged, masked, cut, skipped and left out."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.testclient import TestClient

from tallyhub.instrumentation import TallyhubClient
from tallyhub.instrumentation.masking import MASK
from tallyhub.instrumentation.request_log import MAX_BODY_BYTES, RequestLoggingConfig
from tallyhub.instrumentation.starlette import TallyhubMiddleware
from tallyhub.wire import REQUEST_EVENT, UPTIME

from .conftest import capturing_client, request_counts


def make_app() -> FastAPI:
    app = FastAPI()

    @app.post("/items/{item_id}")
    async def update(item_id: int, request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"item_id": item_id, "token": "t-secret", "nested": {"user": {"password": "p"}}, "echo": body}

    @app.get("/healthz")
    async def health() -> str:
        return "ok"

    @app.get("/image")
    async def image() -> Response:
        return Response(b"\x89PNG" + bytes(2000), media_type="image/png")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks():
            for i in range(3):
                yield f"chunk {i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaput")

    return app


def logged(client: TallyhubClient) -> list[dict[str, Any]]:
    """The request-log records the client handed to its log exporter, as attribute dicts (+ body)."""
    client.loop.export_once()
    out = []
    for record in client.logs_out.records:  # type: ignore[attr-defined]
        if record.log_record.event_name == REQUEST_EVENT:
            attributes = dict(record.log_record.attributes or {})
            attributes["_body"] = record.log_record.body
            attributes["_trace_id"] = record.log_record.trace_id
            out.append(attributes)
    return out


def run(config: bool | RequestLoggingConfig, requests: list[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    client = capturing_client(request_logging=config)
    with TestClient(TallyhubMiddleware(make_app(), client=client), raise_server_exceptions=False) as http:
        for method, url, kwargs in requests:
            http.request(method, url, **kwargs)
    return logged(client)


def test_off_by_default_and_nothing_is_captured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TALLYHUB_REQUEST_LOGGING", raising=False)
    client = capturing_client()
    assert client.request_log is None
    with TestClient(TallyhubMiddleware(make_app(), client=client)) as http:
        http.post("/items/1", json={"a": 1})
    assert logged(client) == []


def test_the_environment_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYHUB_REQUEST_LOGGING", "true")
    assert capturing_client().request_log is not None


def test_a_request_is_logged_with_its_details_and_secrets_masked_everywhere() -> None:
    [record] = run(
        True,
        [
            (
                "POST",
                "/items/7?page=2&api_key=k-123&access_token=abc",
                {
                    "json": {"name": "widget", "password": "hunter2", "deep": [{"secret": "s", "keep": 1}]},
                    "headers": {"Authorization": "Bearer xyz", "X-Api-Key": "k", "Cookie": "sid=1", "X-Trace": "t"},
                },
            )
        ],
    )
    assert record["http.request.method"] == "POST"
    assert record["url.path"] == "/items/7"
    assert record["http.route"] == "/items/{item_id}"
    assert record["http.response.status_code"] == 200
    assert record["url.query"] == f"page=2&api_key={MASK}&access_token={MASK}"
    assert record["http.request.header.authorization"] == [MASK]
    assert record["http.request.header.x-api-key"] == [MASK]
    assert record["http.request.header.cookie"] == [MASK]
    assert record["http.request.header.x-trace"] == ["t"]
    assert json.loads(record["tallyhub.request.body"]) == {
        "name": "widget",
        "password": MASK,
        "deep": [{"secret": MASK, "keep": 1}],
    }
    response = json.loads(record["tallyhub.response.body"])
    assert response["token"] == MASK and response["nested"]["user"]["password"] == MASK
    assert response["echo"]["password"] == MASK
    assert record["http.request.body.size"] > 0 and record["http.response.body.size"] > 0
    assert record["http.server.request.duration"] > 0
    assert record["_body"] == "POST /items/7 200"
    assert len(record["tallyhub.request.id"]) == 36


def test_user_patterns_and_callback_add_to_the_defaults() -> None:
    def drop_echo(fields: dict[str, Any]) -> dict[str, Any] | None:
        if fields["path"] == "/items/2":
            return None
        fields["response_body"] = ""
        return fields

    config = RequestLoggingConfig(
        mask_query_params=["page"], mask_headers=["x-trace"], mask_body_fields=["^name$"], mask_callback=drop_echo
    )
    records = run(
        config,
        [
            ("POST", "/items/1?page=2&token=t", {"json": {"name": "w", "pwd": "x"}, "headers": {"X-Trace": "t"}}),
            ("POST", "/items/2", {"json": {}}),
        ],
    )
    [record] = records
    assert record["url.query"] == f"page={MASK}&token={MASK}"
    assert record["http.request.header.x-trace"] == [MASK]
    assert json.loads(record["tallyhub.request.body"]) == {"name": MASK, "pwd": MASK}
    assert "tallyhub.response.body" not in record


def test_large_bodies_are_cut_and_flagged_binary_and_streams_are_not_kept() -> None:
    text = "x" * (MAX_BODY_BYTES + 10)
    records = run(
        True,
        [
            ("POST", "/upload", {"content": text.encode(), "headers": {"Content-Type": "text/plain"}}),
            ("POST", "/upload", {"content": gzip.compress(b"abc"), "headers": {"Content-Type": "application/gzip"}}),
            ("GET", "/image", {}),
            ("GET", "/stream", {}),
        ],
    )
    by_path = {(r["url.path"], r.get("http.request.header.content-type", ("",))[0]): r for r in records}
    cut = by_path[("/upload", "text/plain")]
    assert len(cut["tallyhub.request.body"]) == MAX_BODY_BYTES and cut["tallyhub.request.body.truncated"] is True
    assert cut["http.request.body.size"] == MAX_BODY_BYTES + 10
    binary = by_path[("/upload", "application/gzip")]
    assert "tallyhub.request.body" not in binary and binary["http.request.body.size"] > 0
    image = by_path[("/image", "")]
    assert "tallyhub.response.body" not in image and image["http.response.body.size"] == 2004
    stream = by_path[("/stream", "")]
    assert "tallyhub.response.body" not in stream and stream["http.response.body.size"] == 24


def test_health_checks_probes_and_excluded_requests_are_left_out_and_sampling_applies() -> None:
    records = run(
        RequestLoggingConfig(exclude_paths=["^/upload$"], exclude_callback=lambda f: f["method"] == "DELETE"),
        [
            ("GET", "/healthz", {}),
            ("GET", "/image", {"headers": {"User-Agent": "kube-probe/1.30"}}),
            ("POST", "/upload", {"content": b"x"}),
            ("DELETE", "/image", {}),
            ("GET", "/image", {"headers": {"User-Agent": "curl/8"}}),
        ],
    )
    assert [(r["http.request.method"], r["url.path"]) for r in records] == [("GET", "/image")]
    assert run(RequestLoggingConfig(sample_rate=0.0), [("GET", "/image", {})]) == []


def test_a_500_carries_its_exception_and_the_client_ip_comes_from_proxies_only_when_trusted() -> None:
    headers = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1", "X-Forwarded-Proto": "https"}
    [untrusted] = run(True, [("GET", "/boom", {"headers": headers})])
    [trusted] = run(RequestLoggingConfig(trust_proxies=True), [("GET", "/boom", {"headers": headers})])
    assert untrusted["http.response.status_code"] == 500
    assert untrusted["exception.type"] == "RuntimeError" and untrusted["exception.message"] == "kaput"
    assert 'raise RuntimeError("kaput")' in untrusted["exception.stacktrace"]
    assert untrusted["client.address"] == "testclient" and trusted["client.address"] == "203.0.113.9"
    assert untrusted["url.scheme"] == trusted["url.scheme"] == "https"


def test_a_full_queue_drops_log_records_never_metrics() -> None:
    client = capturing_client(request_logging=RequestLoggingConfig(max_queued=2))
    with TestClient(TallyhubMiddleware(make_app(), client=client)) as http:
        client.loop.running = True  # no export thread flushing in between
        for _ in range(5):
            http.get("/image")
        assert client.request_log is not None and client.request_log.dropped == 3
    assert len(logged(client)) == 2
    batches = client.metrics_out.batches  # type: ignore[attr-defined]
    with_requests = [b for b in batches if b.resource_metrics[0].scope_metrics[0].metrics[0].name != UPTIME]
    assert request_counts(*with_requests) == {("GET", "/image", 200): 5}


def test_a_flask_request_is_logged_the_same_way() -> None:
    from flask import Flask, Response, jsonify, request

    from tallyhub.instrumentation.flask import TallyhubMiddleware as FlaskMiddleware

    app = Flask("shop")

    @app.post("/orders/<int:order_id>")
    def order(order_id: int) -> Any:
        return jsonify(order_id=order_id, token="t-1", echo=request.get_json())

    @app.get("/export")
    def export() -> Response:
        return Response((f"row {i}\n" for i in range(3)), mimetype="text/plain")  # streamed

    @app.get("/fail")
    def fail() -> None:
        raise KeyError("missing")

    client = capturing_client(request_logging=RequestLoggingConfig(trust_proxies=True))
    FlaskMiddleware(app, client=client)
    http = app.test_client()
    headers = {"X-Api-Key": "k", "X-Forwarded-For": "198.51.100.7"}
    # each response read and closed, as a WSGI server does: the request is recorded at close
    with http.post("/orders/3?secret=s&x=1", json={"pwd": "p", "n": 1}, headers=headers) as response:
        assert response.status_code == 200
    with http.get("/export") as response:
        assert response.data == b"row 0\nrow 1\nrow 2\n"
    with http.get("/fail") as response:
        assert response.status_code == 500
    records = {r["url.path"]: r for r in logged(client)}
    posted = records["/orders/3"]
    assert posted["http.route"] == "/orders/<int:order_id>"
    assert posted["url.query"] == f"secret={MASK}&x=1"
    assert posted["http.request.header.x-api-key"] == [MASK]
    assert posted["client.address"] == "198.51.100.7"
    assert json.loads(posted["tallyhub.request.body"]) == {"pwd": MASK, "n": 1}
    assert json.loads(posted["tallyhub.response.body"]) == {"order_id": 3, "token": MASK, "echo": {"pwd": MASK, "n": 1}}
    assert "tallyhub.response.body" not in records["/export"]
    assert records["/export"]["http.response.body.size"] == 18
    assert records["/fail"]["exception.type"] == "KeyError"


def test_a_flask_request_logged_without_bodies_has_its_declared_sizes() -> None:
    """Without bodies, a Flask response is recorded as the app returns it, its sizes read from the
    ``Content-Length`` headers: the log gets them as numbers, as the metrics do."""
    from flask import Flask, request

    from tallyhub.instrumentation.flask import TallyhubMiddleware as FlaskMiddleware

    app = Flask("shop")

    @app.post("/orders")
    def order() -> Any:
        return {"echo": request.get_json()}, 201

    config = RequestLoggingConfig(log_request_body=False, log_response_body=False)
    client = capturing_client(request_logging=config)
    FlaskMiddleware(app, client=client)
    with app.test_client().post("/orders", json={"n": 12345}) as response:
        assert response.status_code == 201
        sent = len(response.data)
    (record,) = logged(client)
    assert (record["http.request.body.size"], record["http.response.body.size"]) == (len(b'{"n": 12345}'), sent)
    assert "tallyhub.request.body" not in record and "tallyhub.response.body" not in record


def test_a_django_request_is_logged_the_same_way(django_settings: None) -> None:
    from django.test import Client

    from tallyhub.instrumentation.django import set_client

    client = capturing_client(request_logging=True)
    set_client(client)
    try:
        http = Client(raise_request_exception=False)
        body = json.dumps({"password": "p", "n": 2})
        assert http.post("/echo/?token=t", body, content_type="application/json").status_code == 201
        streamed = http.get("/stream/3", headers={"Authorization": "Basic x"})
        assert b"".join(streamed.streaming_content) == b"0123456789" * 3
        streamed.close()  # as the server does: the request is recorded then
        assert http.get("/boom").status_code == 500
    finally:
        set_client(None)
    by_path = {r["url.path"]: r for r in logged(client)}
    echo = by_path["/echo/"]
    assert echo["http.route"] == "/echo/" and echo["url.query"] == f"token={MASK}"
    assert json.loads(echo["tallyhub.request.body"]) == {"password": MASK, "n": 2}
    # echoed back as text/html: not JSON, so kept as it is (fields are masked in JSON and form bodies)
    assert echo["http.response.header.content-type"] == ["text/html; charset=utf-8"]
    assert echo["tallyhub.response.body"] == body
    stream = by_path["/stream/3"]
    assert stream["http.request.header.authorization"] == [MASK]
    assert "tallyhub.response.body" not in stream and stream["http.response.body.size"] == 30
    assert by_path["/boom"]["exception.type"] == "RuntimeError"


def test_escaped_names_are_masked_too() -> None:
    from tallyhub.instrumentation.masking import DEFAULT_BODY_PATTERNS, compile_patterns, mask_json_body, mask_query

    secret = compile_patterns(DEFAULT_BODY_PATTERNS)
    assert mask_query("api%5Fkey=k&a=1", secret) == f"api_key={MASK}&a=1"
    assert json.loads(mask_json_body('{"pass\\u0077ord": "p", "a": 1}', secret)) == {"password": MASK, "a": 1}
    assert mask_json_body('{"a": 1}', secret) == '{"a": 1}'  # nothing to mask: the text as it was


def test_the_record_carries_the_trace_id_of_the_span_the_request_ran_in() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    client = capturing_client(request_logging=True)
    measured = TallyhubMiddleware(make_app(), client=client)
    trace_ids = []

    async def traced(scope: dict, receive: Any, send: Any) -> None:  # as OpenTelemetry's ASGI middleware does
        if scope["type"] != "http":
            return await measured(scope, receive, send)
        with tracer.start_as_current_span("GET /image") as span:
            trace_ids.append(span.get_span_context().trace_id)
            await measured(scope, receive, send)

    with TestClient(traced) as http:
        http.get("/image")
    [record] = logged(client)
    assert record["_trace_id"] == trace_ids[0] != 0


def test_the_log_lines_the_app_wrote_while_handling_the_request_are_kept_when_asked() -> None:
    import logging

    app = FastAPI()
    shop_log = logging.getLogger("shop.orders")

    @app.get("/orders/{n}")
    async def order(n: int) -> dict[str, int]:
        shop_log.warning("order %d looked up", n)
        return {"n": n}

    client = capturing_client(request_logging=RequestLoggingConfig(capture_logs=True))
    with TestClient(TallyhubMiddleware(app, client=client)) as http:
        http.get("/orders/1")
        http.get("/orders/2")
    shop_log.warning("outside any request")  # kept nowhere
    by_path = {r["url.path"]: r for r in logged(client)}
    assert by_path["/orders/1"]["tallyhub.request.log_lines"] == ["WARNING shop.orders: order 1 looked up"]
    assert by_path["/orders/2"]["tallyhub.request.log_lines"] == ["WARNING shop.orders: order 2 looked up"]
    off = capturing_client(request_logging=True)
    with TestClient(TallyhubMiddleware(app, client=off)) as http:
        http.get("/orders/3")
    assert "tallyhub.request.log_lines" not in logged(off)[0]


def test_a_django_request_that_raises_past_the_middleware_is_logged_and_its_exception_kept(
    django_settings: None,
) -> None:
    from django.test import RequestFactory

    from tallyhub.instrumentation.django import TallyhubMiddleware as DjangoMiddleware
    from tallyhub.instrumentation.django import set_client

    def view_chain(request: Any) -> Any:
        raise LookupError("no such order")  # nothing turned it into a response on the way out

    client = capturing_client(request_logging=True)
    set_client(client)
    try:
        with pytest.raises(LookupError, match="no such order"):  # the app's own exception, untouched
            DjangoMiddleware(view_chain)(RequestFactory().get("/orders/9?token=t"))
    finally:
        set_client(None)
    [record] = logged(client)
    assert record["http.response.status_code"] == 500 and record["url.query"] == f"token={MASK}"
    assert record["exception.type"] == "LookupError" and "tallyhub.response.body" not in record
