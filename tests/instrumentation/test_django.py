"""Route templates, statuses and sizes from a real Django project (plain views, class-based views,
include(), converters, re_path, DRF, Django Ninja), driven through the test clients and Django's
own WSGI and ASGI handlers with the middleware first in MIDDLEWARE."""

from __future__ import annotations

import asyncio
import warnings

import django
import pytest
from django.test import AsyncClient, Client, override_settings

from tallyhub.instrumentation.client import TallyhubClient
from tallyhub.instrumentation.django import set_client
from tallyhub.instrumentation.routes import UNMATCHED_ROUTE
from tallyhub.wire import DURATION, METHOD, REQUEST_SIZE, RESPONSE_SIZE, ROUTE, STATUS

from .conftest import capturing_client, request_counts
from .django_project import views
from .django_project.harness import asgi_request, wsgi_request

ORDER = "12345678-1234-1234-1234-123456789012"

pytestmark = pytest.mark.usefixtures("django_settings")


def recorded(client: TallyhubClient):
    client.loop.export_once()
    return request_counts(*client.metrics_out.batches)


def histograms(client: TallyhubClient) -> dict[tuple[str, str, str, int], tuple[int, float]]:
    """{(metric, method, route, status): (count, sum)} of what was recorded since the last collection."""
    data = client.aggregator.collect()
    assert data is not None
    return {
        (metric.name, p.attributes[METHOD], p.attributes[ROUTE], p.attributes[STATUS]): (p.count, p.sum)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for p in metric.data.data_points
    }


# Requests every handler mode must name the same way: (path, status, (method, route)).
REQUESTS = [
    ("/health", 200, "/health"),
    ("/items/1", 200, "/items/<int:item_id>"),
    ("/items/2", 200, "/items/<int:item_id>"),
    ("/items/404", 404, "/items/<int:item_id>"),  # Http404 raised by a matched view
    ("/items/abc", 404, UNMATCHED_ROUTE),  # the converter does not match
    (f"/shop/users/bob/orders/{ORDER}", 200, "/shop/users/<slug:user_id>/orders/<uuid:order_id>"),
    ("/shop/archive/2024/hello/", 200, "/shop/archive/(?P<year>[0-9]{4})/(?P<slug>[\\w-]+)/$"),
    ("/articles/2024/hello/", 200, "/articles/(?P<year>[0-9]{4})/(?P<slug>[\\w-]+)/$"),
    ("/drf/", 200, "/drf/"),
    ("/drf/.json", 200, "/drf/.<format>"),
    ("/drf/items/", 200, "/drf/items/"),
    ("/drf/items.json", 200, "/drf/items.<format>"),
    ("/drf/items/7/", 200, "/drf/items/<pk>/"),
    ("/drf/items/8/", 200, "/drf/items/<pk>/"),
    ("/drf/items/7.json", 200, "/drf/items/<pk>.<format>"),
    ("/drf/ping", 200, "/drf/ping"),
    ("/drf2/items/7/", 200, "/drf2/items/<str:pk>/"),
    ("/ninja/things/3", 200, "/ninja/things/<int:thing_id>"),
    ("/ninja/things/3/parts/wheel", 200, "/ninja/things/<thing_id>/parts/<part>"),
    ("/ninja/things/x/parts/wheel", 422, "/ninja/things/<thing_id>/parts/<part>"),  # Ninja's validation
    ("/ninja/users/u1", 200, "/ninja/users/<user_id>"),
    ("/async/hello/ann", 200, "/async/hello/<str:name>"),
    ("/boom", 500, "/boom"),
    ("/async/boom", 500, "/async/boom"),
    ("/echo", 301, "/echo/"),  # CommonMiddleware's APPEND_SLASH redirect: named after its target
    ("/echo/nothing", 404, UNMATCHED_ROUTE),  # no slashed route to redirect to
    ("/wp-admin/setup.php", 404, UNMATCHED_ROUTE),
    ("/.env", 404, UNMATCHED_ROUTE),
]


def expected_counts(requests=REQUESTS, method: str = "GET"):
    expected: dict[tuple[str, str, int], int] = {}
    for _, status, route in requests:
        key = (method, route, status)
        expected[key] = expected.get(key, 0) + 1
    return expected


def test_sync_client_route_templates(tallyhub: TallyhubClient) -> None:
    client = Client(raise_request_exception=False)
    for path, status, _ in REQUESTS:
        assert client.get(path).status_code == status, path
    assert client.post("/drf/items/", {"a": 1}).status_code == 201
    assert client.post("/drf/items/7/archive/").status_code == 200
    assert client.delete("/drf/items/7/").status_code == 204
    assert client.post("/ninja/things").status_code == 200
    assert client.delete(f"/shop/users/bob/orders/{ORDER}").status_code == 204
    assert client.put(f"/shop/users/bob/orders/{ORDER}").status_code == 405
    assert client.generic("BREW", "/health").status_code == 200
    assert recorded(tallyhub) == {
        **expected_counts(),
        ("POST", "/drf/items/", 201): 1,
        ("POST", "/drf/items/<pk>/archive/", 200): 1,
        ("DELETE", "/drf/items/<pk>/", 204): 1,
        ("POST", "/ninja/things", 200): 1,
        ("DELETE", "/shop/users/<slug:user_id>/orders/<uuid:order_id>", 204): 1,
        ("PUT", "/shop/users/<slug:user_id>/orders/<uuid:order_id>", 405): 1,
        ("_OTHER", "/health", 200): 1,
    }


