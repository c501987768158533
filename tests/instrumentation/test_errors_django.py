"""Validation errors (DRF serializers, Django Ninja) and server errors of a real Django project,
through the test clients and Django's own WSGI and ASGI handlers."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import AsyncClient, Client, override_settings
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

from tallyhub.instrumentation import validation_errors
from tallyhub.instrumentation.client import TallyhubClient
from tallyhub.wire import SERVER_ERRORS, VALIDATION_ERRORS

from .conftest import error_counts, request_counts
from .django_project.harness import asgi_request, wsgi_request

pytestmark = pytest.mark.usefixtures("django_settings")


@pytest.fixture(autouse=True)
def error_urls(django_settings: None) -> Iterator[None]:
    from .django_project import URLCONF

    with override_settings(ROOT_URLCONF=URLCONF.replace(".urls", ".error_urls")):
        yield


def exported(client: TallyhubClient) -> list:
    client.loop.export_once()
    return client.metrics_out.batches


def validation(method: str, route: str, location: str, message: str, type_: str, consumer: str = "") -> tuple:
    attributes = {
        "http.request.method": method,
        "http.route": route,
        "tallyhub.validation_error.location": location,
        "tallyhub.validation_error.message": message,
        "tallyhub.validation_error.type": type_,
    }
    if consumer:
        attributes["tallyhub.consumer.id"] = consumer
    return tuple(sorted(attributes.items()))


def server_errors(client: TallyhubClient) -> Counter:
    """{(method, route, message): count} of the server errors exported (over stack traces)."""
    counts: Counter = Counter()
    for key, n in error_counts(SERVER_ERRORS, *exported(client)).items():
        attributes = dict(key)
        counts[attributes["http.request.method"], attributes["http.route"], attributes["exception.message"]] += n
    return counts


BAD_ORDER = {
    "size": "XXL-secret",
    "address": {"city": "c" * 30, "zip": "abc-secret"},
    "lines": [{"sku": "a", "quantity": 1}, {"quantity": 0}],
    "tags": [1, "two-secret"],
}
ORDER_ERRORS = [
    ("size", '"..." is not a valid choice.', "invalid_choice"),
    ("address.city", "Ensure this field has no more than 20 characters.", "max_length"),
    ("address.zip", "This value does not match the required pattern.", "invalid"),
    ("lines.1.sku", "This field is required.", "required"),
    ("lines.1.quantity", "Ensure this value is greater than or equal to 1.", "min_value"),
    ("tags.1", "A valid integer is required.", "invalid"),
]
SMALL_ORDER = {"size": "S", "address": {"city": "Bonn", "zip": "53111"}, "lines": [{"sku": "a", "quantity": 1}] * 2}


def test_drf_serializer_errors(tallyhub: TallyhubClient) -> None:
    client = Client()
    response = client.post("/errors/drf/orders", BAD_ORDER, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["size"] == ['"XXL-secret" is not a valid choice.']
    assert client.post("/errors/drf/orders", SMALL_ORDER, content_type="application/json").status_code == 400
    headers = {"X-Consumer": "shop-9"}
    assert client.post("/errors/drf/orders", {}, content_type="application/json", headers=headers).status_code == 400

    async def under_asgi() -> None:
        response = await AsyncClient().post("/errors/drf/orders", BAD_ORDER, content_type="application/json")
        assert response.status_code == 400

    asyncio.run(under_asgi())
    assert client.get("/errors/drf/plain").status_code == 400
    good = {**SMALL_ORDER, "lines": SMALL_ORDER["lines"][:1]}
    assert client.post("/errors/drf/orders", good, content_type="application/json").status_code == 201
    batches = exported(tallyhub)
    assert request_counts(*batches) == {
        ("POST", "/errors/drf/orders", 400): 4,
        ("POST", "/errors/drf/orders", 201): 1,
        ("GET", "/errors/drf/plain", 400): 1,
    }
    assert error_counts(VALIDATION_ERRORS, *batches) == {
        **{validation("POST", "/errors/drf/orders", *error): 2 for error in ORDER_ERRORS},
        validation(
            "POST", "/errors/drf/orders", "non_field_errors", "Small orders have one line.", "too_many_lines"
        ): 1,
        **{
            validation("POST", "/errors/drf/orders", field, "This field is required.", "required", "shop-9"): 1
            for field in ("size", "address", "lines")
        },
    }
    for batch in batches:
        assert b"secret" not in encode_metrics(batch).SerializeToString()


def test_ninja_validation_errors(tallyhub: TallyhubClient) -> None:
    client = Client()
    response = client.post("/errors/ninja/items", {"name": 5, "price": "x-secret"}, content_type="application/json")
    assert response.status_code == 422
    assert client.get("/errors/ninja/items", {"limit": "lots-secret"}).status_code == 422
    assert wsgi_request("/ninja/things/x/parts/wheel")[0] == 422
    assert asyncio.run(asgi_request("/ninja/things/x/parts/wheel"))[0] == 422
    assert client.get("/errors/ninja/items", {"limit": "5"}).status_code == 200
    batches = exported(tallyhub)
    assert error_counts(VALIDATION_ERRORS, *batches) == {
        validation("POST", "/errors/ninja/items", "body.item.name", "Input should be a valid string", "string_type"): 1,
        validation(
            "POST",
            "/errors/ninja/items",
            "body.item.price",
            "Input should be a valid number, unable to parse string as a number",
            "float_parsing",
        ): 1,
        validation(
            "GET",
            "/errors/ninja/items",
            "query.limit",
            "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing",
        ): 1,
        validation(
            "GET",
            "/ninja/things/<thing_id>/parts/<part>",
            "path.thing_id",
            "Input should be a valid integer, unable to parse string as an integer",
            "int_parsing",
        ): 2,
    }
    for batch in batches:
        assert b"secret" not in encode_metrics(batch).SerializeToString()
    assert json.loads(response.content)["detail"][0]["loc"] == ["body", "item", "name"]


def test_view_exceptions_are_server_errors(tallyhub: TallyhubClient) -> None:
    assert Client(raise_request_exception=False).get("/boom").status_code == 500
    assert wsgi_request("/boom")[0] == 500
    with pytest.raises(RuntimeError, match="kaput"):  # the test client re-raises it, as without tallyhub
        Client().get("/boom")

    async def under_asgi() -> None:
        assert (await AsyncClient(raise_request_exception=False).get("/async/boom")).status_code == 500
        assert (await asgi_request("/async/boom"))[0] == 500
        assert (await asgi_request("/boom"))[0] == 500  # a sync view under ASGI

    asyncio.run(under_asgi())
    assert Client().get("/items/404").status_code == 404  # Http404 from the view: not a server error
    assert Client().get("/errors/drf/missing").status_code == 404  # DRF's NotFound: handled
    assert Client(raise_request_exception=False).get("/errors/drf/crash").status_code == 500
    errors = server_errors(tallyhub)  # exports
    assert request_counts(*tallyhub.metrics_out.batches) == {
        ("GET", "/boom", 500): 4,
        ("GET", "/async/boom", 500): 2,
        ("GET", "/items/<int:item_id>", 404): 1,
        ("GET", "/errors/drf/missing", 404): 1,
        ("GET", "/errors/drf/crash", 500): 1,
    }
    assert errors == {
        ("GET", "/boom", "kaput"): 4,
        ("GET", "/async/boom", "async kaput"): 2,
        ("GET", "/errors/drf/crash", "3 units missing"): 1,
    }


def test_server_error_attributes(tallyhub: TallyhubClient) -> None:
    for _ in range(2):
        assert Client(raise_request_exception=False).get("/boom").status_code == 500
        assert wsgi_request("/boom")[0] == 500
    asyncio.run(AsyncClient(raise_request_exception=False).get("/async/boom"))
    assert Client(raise_request_exception=False).get("/errors/drf/crash").status_code == 500
    points = error_counts(SERVER_ERRORS, *exported(tallyhub))
    by_route = {}
    for key, n in points.items():
        attributes = dict(key)
        by_route.setdefault(attributes["http.route"], []).append((attributes, n))
    ((boom, count),) = by_route["/boom"]  # one raise site, one stack: one key
    assert count == 4
    assert boom.keys() == {
        "http.request.method",
        "http.route",
        "exception.type",
        "exception.message",
        "exception.stacktrace",
        "tallyhub.error.fingerprint",
    }
    assert (boom["exception.type"], boom["exception.message"]) == ("RuntimeError", "kaput")
    assert 'in boom\n    raise RuntimeError("kaput")\n' in boom["exception.stacktrace"]
    assert boom["exception.stacktrace"].endswith("RuntimeError: kaput\n")
    assert re.fullmatch(r"[0-9a-f]{16}", boom["tallyhub.error.fingerprint"])
    ((async_boom, _),) = by_route["/async/boom"]
    assert 'in async_boom\n    raise RuntimeError("async kaput")\n' in async_boom["exception.stacktrace"]
    assert async_boom["tallyhub.error.fingerprint"] != boom["tallyhub.error.fingerprint"]
    ((crash, _),) = by_route["/errors/drf/crash"]
    assert crash["exception.type"] == "tests.instrumentation.django_project.error_urls.InventoryMismatch"
    assert crash["exception.message"] == "3 units missing"
    assert crash["exception.stacktrace"].endswith(f"{crash['exception.type']}: 3 units missing\n")


def test_propagated_exceptions_are_recorded_once(tallyhub: TallyhubClient) -> None:
    with override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True):
        with pytest.raises(RuntimeError, match="kaput"):
            Client(raise_request_exception=False).get("/boom")
        with pytest.raises(RuntimeError, match="async kaput"):
            asyncio.run(AsyncClient(raise_request_exception=False).get("/async/boom"))
    assert server_errors(tallyhub) == {
        ("GET", "/boom", "kaput"): 1,
        ("GET", "/async/boom", "async kaput"): 1,
    }


def test_gzipped_ninja_errors(tallyhub: TallyhubClient, monkeypatch: pytest.MonkeyPatch) -> None:

    from .django_project import MIDDLEWARE

    encodings: list[str] = []
    parse_body = validation_errors.parse_body

    def spy(body: bytes, encoding: str = "") -> Any:
        encodings.append(encoding)
        return parse_body(body, encoding)

    monkeypatch.setattr(validation_errors, "parse_body", spy)
    # Django pads gzip output with up to 100 random bytes (BREACH) and sends it only when shorter:
    # a 422 body this small would then now and then go out uncompressed.
    monkeypatch.setattr("django.middleware.gzip.GZipMiddleware.max_random_bytes", 0)
    item = {"name": 5, "price": "x"}
    with override_settings(MIDDLEWARE=[MIDDLEWARE[0], "django.middleware.gzip.GZipMiddleware", *MIDDLEWARE[1:]]):
        response = Client().post(
            "/errors/ninja/items", item, content_type="application/json", headers={"Accept-Encoding": "gzip"}
        )
        assert (response.status_code, response["Content-Encoding"]) == (422, "gzip")

        async def under_asgi() -> None:
            response = await AsyncClient().post(
                "/errors/ninja/items", item, content_type="application/json", headers={"Accept-Encoding": "gzip"}
            )
            assert (response.status_code, response["Content-Encoding"]) == (422, "gzip")

        asyncio.run(under_asgi())
    assert error_counts(VALIDATION_ERRORS, *exported(tallyhub)) == {
        validation("POST", "/errors/ninja/items", "body.item.name", "Input should be a valid string", "string_type"): 2,
        validation(
            "POST",
            "/errors/ninja/items",
            "body.item.price",
            "Input should be a valid number, unable to parse string as a number",
            "float_parsing",
        ): 2,
    }
    assert encodings == ["gzip", "gzip"]  # each body parsed once, when folded
