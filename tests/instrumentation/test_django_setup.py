"""The Django adapter's set-up: the process-wide client from settings, sync/async capability,
route templates of DRF's regex routes, and the endpoints and OpenAPI document for the start-up event."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from types import ModuleType

import pytest
from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import AsyncClient, Client, RequestFactory, override_settings
from django.urls import path, resolve

from tallyhub.instrumentation.client import TallyhubClient
from tallyhub.instrumentation.django import (
    TallyhubMiddleware,
    django_endpoints,
    django_openapi,
    get_client,
    route_template,
    set_client,
)

from .conftest import CapturingExporter, CapturingLogExporter, capturing_client, request_counts
from .django_project import views

pytestmark = pytest.mark.usefixtures("django_settings")


def in_memory_settings() -> dict:
    return {
        "exporter": CapturingExporter(),
        "log_exporter": CapturingLogExporter(),
        "export_interval": 3600,
        "service_name": "shop",
        "env": "test",
    }


def test_one_client_from_settings_shared_by_every_handler() -> None:
    set_client(None)
    with override_settings(TALLYHUB=in_memory_settings()):
        client = get_client()
        assert client is get_client()
        assert client.aggregator.resource.attributes["service.name"] == "shop"
        assert client.aggregator.resource.attributes["deployment.environment.name"] == "test"
        assert Client().get("/health").status_code == 200
        assert Client().get("/health").status_code == 200  # a second WSGI handler
        assert asyncio.run(AsyncClient().get("/items/1")).status_code == 200  # an ASGI handler
        assert get_client() is client
        assert request_counts(client.aggregator.collect()) == {
            ("GET", "/health", 200): 2,
            ("GET", "/items/<int:item_id>", 200): 1,
        }
    assert get_client() is not client  # changing TALLYHUB makes the next use build a new one
    set_client(None)


@pytest.mark.parametrize("setting", [{"app_key": "k", "colour": "blue"}, "thk_key"])
def test_a_wrong_setting_fails_when_the_middleware_loads(setting) -> None:
    with override_settings(TALLYHUB=setting), pytest.raises(ImproperlyConfigured, match="TALLYHUB"):
        Client().get("/health")
    set_client(None)


def test_set_client_takes_effect_in_existing_handlers(tallyhub: TallyhubClient) -> None:
    django_client = Client()
    assert django_client.get("/health").status_code == 200
    other = capturing_client()
    set_client(other)
    assert django_client.get("/health").status_code == 200
    assert request_counts(tallyhub.aggregator.collect()) == {("GET", "/health", 200): 1}
    assert request_counts(other.aggregator.collect()) == {("GET", "/health", 200): 1}


def test_sync_and_async_capable(tallyhub: TallyhubClient, caplog: pytest.LogCaptureFixture) -> None:
    def sync_view(request):
        return HttpResponse("s")

    async def async_view(request):
        return HttpResponse("a")

    assert TallyhubMiddleware.sync_capable and TallyhubMiddleware.async_capable
    assert not iscoroutinefunction(TallyhubMiddleware(sync_view))
    assert iscoroutinefunction(TallyhubMiddleware(async_view))
    # Django logs (with DEBUG) every middleware it has to adapt to the handler's mode.
    caplog.set_level(logging.DEBUG, logger="django.request")
    with override_settings(DEBUG=True):
        assert Client().get("/health").status_code == 200
        assert asyncio.run(AsyncClient().get("/async/hello/x")).status_code == 200
    assert not [r for r in caplog.records if "TallyhubMiddleware" in r.getMessage()]


def test_cancelled_async_request_is_recorded_as_client_closed(tallyhub: TallyhubClient) -> None:
    async def cancelled(request):
        raise asyncio.CancelledError

    request = RequestFactory().get("/items/3")
    request.resolver_match = resolve("/items/3")
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(TallyhubMiddleware(cancelled)(request))
    assert request_counts(tallyhub.aggregator.collect()) == {("GET", "/items/<int:item_id>", 499): 1}


def drf_view():
    return resolve("/drf/items/").func


@pytest.mark.parametrize(
    ("route", "template"),
    [
        ("^items/$", "/items/"),
        ("api/items/(?P<pk>[^/.]+)/$", "/api/items/<pk>/"),
        ("api/items/(?P<pk>[^/.]+)\\.(?P<format>[a-z0-9]+)/?$", "/api/items/<pk>.<format>"),
        ("api/<drf_format_suffix:format>", "/api/.<format>"),
        ("api/<drf_format_suffix_json_html:fmt>", "/api/.<fmt>"),
        ("v1/items/<str:pk>/", "/v1/items/<str:pk>/"),  # a path() router: already a template
        ("v1.0/items/(?P<pk>[^/.]+)/$", "/v1.0/items/<pk>/"),  # a dot of a path() prefix
        ("^(?P<code>(?:[a-z]{2})(?:-[a-z]+)?)/(?P<name>[)(]+)/$", "/<code>/<name>/"),  # nested groups, classes
        # What has no path() equivalent stays the regex Django gives (without the leading ^).
        ("^files/(.*)$", "/files/(.*)$"),
        ("^v\\d+/items/$", "/v\\d+/items/$"),
        ("^items/.*$", "/items/.*$"),
        ("^items/(?P<pk>[0-9]+$", "/items/(?P<pk>[0-9]+$"),  # unbalanced
    ],
)
def test_drf_regex_routes_as_templates(route: str, template: str) -> None:
    assert route_template(route, drf_view()) == template


def test_plain_re_path_keeps_its_regex() -> None:
    article = resolve("/articles/2024/x/").func
    assert route_template("^articles/(?P<year>[0-9]{4})/$", article) == "/articles/(?P<year>[0-9]{4})/$"


def test_endpoints() -> None:
    endpoints = {(e.method, e.route): (e.summary, e.description) for e in django_endpoints()}
    order = "/shop/users/<slug:user_id>/orders/<uuid:order_id>"
    assert set(endpoints) == {
        ("*", "/health"),
        ("*", "/menü/"),
        ("GET", "/echo/"),
        ("POST", "/echo/"),
        ("*", "/upload"),
        ("*", "/items/<int:item_id>"),
        ("*", "/boom"),
        ("*", "/async/boom"),
        ("*", "/async/hello/<str:name>"),
        ("*", "/stream/<int:chunks>"),
        ("*", "/async/stream/<int:chunks>"),
        ("*", "/async/slow"),
        ("*", "/download"),
        ("GET", order),
        ("DELETE", order),
        ("*", "/shop/archive/(?P<year>[0-9]{4})/(?P<slug>[\\w-]+)/$"),
        ("*", "/articles/(?P<year>[0-9]{4})/(?P<slug>[\\w-]+)/$"),
        ("GET", "/drf/"),
        ("GET", "/drf/items/"),
        ("POST", "/drf/items/"),
        ("GET", "/drf/items/<pk>/"),
        ("DELETE", "/drf/items/<pk>/"),
        ("POST", "/drf/items/<pk>/archive/"),
        ("GET", "/drf/ping"),
        ("POST", "/drf/ping"),
        ("GET", "/drf2/items/"),
        ("POST", "/drf2/items/"),
        ("GET", "/drf2/items/<str:pk>/"),
        ("DELETE", "/drf2/items/<str:pk>/"),
        ("POST", "/drf2/items/<str:pk>/archive/"),
        ("GET", "/ninja/things/<int:thing_id>"),
        ("POST", "/ninja/things"),
        ("GET", "/ninja/things/<thing_id>/parts/<part>"),
        ("GET", "/ninja/users/<user_id>"),
    }
    assert endpoints["*", "/health"] == ("Liveness probe.", "Answers 200 while the process serves requests.")
    assert endpoints["GET", order] == ("Read one order.", None)
    assert endpoints["DELETE", order] == ("Orders of a user.", None)  # no docstring: the class's
    assert endpoints["GET", "/drf/items/<pk>/"] == ("Read one item.", "By primary key.")
    assert endpoints["POST", "/drf/items/<pk>/archive/"] == ("Archive an item.", None)
    assert endpoints["GET", "/drf/ping"] == ("Ping, the DRF way.", None)
    assert endpoints["GET", "/ninja/things/<int:thing_id>"] == (
        "Read a thing",
        "Looks the thing up.\n\nIn the warehouse.",
    )
    assert endpoints["POST", "/ninja/things"] == ("Create Thing", None)  # Ninja's summary from the name


def test_openapi() -> None:
    document = django_openapi()
    assert document is not None
    assert document["info"] == {"title": "Test API", "version": "2.0.0", "description": ""}
    assert set(document["paths"]) == {
        "/ninja/things/{thing_id}",
        "/ninja/things",
        "/ninja/things/{thing_id}/parts/{part}",
        "/ninja/users/{user_id}",
    }
    json.dumps(document)


def test_no_openapi_without_ninja() -> None:
    urlconf = ModuleType("plain_urls")
    urlconf.urlpatterns = [path("health", views.health)]
    assert django_openapi(urlconf) is None
    assert [(e.method, e.route) for e in django_endpoints(urlconf)] == [("*", "/health")]


def test_startup_event_on_first_request(tallyhub: TallyhubClient) -> None:
    assert Client().get("/health").status_code == 200
    assert tallyhub.startup.sent.wait(10)
    document = tallyhub.logs_out.startup_document()
    assert {
        "method": "GET",
        "route": "/drf/items/<pk>/",
        "summary": "Read one item.",
        "description": "By primary key.",
    } in (document["endpoints"])
    assert json.loads(document["openapi"])["info"]["title"] == "Test API"
    assert document["versions"]["framework"].startswith("django ")
    assert document["pid"] == os.getpid()