def test_async_client_route_templates(tallyhub: TallyhubClient) -> None:
    async def requests() -> None:
        client = AsyncClient(raise_request_exception=False)
        for path, status, _ in REQUESTS:
            assert (await client.get(path)).status_code == status, path
        assert (await client.post("/drf/items/", {"a": 1})).status_code == 201

    asyncio.run(requests())
    assert recorded(tallyhub) == {**expected_counts(), ("POST", "/drf/items/", 201): 1}


def test_real_wsgi_and_asgi_handlers(tallyhub: TallyhubClient) -> None:
    for path, status, _ in REQUESTS:
        assert wsgi_request(path)[0] == status, path

    async def requests() -> None:
        for path, status, _ in REQUESTS:
            assert (await asgi_request(path))[0] == status, path

    asyncio.run(requests())
    assert recorded(tallyhub) == {key: 2 * n for key, n in expected_counts().items()}


def test_redirect_to_a_non_ascii_route(tallyhub: TallyhubClient) -> None:
    response = Client().get("/menü")
    assert (response.status_code, response["Location"]) == (301, "/men%C3%BC/")
    assert wsgi_request("/menü")[0] == 301
    assert asyncio.run(asgi_request("/menü"))[0] == 301
    assert recorded(tallyhub) == {("GET", "/menü/", 301): 3}


def test_script_name_is_not_part_of_the_route(tallyhub: TallyhubClient) -> None:
    client = Client()
    assert client.get("/items/3", SCRIPT_NAME="/app").status_code == 200
    redirect = client.get("/echo", SCRIPT_NAME="/app")
    assert (redirect.status_code, redirect["Location"]) == (301, "/app/echo/")
    assert wsgi_request("/drf/items/3/", script_name="/app")[0] == 200
    assert asyncio.run(asgi_request("/ninja/things/3", root_path="/app"))[0] == 200
    with override_settings(FORCE_SCRIPT_NAME="/forced"):
        assert client.get("/items/4").status_code == 200
        if django.VERSION >= (5, 0):  # Django 4.2's ASGIRequest does not strip FORCE_SCRIPT_NAME
            assert asyncio.run(asgi_request("/forced/items/5"))[0] == 200
    assert recorded(tallyhub) == {
        ("GET", "/items/<int:item_id>", 200): 3 if django.VERSION >= (5, 0) else 2,
        ("GET", "/echo/", 301): 1,
        ("GET", "/drf/items/<pk>/", 200): 1,
        ("GET", "/ninja/things/<int:thing_id>", 200): 1,
    }


def test_sizes_and_durations(tallyhub: TallyhubClient) -> None:
    client = Client()
    body = b"x" * 100
    assert client.post("/echo/", body, content_type="application/octet-stream").content == body
    assert client.post("/echo/", body[:40], content_type="application/octet-stream").status_code == 201
    # The view never reads this body: its declared length is the size (the middleware reads nothing).
    assert client.post("/upload", b"y" * 50, content_type="application/octet-stream").status_code == 204
    assert client.get("/health").content == b"ok"
    assert asyncio.run(asgi_request("/upload", method="PUT", body=b"z" * 30))[0] == 204
    assert wsgi_request("/echo/", method="POST", body=b"w" * 20) == (201, b"w" * 20)
    seen = histograms(tallyhub)
    assert seen[REQUEST_SIZE, "POST", "/echo/", 201] == (3, 160)
    assert seen[RESPONSE_SIZE, "POST", "/echo/", 201] == (3, 160)
    assert seen[REQUEST_SIZE, "POST", "/upload", 204] == (1, 50)
    assert seen[RESPONSE_SIZE, "POST", "/upload", 204] == (1, 0)
    assert seen[REQUEST_SIZE, "PUT", "/upload", 204] == (1, 30)
    assert seen[REQUEST_SIZE, "GET", "/health", 200] == (1, 0)
    assert seen[RESPONSE_SIZE, "GET", "/health", 200] == (1, 2)
    count, total = seen[DURATION, "POST", "/echo/", 201]
    assert count == 3
    assert 0 < total < 5


