"""`opentelemetry-instrument` on apps with no tallyhub code, and multi-process servers."""

from __future__ import annotations

import signal
from collections import Counter

import httpx
import pytest

from .conftest import BIN, wait_for
from .test_pipeline import stored_counts

LAUNCH = [str(BIN / "opentelemetry-instrument")]
UVICORN_APP = [str(BIN / "uvicorn"), "tests.e2e.plain_apps:fastapi_app", "--port", "{port}"]
LITESTAR_APP = [str(BIN / "uvicorn"), "tests.e2e.plain_apps:litestar_app", "--port", "{port}"]
FLASK_APP = [str(BIN / "flask"), "--app", "tests.e2e.plain_apps:flask_app", "run", "--port", "{port}"]
GUNICORN_FLASK = [str(BIN / "gunicorn"), "-w", "3", "-b", "127.0.0.1:{port}", "tests.e2e.plain_apps:flask_app"]
GUNICORN_DJANGO = [str(BIN / "gunicorn"), "-w", "2", "-b", "127.0.0.1:{port}", "tests.e2e.django_site:application"]
UVICORN_WORKERS = [*UVICORN_APP, "--workers", "2"]


def send(url: str, unprocessable: int) -> None:
    """The same requests to either app; ``unprocessable`` is what a non-integer id gets."""
    with httpx.Client(base_url=url, headers={"Connection": "close"}) as client:
        for i in range(1, 21):
            assert client.get(f"/items/{i}").status_code == 200
        assert client.get("/items/x").status_code == unprocessable
        for i in range(3):
            assert client.post("/items", json={"n": i}).status_code == 201
        assert client.get("/boom").status_code == 500
        assert client.get("/nope").status_code == 404


def expectations(route: str, unprocessable: int, probes: int = 1) -> Counter:
    unmatched = "(unmatched)"
    bad_id_route = route if unprocessable == 422 else unmatched  # Flask's int converter does not match "x"
    expected: Counter = Counter()
    expected[route, "GET", 200] += 20 + probes  # + the start-up probes of /items/0
    expected[bad_id_route, "GET", unprocessable] += 1
    expected["/items", "POST", 201] += 3
    expected["/boom", "GET", 500] += 1
    expected[unmatched, "GET", 404] += 1
    return expected


@pytest.mark.parametrize(
    ("command", "route", "unprocessable"),
    [
        (UVICORN_APP, "/items/{item_id}", 422),
        (FLASK_APP, "/items/<int:item_id>", 404),
        (LITESTAR_APP, "/items/{item_id:int}", 404),
    ],
    ids=["uvicorn-fastapi", "flask-run", "uvicorn-litestar"],
)
def test_the_launcher_measures_an_app_with_no_tallyhub_code(hub, start_app, command, route, unprocessable) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    # OpenTelemetry's own FastAPI and Flask instrumentations are installed too; their HTTP metrics
    # must not reach an exporter (here the console), while the app's own metric does.
    app = start_app(hub.endpoint, key, [*LAUNCH, *command], OTEL_METRICS_EXPORTER="console", OTEL_SERVICE_NAME="shop")
    send(app.url, unprocessable)
    expected = expectations(route, unprocessable)
    total = sum(expected.values())
    wait_for(lambda: sum(stored_counts(hub).values()) >= total, 30, f"{total} requests")
    assert stored_counts(hub) == expected
    assert app.stop() in (0, -signal.SIGTERM)
    output = app.log.read_text()
    assert "shop.orders" in output  # the SDK's console exporter ran ...
    assert "http.server" not in output  # ... without any HTTP server metric: nothing counted twice
    assert hub.sql("SELECT DISTINCT service FROM requests") == [["shop"]]


@pytest.mark.parametrize(
    ("command", "route", "unprocessable", "workers"),
    [
        (GUNICORN_FLASK, "/items/<int:item_id>", 404, 3),
        ([*GUNICORN_FLASK, "--preload"], "/items/<int:item_id>", 404, 3),
        (UVICORN_WORKERS, "/items/{item_id}", 422, 2),
        (GUNICORN_DJANGO, "/items/<int:item_id>", 404, 2),
    ],
    ids=["gunicorn-3-workers", "gunicorn-preload", "uvicorn-2-workers", "gunicorn-django"],
)
def test_workers_report_apart_and_flush_at_sigterm(hub, start_app, command, route, unprocessable, workers) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    # no export during the test: what arrives was exported by each worker as it shut down
    app = start_app(
        hub.endpoint,
        key,
        [*LAUNCH, *command],
        OTEL_METRIC_EXPORT_INTERVAL="600000",
        DJANGO_SETTINGS_MODULE="tests.e2e.django_settings",
    )
    send(app.url, unprocessable)
    assert app.stop() in (0, -signal.SIGTERM)
    expected = expectations(route, unprocessable)
    total = sum(expected.values())
    wait_for(lambda: sum(stored_counts(hub).values()) >= total, 30, f"{total} requests")
    assert stored_counts(hub) == expected
    ((instances,),) = hub.sql("SELECT uniqExact(instance) FROM requests")
    assert 1 <= int(instances) <= workers  # one per worker that served; never the master


def test_the_launcher_honours_excluded_urls_and_disabled_instrumentations(hub, start_app) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    excluding = start_app(
        hub.endpoint, key, [*LAUNCH, *UVICORN_APP], OTEL_PYTHON_EXCLUDED_URLS="/boom,/nope", OTEL_SERVICE_NAME="on"
    )
    disabled = start_app(
        hub.endpoint,
        key,
        [*LAUNCH, *UVICORN_APP],
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="tallyhub",
        OTEL_SERVICE_NAME="off",
    )
    send(excluding.url, 422)
    send(disabled.url, 422)
    for app in (excluding, disabled):
        assert app.stop() in (0, -signal.SIGTERM)  # each flushes at shutdown, if it measures at all
    expected = expectations("/items/{item_id}", 422)
    del expected["/boom", "GET", 500], expected["(unmatched)", "GET", 404]
    wait_for(lambda: sum(stored_counts(hub).values()) >= sum(expected.values()), 30, "the requests")
    assert stored_counts(hub) == expected
    assert hub.sql("SELECT DISTINCT service FROM requests") == [["on"]]  # none from "off"