def test_streaming_responses_are_recorded_once_sent(tallyhub: TallyhubClient) -> None:
    client = Client()
    response = client.get("/stream/3")
    assert tallyhub.aggregator.collect() is None  # nothing until the body has been sent
    assert b"".join(response.streaming_content) == b"0123456789" * 3
    unread = client.get("/stream/5")
    unread.close()  # closed without being iterated (a HEAD request, an aborted connection)
    assert wsgi_request("/stream/4") == (200, b"0123456789" * 4)
    assert wsgi_request("/download") == (200, b"x" * 1234)  # sent with wsgi.file_wrapper

    async def requests() -> None:
        streamed = await AsyncClient().get("/async/stream/2")
        assert b"".join([chunk async for chunk in streamed.streaming_content]) == b"abcde" * 2
        assert await asgi_request("/async/stream/3") == (200, b"abcde" * 3)
        with warnings.catch_warnings():  # Django's: a sync iterator served asynchronously
            warnings.simplefilter("ignore")
            assert await asgi_request("/download") == (200, b"x" * 1234)
            assert await asgi_request("/stream/1") == (200, b"0123456789")

    asyncio.run(requests())
    seen = histograms(tallyhub)
    assert seen[RESPONSE_SIZE, "GET", "/stream/<int:chunks>", 200] == (4, 30 + 0 + 40 + 10)
    assert seen[RESPONSE_SIZE, "GET", "/async/stream/<int:chunks>", 200] == (2, 10 + 15)
    assert seen[RESPONSE_SIZE, "GET", "/download", 200] == (2, 2 * 1234)
    assert seen[DURATION, "GET", "/stream/<int:chunks>", 200][1] > 0


def test_unhandled_exceptions(tallyhub: TallyhubClient) -> None:
    # The test client re-raises a view's exception after Django turned it into a 500 response.
    with pytest.raises(RuntimeError, match="kaput"):
        Client().get("/boom")
    with pytest.raises(RuntimeError, match="async kaput"):
        asyncio.run(AsyncClient().get("/async/boom"))
    # With DEBUG_PROPAGATE_EXCEPTIONS the exception escapes get_response through the middleware.
    with override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True):
        with pytest.raises(RuntimeError, match="kaput"):
            Client(raise_request_exception=False).get("/boom")
        with pytest.raises(RuntimeError, match="async kaput"):
            asyncio.run(AsyncClient(raise_request_exception=False).get("/async/boom"))
    assert recorded(tallyhub) == {("GET", "/boom", 500): 2, ("GET", "/async/boom", 500): 2}


@pytest.mark.skipif(django.VERSION < (5, 0), reason="Django cancels a view when its client disconnects since 5.0")
def test_client_disconnect_while_an_async_view_runs(tallyhub: TallyhubClient) -> None:
    views.SLOW_VIEW_STARTED.clear()
    assert asyncio.run(asgi_request("/async/slow", disconnect=views.SLOW_VIEW_STARTED)) == (None, b"")
    assert recorded(tallyhub) == {("GET", "/async/slow", 499): 1}


PATHS = [
    "/health",
    "/items/3",
    "/items/404",
    "/items/abc",
    "/echo",
    "/boom",
    "/drf/items/7/",
    "/drf/items.json",
    "/ninja/things/3",
    "/ninja/things/x/parts/y",
    "/stream/2",
    "/async/stream/2",
    "/async/hello/bo",
]


def body(response) -> bytes:
    if not response.streaming:
        return response.content
    if not response.is_async:
        return b"".join(response.streaming_content)

    async def consume() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return asyncio.run(consume())


def responses(client: Client) -> list[tuple[int, dict[str, str], bytes]]:
    return [(r.status_code, dict(r.headers), body(r)) for r in map(client.get, PATHS)]


def test_the_app_behaves_exactly_as_without_tallyhub(tallyhub: TallyhubClient) -> None:
    from .django_project import MIDDLEWARE

    with_tallyhub = responses(Client(raise_request_exception=False))
    with override_settings(MIDDLEWARE=MIDDLEWARE[1:]):
        without = responses(Client(raise_request_exception=False))
    assert with_tallyhub == without
    assert sum(recorded(tallyhub).values()) == len(PATHS)


def test_listed_twice_measured_once(tallyhub: TallyhubClient) -> None:
    from .django_project import MIDDLEWARE

    with override_settings(MIDDLEWARE=[MIDDLEWARE[0], *MIDDLEWARE]):
        assert Client().get("/health").status_code == 200
        assert asyncio.run(AsyncClient().get("/health")).status_code == 200
        assert wsgi_request("/health")[0] == 200
        assert asyncio.run(asgi_request("/health"))[0] == 200
    assert recorded(tallyhub) == {("GET", "/health", 200): 4}


def test_excluded_urls_are_not_measured() -> None:
    client = capturing_client(excluded_urls="^/health$,^/drf/")
    set_client(client)
    try:
        for path in ("/health", "/drf/items/", "/items/1"):
            assert Client().get(path).status_code == 200
            assert asyncio.run(AsyncClient().get(path)).status_code == 200
        assert wsgi_request("/health", script_name="/app")[0] == 200  # matched against the app's path
    finally:
        set_client(None)
    assert recorded(client) == {("GET", "/items/<int:item_id>", 200): 2}
