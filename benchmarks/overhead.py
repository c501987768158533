"""Per-request overhead of tallyhub's instrumentation over bare apps, next to the alternatives, on every
framework tallyhub supports.

Run: ``python benchmarks/overhead.py`` (all frameworks, about 8 minutes on a 2-core AMD EPYC VM);
``python benchmarks/overhead.py --framework flask django-wsgi`` for some; ``--help`` for the options.

Frameworks: FastAPI, Starlette, Litestar and Django under ASGI; Flask and Django under WSGI; and
``django-asgi-chain``, Django's async middleware chain timed on its own (see DjangoChainDriver). Each one
runs its variants (``bare``, ``floor``, ``tallyhub``, the stock OpenTelemetry instrumentation with
metrics only and, for FastAPI, its built-in telemetry), every variant its own app with the same routes,
called directly: no network, no server, no TestClient. ASGI apps get a copied scope dict, a ``receive``
that returns the request body and a ``send`` that discards; WSGI apps get a copied environ with a fresh
``wsgi.input``, a ``start_response`` that discards, and the driver iterates the body and closes it, as
a WSGI server does. Each request is timed with ``perf_counter_ns``. The requests cycle through four
outcomes: 200 (``GET /items/{item_id}``), 201 (``POST /items`` with a JSON body), a 4xx for bad input
(FastAPI's 422 on the path parameter, Litestar's 400 on a query parameter, a 400 from the view elsewhere)
and 500 (the handler raises).

Within a framework the variants run interleaved: each round runs a small block of requests (40) on every
variant, in a shuffled order, so that drift and bursts of load on the machine hit all of them alike; the
frameworks run one after another. Each framework's rounds are shared among 4 processes run one after
another (``--processes``), with ``PYTHONHASHSEED`` 1 to 4: every variant is its own app, and the hash
seed lays out its dicts, which alone moves a variant by several µs in one process (see ``PROCESSES``).
Reported per framework, variant and status: median and p99 of the per-request time (the processes'
samples pooled), and the overhead over ``bare``: in each process the difference of the medians, the
median of that over the processes; the spread column is the 25-75 % range of the same difference
computed round by round; the summary adds the lowest and highest process's overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import io
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pydantic
from machine import machine, require_clean_tree, source_digest, versions
from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExporter, MetricExportResult
from opentelemetry.trace import NoOpTracerProvider

from tallyhub.instrumentation import TallyhubClient
from tallyhub.wire import DURATION

Scope = dict[str, Any]
Message = dict[str, Any]
RouteStatus = tuple[str | None, int]  # (route as the variant records it, status); status -1: none recorded

TARGET_US = 10.0  # tallyhub's target: at most this median overhead per request, on every framework

# --------------------------------------------------------------------------------------------
# The requests. Every framework serves the same four kinds; the 4xx differs by framework.

HEADERS = [
    (b"host", b"api.example.com"),
    (b"user-agent", b"benchmark/1.0"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate"),
]
POST_BODY = b'{"name": "widget", "price": 9.5, "tags": ["a", "b"]}'
ITEM = {"name": "widget", "price": 9.5}


# The POST body's types, at module level: FastAPI and Litestar resolve the (string) annotations in the
# handlers' module.


class Item(pydantic.BaseModel):
    name: str
    price: float
    tags: list[str] = []


class ItemStruct(msgspec.Struct):
    name: str
    price: float
    tags: list[str] = []


@dataclass(frozen=True)
class RequestKind:
    status: int  # what the app answers
    route: str  # the route template, as tallyhub records it
    method: str
    path: str
    query: str = ""
    body: bytes = b""

    @property
    def name(self) -> str:
        return str(self.status)


def request_kinds(
    item_route: str, bad_status: int, bad_path: str = "/items/abc", bad_query: str = ""
) -> list[RequestKind]:
    return [
        RequestKind(200, item_route, "GET", "/items/42"),
        RequestKind(201, "/items", "POST", "/items", body=POST_BODY),
        RequestKind(bad_status, item_route, "GET", bad_path, query=bad_query),
        RequestKind(500, "/boom", "GET", "/boom"),
    ]


def scope_for(kind: RequestKind) -> Scope:
    headers = list(HEADERS)
    if kind.body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(kind.body)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": kind.method,
        "scheme": "http",
        "path": kind.path,
        "raw_path": kind.path.encode(),
        "query_string": kind.query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 51000),
        "server": ("127.0.0.1", 8000),
    }


def environ_for(kind: RequestKind) -> dict[str, Any]:
    """A WSGI environ as gunicorn builds it (``wsgi.input`` is added per request)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": kind.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": kind.path,
        "QUERY_STRING": kind.query,
        "RAW_URI": kind.path + (f"?{kind.query}" if kind.query else ""),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "51000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in HEADERS:
        environ["HTTP_" + name.decode().upper().replace("-", "_")] = value.decode()
    if kind.body:
        environ["CONTENT_TYPE"] = "application/json"
        environ["CONTENT_LENGTH"] = str(len(kind.body))
    return environ


# --------------------------------------------------------------------------------------------
# Exporters: tallyhub's client in the benchmark keeps nothing and never touches the network.


class CountingExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.batches += 1
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


class CountingLogExporter(LogRecordExporter):
    """Where the start-up event goes."""

    def __init__(self) -> None:
        self.records = 0

    def export(self, batch: Any) -> LogRecordExportResult:
        self.records += len(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def tallyhub_client() -> TallyhubClient:
    return TallyhubClient(exporter=CountingExporter(), log_exporter=CountingLogExporter(), export_interval=3600)


# --------------------------------------------------------------------------------------------
# The variants, and how each one's recorded requests are counted.


@dataclass
class Variant:
    name: str
    description: str
    app: Any  # an ASGI or a WSGI app
    recorded: Callable[[], Counter[RouteStatus]]  # what the variant recorded, per (route, status)
    expected_key: Callable[[RequestKind], RouteStatus] = lambda kind: (kind.route, kind.status)
    cleanup: Callable[[], None] = lambda: None
    lifespan: bool = False  # ASGI: run the lifespan startup before the requests (and the shutdown after)
    native_telemetry: bool = False  # FastAPI: its built-in telemetry should be on
    sent: int = 0  # requests sent to the app, warm-up included
    samples: dict[str, list[float]] = field(default_factory=dict)  # kind -> µs
    round_medians: dict[str, list[float]] = field(default_factory=dict)  # kind -> per-round median µs


def nothing_recorded() -> Counter[RouteStatus]:
    return Counter()


def floor_recorded(counts: dict[tuple[str, str | None, int], list[float]]) -> Callable[[], Counter[RouteStatus]]:
    return lambda: Counter({(route, status): int(n) for (_m, route, status), (n, _d) in counts.items()})


def tallyhub_recorded(client: TallyhubClient) -> Callable[[], Counter[RouteStatus]]:
    def recorded() -> Counter[RouteStatus]:
        out: Counter[RouteStatus] = Counter()
        data = client.aggregator.collect()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == DURATION:
                        for point in metric.data.data_points:
                            a = point.attributes
                            out[(a["http.route"], a["http.response.status_code"])] += point.count
        return out

    return recorded


def otel_recorded(reader: InMemoryMetricReader, names: tuple[str, ...] = ()) -> Callable[[], Counter[RouteStatus]]:
    """Counts per (route, status) of the duration histogram: the first of ``names`` the reader has."""
    names = names or ("http.server.request.duration", "http.server.duration")

    def recorded() -> Counter[RouteStatus]:
        found: dict[str, Counter[RouteStatus]] = {}
        data = reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name not in names:
                        continue
                    out = found.setdefault(metric.name, Counter())
                    for point in metric.data.data_points:
                        attrs = point.attributes or {}
                        status = attrs.get("http.response.status_code", attrs.get("http.status_code"))
                        # the instrumentations' default (pre-stable) conventions put the template in http.target
                        route = attrs.get("http.route", attrs.get("http.target"))
                        out[(route, int(status) if status is not None else -1)] += point.count
        return next((found[name] for name in names if name in found), Counter())

    return recorded


def otel_meter_provider() -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader


def bump(counts: dict[tuple[str, str | None, int], list[float]], key: tuple[str, str | None, int], d: float) -> None:
    entry = counts.get(key)
    if entry is None:
        counts[key] = [1, d]
    else:
        entry[0] += 1
        entry[1] += d


class FloorMiddleware:
    """The least a per-route metrics middleware can do (ASGI): wraps ``send`` for the status, reads
    ``perf_counter`` twice and bumps a dict keyed by (method, route template, status)."""

    def __init__(self, app: Any, counts: dict, route_of: Callable[[Scope], str | None]) -> None:
        self.app = app
        self.counts = counts
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def status_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, status_send)
        finally:
            duration = time.perf_counter() - start
            bump(self.counts, (scope["method"], self.route_of(scope), status), duration)


def starlette_route(scope: Scope) -> str | None:
    return getattr(scope.get("route"), "path", None)


@dataclass
class Bench:
    """One framework's run: its request kinds, variants and how to drive them."""

    framework: str
    interface: str  # "asgi" or "wsgi": how the variants are called
    kinds: list[RequestKind]
    variants: list[Variant]
    raises_500: bool = False  # ASGI: the app re-raises the 500's exception after answering (Starlette)
    notes: list[str] = field(default_factory=list)
    driver: str = ""  # "chain": time Django's middleware chain only (see DjangoChainDriver)
    started: float = 0.0
    elapsed: float = 0.0
    rounds: int = 0
    block: int = 0
    warmup: int = 0
    bare_mix: float = 0.0  # bare's median on the mix (µs)
    probes: list[float] = field(default_factory=list)  # speed_probe() times, one per round (µs)
    per_process: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """Run in processes: variant -> status (and "mix") -> its overhead over bare in each process (µs)."""


# --------------------------------------------------------------------------------------------
# FastAPI.


def fastapi_routes(app: Any, item: dict[str, Any], model: type[pydantic.BaseModel]) -> Any:
    """The three routes every FastAPI variant serves: ``item`` is what GET answers, ``model`` what POST takes."""

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, Any]:
        return {"item_id": item_id, **item}

    async def create_item(body: Any) -> dict[str, Any]:
        return {"item_id": 1, **body.model_dump()}

    create_item.__annotations__["body"] = model  # FastAPI reads the body's type from the annotation
    app.post("/items", status_code=201)(create_item)

    @app.get("/boom")
    async def boom() -> dict[str, Any]:
        raise RuntimeError("boom")

    return app


def build_fastapi() -> Bench:
    from fastapi import FastAPI
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    from tallyhub.instrumentation.starlette import TallyhubMiddleware

    def app_with_routes(app: FastAPI) -> FastAPI:
        return fastapi_routes(app, ITEM, Item)

    variants = [Variant("bare", "plain FastAPI app", app_with_routes(FastAPI()), nothing_recorded)]

    floor_counts: dict = {}
    floor_app = app_with_routes(FastAPI())
    floor_app.add_middleware(FloorMiddleware, counts=floor_counts, route_of=starlette_route)
    variants.append(Variant("floor", "minimal pure-ASGI middleware", floor_app, floor_recorded(floor_counts)))

    client = tallyhub_client()
    tally_app = app_with_routes(FastAPI())
    tally_app.add_middleware(TallyhubMiddleware, client=client)
    variants.append(
        Variant("tallyhub", "TallyhubMiddleware", tally_app, tallyhub_recorded(client), cleanup=client.shutdown)
    )

    provider, reader = otel_meter_provider()
    otel_app = app_with_routes(FastAPI())
    FastAPIInstrumentor.instrument_app(otel_app, meter_provider=provider, tracer_provider=NoOpTracerProvider())
    variants.append(
        Variant(
            "otel-instrumentation",
            "opentelemetry-instrumentation-fastapi, metrics only",
            otel_app,
            otel_recorded(reader),
            cleanup=lambda: FastAPIInstrumentor.uninstrument_app(otel_app),
        )
    )

    provider, reader = otel_meter_provider()
    telemetry = {"meter_provider": provider, "tracing": False, "logs": False}
    native_app = app_with_routes(FastAPI(telemetry=telemetry))
    variants.append(
        Variant(
            "fastapi-builtin",
            "FastAPI's built-in OpenTelemetry metrics (tracing and logs off)",
            native_app,
            otel_recorded(reader, ("http.server.request.duration",)),
            native_telemetry=True,
        )
    )
    return Bench("fastapi", "asgi", request_kinds("/items/{item_id}", 422), variants, raises_500=True)


# --------------------------------------------------------------------------------------------
# FastAPI with the request log (issue 18): off, on without bodies, on with 1 KB bodies both ways.

BIG_ITEM = {"name": "widget", "price": 9.5, "tags": ["a", "b"], "description": "d" * 940}
BIG_POST_BODY = json.dumps(BIG_ITEM).encode()  # ~1 KB; the 200 and 201 answers are ~1 KB too


class BigItem(pydantic.BaseModel):
    name: str
    price: float
    tags: list[str] = []
    description: str = ""


def build_fastapi_logging() -> Bench:
    from fastapi import FastAPI

    from tallyhub.instrumentation.request_log import RequestLoggingConfig
    from tallyhub.instrumentation.starlette import TallyhubMiddleware

    def app_with_routes(app: FastAPI) -> FastAPI:
        return fastapi_routes(app, BIG_ITEM, BigItem)

    variants = [Variant("bare", "plain FastAPI app", app_with_routes(FastAPI()), nothing_recorded)]
    configs = {
        "tallyhub": ("TallyhubMiddleware, request log off", None),
        "tallyhub-log": (
            "request log on, headers but no bodies",
            RequestLoggingConfig(log_request_body=False, log_response_body=False),
        ),
        "tallyhub-log-bodies": ("request log on, headers and ~1 KB bodies both ways", RequestLoggingConfig()),
    }
    for name, (description, config) in configs.items():
        client = TallyhubClient(
            exporter=CountingExporter(),
            log_exporter=CountingLogExporter(),
            export_interval=3600,
            request_logging=config or False,
        )
        app = app_with_routes(FastAPI())
        app.add_middleware(TallyhubMiddleware, client=client)
        variants.append(Variant(name, description, app, tallyhub_recorded(client), cleanup=client.shutdown))
    apitally = apitally_logging_variant(app_with_routes(FastAPI()))
    if apitally is not None:
        variants.append(apitally)
    kinds = request_kinds("/items/{item_id}", 422)
    kinds[1] = RequestKind(201, "/items", "POST", "/items", body=BIG_POST_BODY)
    return Bench("fastapi-logging", "asgi", kinds, variants, raises_500=True)


APITALLY_CLIENT_ID = "6f1c3b8e-2d4a-4c5e-9f7a-1b2c3d4e5f60"  # any UUID: nothing is sent (see below)


def apitally_logging_variant(app: Any) -> Variant | None:
    """Apitally 0.x (``pip install 'apitally<1'``: 1.x is a rewrite on OpenTelemetry without this request
    log) with its request logging on, bodies and headers included, as ``tallyhub-log-bodies``. Its client
    is a process-wide singleton that syncs with apitally.io once its app's lifespan starts: the lifespan
    is not run, so nothing is sent and nothing resets its counters; its request log fills the queue its
    sync thread would write to a file (its request path's work is all done). None if 0.x is not installed."""
    try:
        from importlib.metadata import version

        if int(version("apitally").split(".")[0]) != 0:
            return None
        from apitally.fastapi import ApitallyMiddleware
    except Exception:  # not installed (ImportError, PackageNotFoundError), or an odd version string
        return None
    app.add_middleware(
        ApitallyMiddleware,
        client_id=APITALLY_CLIENT_ID,
        env="bench",
        enable_request_logging=True,
        log_request_headers=True,
        log_request_body=True,
        log_response_body=True,
    )

    def recorded() -> Counter[RouteStatus]:
        from apitally.client.client_asyncio import ApitallyClient

        counts = ApitallyClient.get_instance().request_counter.request_counts
        return Counter({(info.path, info.status_code): n for info, n in counts.items()})

    return Variant("apitally-log", "Apitally 0.x, request logging on with headers and bodies", app, recorded)


# --------------------------------------------------------------------------------------------
# Starlette.


def build_starlette() -> Bench:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tallyhub.instrumentation.starlette import TallyhubMiddleware

    async def read_item(request: Request) -> JSONResponse:
        try:
            item_id = int(request.path_params["item_id"])
        except ValueError:
            return JSONResponse({"detail": "item_id must be an integer"}, status_code=400)
        return JSONResponse({"item_id": item_id, **ITEM})

    async def create_item(request: Request) -> JSONResponse:
        item = await request.json()
        return JSONResponse({"item_id": 1, **item}, status_code=201)

    async def boom(request: Request) -> JSONResponse:
        raise RuntimeError("boom")

    def new_app() -> Starlette:
        return Starlette(
            routes=[
                Route("/items/{item_id}", read_item),
                Route("/items", create_item, methods=["POST"]),
                Route("/boom", boom),
            ]
        )

    variants = [Variant("bare", "plain Starlette app", new_app(), nothing_recorded)]

    floor_counts: dict = {}
    floor_app = new_app()
    floor_app.add_middleware(FloorMiddleware, counts=floor_counts, route_of=starlette_route)
    variants.append(Variant("floor", "minimal pure-ASGI middleware", floor_app, floor_recorded(floor_counts)))

    client = tallyhub_client()
    tally_app = new_app()
    tally_app.add_middleware(TallyhubMiddleware, client=client)
    variants.append(
        Variant("tallyhub", "TallyhubMiddleware", tally_app, tallyhub_recorded(client), cleanup=client.shutdown)
    )

    provider, reader = otel_meter_provider()
    otel_app = new_app()
    otel_app.add_middleware(OpenTelemetryMiddleware, meter_provider=provider, tracer_provider=NoOpTracerProvider())

    def otel_key(kind: RequestKind) -> RouteStatus:
        # The exception of a 500 passes through the middleware before ServerErrorMiddleware answers it:
        # the data point has no status code.
        return (kind.route, -1 if kind.status == 500 else kind.status)

    variants.append(
        Variant(
            "otel-instrumentation",
            "opentelemetry-instrumentation-asgi's OpenTelemetryMiddleware, metrics only",
            otel_app,
            otel_recorded(reader),
            expected_key=otel_key,
        )
    )
    return Bench(
        "starlette",
        "asgi",
        request_kinds("/items/{item_id}", 400),
        variants,
        raises_500=True,
        notes=[
            "stock: opentelemetry-instrumentation-starlette is not installed; its StarletteInstrumentor adds the "
            "same ASGI OpenTelemetryMiddleware (with Starlette's route as span name), used here directly.",
            "stock records the 500s without a status code: the handler's exception passes through its middleware "
            "before Starlette's ServerErrorMiddleware answers.",
        ],
    )


# --------------------------------------------------------------------------------------------
# Litestar.


def build_litestar() -> Bench:
    from litestar import Litestar, get, post
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

    from tallyhub.instrumentation.litestar import TallyhubPlugin

    @get("/items/{item_id:int}")
    async def read_item(item_id: int, limit: int = 10) -> dict[str, Any]:
        return {"item_id": item_id, **ITEM}

    @post("/items")
    async def create_item(data: ItemStruct) -> dict[str, Any]:
        return {"item_id": 1, **msgspec.structs.asdict(data)}

    @get("/boom")
    async def boom() -> dict[str, Any]:
        raise RuntimeError("boom")

    handlers = [read_item, create_item, boom]
    variants = [Variant("bare", "plain Litestar app", Litestar(handlers), nothing_recorded, lifespan=True)]

    floor_counts: dict = {}
    floor_app = Litestar(handlers)
    floor_app.asgi_handler = FloorMiddleware(
        floor_app.asgi_handler, floor_counts, lambda scope: scope.get("path_template")
    )
    variants.append(
        Variant(
            "floor",
            "minimal ASGI middleware around the app's handler",
            floor_app,
            floor_recorded(floor_counts),
            expected_key=lambda kind: (kind.route.replace(":int", ""), kind.status),  # path_template: no types
            lifespan=True,
        )
    )

    client = tallyhub_client()
    tally_app = Litestar(handlers, plugins=[TallyhubPlugin(client=client)])
    variants.append(
        Variant(
            "tallyhub",
            "TallyhubPlugin",
            tally_app,
            tallyhub_recorded(client),
            cleanup=client.shutdown,
            lifespan=True,
        )
    )

    provider, reader = otel_meter_provider()
    config = OpenTelemetryConfig(meter_provider=provider, tracer_provider=NoOpTracerProvider())
    otel_app = Litestar(handlers, plugins=[OpenTelemetryPlugin(config)])
    variants.append(
        Variant(
            "otel-instrumentation",
            "Litestar's OpenTelemetryPlugin, metrics only",
            otel_app,
            otel_recorded(reader),
            expected_key=lambda kind: (None, kind.status),  # the ASGI middleware finds no template in a Litestar scope
            lifespan=True,
        )
    )
    return Bench(
        "litestar",
        "asgi",
        request_kinds("/items/{item_id:int}", 400, bad_path="/items/42", bad_query="limit=abc"),
        variants,
        notes=[
            "4xx: `GET /items/42?limit=abc`, a query parameter that does not validate (a path parameter that does "
            "not parse is a 404 in Litestar).",
            "stock records no route: the ASGI OpenTelemetryMiddleware under Litestar's plugin finds no route "
            "template in the scope (it looks for Starlette's `scope['route']`).",
        ],
    )


# --------------------------------------------------------------------------------------------
# Flask.


class FlaskFloor:
    """The least a per-route metrics wrapper of ``app.wsgi_app`` can do: status from ``start_response``,
    two ``perf_counter`` reads, the rule from the request (kept as the request context is made), a dict
    bump when the app returns (not when the server closes the body)."""

    KEY = "benchmark.flask_request"

    def __init__(self, flask_app: Any, counts: dict) -> None:
        self.app = flask_app.wsgi_app
        self.counts = counts
        flask_app.wsgi_app = self
        make_context = flask_app.request_context
        key = self.KEY

        def request_context(environ: dict[str, Any]) -> Any:
            context = make_context(environ)
            environ[key] = context.request
            return context

        flask_app.request_context = request_context

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        status = 500

        def status_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            status = int(status_line[:3])
            return start_response(status_line, headers, exc_info)

        start = time.perf_counter()
        try:
            return self.app(environ, status_start_response)
        finally:
            duration = time.perf_counter() - start
            rule = getattr(environ.pop(self.KEY, None), "url_rule", None)
            bump(self.counts, (environ["REQUEST_METHOD"], rule.rule if rule else None, status), duration)


def build_flask() -> Bench:
    from flask import Flask, request
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    from tallyhub.instrumentation.flask import TallyhubMiddleware

    def new_app() -> Flask:
        app = Flask("benchmark")

        @app.get("/items/<item_id>")
        def read_item(item_id: str) -> Any:
            try:
                number = int(item_id)
            except ValueError:
                return {"detail": "item_id must be an integer"}, 400
            return {"item_id": number, **ITEM}

        @app.post("/items")
        def create_item() -> Any:
            return {"item_id": 1, **request.get_json()}, 201

        @app.get("/boom")
        def boom() -> Any:
            raise RuntimeError("boom")

        return app

    variants = [Variant("bare", "plain Flask app", new_app(), nothing_recorded)]

    floor_counts: dict = {}
    floor_app = new_app()
    FlaskFloor(floor_app, floor_counts)
    variants.append(Variant("floor", "minimal wrapper of app.wsgi_app", floor_app, floor_recorded(floor_counts)))

    client = tallyhub_client()
    tally_app = new_app()
    TallyhubMiddleware(tally_app, client=client)
    variants.append(
        Variant("tallyhub", "TallyhubMiddleware", tally_app, tallyhub_recorded(client), cleanup=client.shutdown)
    )

    provider, reader = otel_meter_provider()
    otel_app = new_app()
    FlaskInstrumentor.instrument_app(otel_app, meter_provider=provider, tracer_provider=NoOpTracerProvider())
    variants.append(
        Variant(
            "otel-instrumentation",
            "opentelemetry-instrumentation-flask, metrics only",
            otel_app,
            otel_recorded(reader),
            cleanup=lambda: FlaskInstrumentor.uninstrument_app(otel_app),
        )
    )
    return Bench("flask", "wsgi", request_kinds("/items/<item_id>", 400), variants)


# --------------------------------------------------------------------------------------------
# Django, under WSGI and under ASGI: one settings object for the process, one handler per variant.


class DjangoFloorMiddleware:
    """The least a per-route metrics middleware can do in Django (first in MIDDLEWARE, sync and async):
    two ``perf_counter`` reads, ``request.resolver_match.route``, a dict bump."""

    sync_capable = True
    async_capable = True
    counts: dict = {}  # noqa: RUF012 - replaced per run, before the handler is built

    def __init__(self, get_response: Any) -> None:
        from asgiref.sync import iscoroutinefunction, markcoroutinefunction

        self.get_response = get_response
        self.counts = DjangoFloorMiddleware.counts
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        start = time.perf_counter()
        response = self.get_response(request)
        self.record(request, response.status_code, time.perf_counter() - start)
        return response

    async def __acall__(self, request: Any) -> Any:
        start = time.perf_counter()
        response = await self.get_response(request)
        self.record(request, response.status_code, time.perf_counter() - start)
        return response

    def record(self, request: Any, status: int, duration: float) -> None:
        match = request.resolver_match
        bump(self.counts, (request.method, match.route if match is not None else None, status), duration)


_django_ready = False


def setup_django() -> None:
    """Minimal settings, once per process: no database, no apps, no middleware but the variant's."""
    global _django_ready
    if _django_ready:
        return
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="benchmark-only",
        ALLOWED_HOSTS=["api.example.com"],
        ROOT_URLCONF=None,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()
    _django_ready = True


def django_urls(asynchronous: bool) -> str:
    """A URLconf module (registered in ``sys.modules``); async views for ASGI, sync views for WSGI."""
    from django.http import HttpRequest, JsonResponse
    from django.urls import path

    def read(item_id: str) -> JsonResponse:
        try:
            number = int(item_id)
        except ValueError:
            return JsonResponse({"detail": "item_id must be an integer"}, status=400)
        return JsonResponse({"item_id": number, **ITEM})

    def create(request: HttpRequest) -> JsonResponse:
        return JsonResponse({"item_id": 1, **json.loads(request.body)}, status=201)

    if asynchronous:

        async def read_item(request: HttpRequest, item_id: str) -> JsonResponse:
            return read(item_id)

        async def create_item(request: HttpRequest) -> JsonResponse:
            return create(request)

        async def boom(request: HttpRequest) -> JsonResponse:
            raise RuntimeError("boom")

    else:

        def read_item(request: HttpRequest, item_id: str) -> JsonResponse:
            return read(item_id)

        def create_item(request: HttpRequest) -> JsonResponse:
            return create(request)

        def boom(request: HttpRequest) -> JsonResponse:
            raise RuntimeError("boom")

    def server_error(request: HttpRequest) -> JsonResponse:  # what a JSON API sets as handler500
        return JsonResponse({"detail": "Internal Server Error"}, status=500)

    name = f"benchmark_django_{'async' if asynchronous else 'sync'}_urls"
    module = types.ModuleType(name)
    module.urlpatterns = [  # type: ignore[attr-defined]
        path("items/<item_id>", read_item),
        path("items", create_item),
        path("boom", boom),
    ]
    module.handler500 = server_error  # type: ignore[attr-defined]
    sys.modules[name] = module
    return name


def build_django(interface: str) -> Bench:
    setup_django()
    from django.conf import settings
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.django.middleware.otel_middleware import _DjangoMiddleware

    from tallyhub.instrumentation import django as tallyhub_django

    asgi = interface == "asgi"
    settings.ROOT_URLCONF = django_urls(asynchronous=asgi)
    handler_class = ASGIHandler if asgi else WSGIHandler
    base_middleware: list[str] = []

    def handler(middleware: list[str]) -> Any:
        settings.MIDDLEWARE = [*middleware, *base_middleware]
        made = handler_class()  # loads settings.MIDDLEWARE now
        settings.MIDDLEWARE = list(base_middleware)
        return made

    def without_slash(kind: RequestKind) -> RouteStatus:  # Django's ResolverMatch.route
        return (kind.route.removeprefix("/"), kind.status)

    variants = [Variant("bare", f"plain Django {handler_class.__name__}", handler([]), nothing_recorded)]

    floor_counts: dict = {}
    DjangoFloorMiddleware.counts = floor_counts
    variants.append(
        Variant(
            "floor",
            "minimal Django middleware, first in MIDDLEWARE",
            handler([f"{DjangoFloorMiddleware.__module__}.DjangoFloorMiddleware"]),
            floor_recorded(floor_counts),
            expected_key=without_slash,
        )
    )

    client = tallyhub_client()
    tallyhub_django.set_client(client)  # the process's client, read by the middleware at each request
    variants.append(
        Variant(
            "tallyhub",
            "tallyhub's Django TallyhubMiddleware, first in MIDDLEWARE",
            handler([f"{tallyhub_django.__name__}.TallyhubMiddleware"]),
            tallyhub_recorded(client),
            cleanup=client.shutdown,
        )
    )

    # DjangoInstrumentor inserts its middleware into settings.MIDDLEWARE and sets the meter on the
    # middleware class: the handler built while instrumented has it; uninstrumenting takes it out of
    # the settings again (the other handlers are built with explicit MIDDLEWARE anyway) and leaves the
    # class attributes, which only this handler's middleware instance uses.
    provider, reader = otel_meter_provider()
    instrumentor = DjangoInstrumentor()
    settings.MIDDLEWARE = list(base_middleware)
    instrumentor.instrument(meter_provider=provider, tracer_provider=NoOpTracerProvider())
    assert settings.MIDDLEWARE[0] == DjangoInstrumentor._opentelemetry_middleware, settings.MIDDLEWARE
    otel_handler = handler_class()
    instrumentor.uninstrument()
    assert list(settings.MIDDLEWARE) == base_middleware, settings.MIDDLEWARE
    assert _DjangoMiddleware._meter is not None
    variants.append(
        Variant(
            "otel-instrumentation",
            "opentelemetry-instrumentation-django's DjangoInstrumentor, metrics only",
            otel_handler,
            otel_recorded(reader),
            expected_key=without_slash,
        )
    )
    notes = [
        "Django settings: DEBUG=False, no database, no installed apps, no middleware but the variant's; "
        "views return JsonResponse; `handler500` is a view returning a JSON 500 (no template engine).",
    ]
    if asgi:
        notes.append(
            "async views; DjangoInstrumentor's middleware is sync-only, so under ASGI Django runs it in a "
            "thread (sync_to_async) and the rest of the chain back on the loop (async_to_sync), per request."
        )
    else:
        notes.append("sync views.")
    return Bench(f"django-{interface}", interface, request_kinds("/items/<item_id>", 400), variants, notes=notes)


def build_django_chain() -> Bench:
    bench = build_django("asgi")
    bench.framework = "django-asgi-chain"
    bench.driver = "chain"
    # Even in the async chain, Django turns a view's exception into the 500 in a worker thread
    # (sync_to_async(response_for_exception)); the hop's noise spills over the next requests.
    bench.kinds = [kind for kind in bench.kinds if kind.status != 500]
    # The stock middleware is sync-only: two thread hops per request here, ~0.9 ms of the run's time
    # and threads that perturb the other variants' timings; its real cost is django-asgi's.
    bench.variants = [v for v in bench.variants if v.name != "otel-instrumentation"]
    bench.notes.append(
        "timed: `await handler._middleware_chain(request)` of each variant's ASGIHandler, i.e. the middleware "
        "and the view, on an ASGIRequest built before the clock starts (see DjangoChainDriver): without the "
        "handler's two new threads per request (request_started, response.close), whose cost and noise swamp "
        "a few µs. Without the 500 too (Django makes it in a worker thread even here): the mix is 200/201/400. "
        "Without the stock variant: its sync-only middleware hops to a thread and back on every request, which "
        "would disturb the others' timings (its cost: see django-asgi)."
    )
    return bench


@dataclass(frozen=True)
class Plan:
    """How much of a framework's run: defaults chosen so that all of them take about 3 minutes on 2 cores."""

    build: Callable[[], Bench]
    rounds: int
    block: int = 40  # requests per variant per round: small, so that bursts of load hit the variants alike
    warmup: int = 2000  # requests per variant


FRAMEWORKS: dict[str, Plan] = {
    "fastapi": Plan(build_fastapi, 800),
    "starlette": Plan(build_starlette, 1000),
    "litestar": Plan(build_litestar, 900),
    "flask": Plan(build_flask, 900),
    "django-wsgi": Plan(lambda: build_django("wsgi"), 900),
    "django-asgi": Plan(lambda: build_django("asgi"), 400, warmup=800),  # ~1 ms a request: a new thread each
    "django-asgi-chain": Plan(build_django_chain, 900, block=42),  # 3 kinds: no 500
    "fastapi-logging": Plan(build_fastapi_logging, 600),
}


# --------------------------------------------------------------------------------------------
# Drivers.


async def discard(message: Message) -> None:
    pass


def receiver(message: Message) -> Callable[[], Any]:
    """The request's body once, then nothing until the app cancels the wait (no disconnect)."""
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return message
        await asyncio.get_running_loop().create_future()  # Django listens for a disconnect meanwhile
        raise AssertionError("unreachable")

    return receive


def start_response_discard(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
    return _write


def _write(data: bytes) -> None:
    pass


class AsgiDriver:
    """Runs an ASGI bench's requests, block by block, in one event loop."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.loop = asyncio.new_event_loop()
        self.prepared = [
            (kind.name, scope_for(kind), {"type": "http.request", "body": kind.body, "more_body": False})
            for kind in bench.kinds
        ]
        self.lifespans: list[tuple[asyncio.Queue, asyncio.Task]] = []

    def start(self) -> None:
        for v in self.bench.variants:
            if v.lifespan:
                self.lifespans.append(self.loop.run_until_complete(self._startup(v.app)))

    async def _startup(self, app: Any) -> tuple[asyncio.Queue, asyncio.Task]:
        queue: asyncio.Queue = asyncio.Queue()
        queue.put_nowait({"type": "lifespan.startup"})
        started = asyncio.get_running_loop().create_future()

        async def send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                started.set_result(None)
            elif message["type"] == "lifespan.startup.failed":
                started.set_exception(RuntimeError(message.get("message")))

        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.4"}}
        task = asyncio.get_running_loop().create_task(app(scope, queue.get, send))
        await started
        return queue, task

    def close(self) -> None:
        for queue, task in self.lifespans:
            queue.put_nowait({"type": "lifespan.shutdown"})
            self.loop.run_until_complete(task)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    def check_statuses(self, variant: Variant) -> None:
        self.loop.run_until_complete(self._check_statuses(variant))

    async def _check_statuses(self, variant: Variant) -> None:
        for name, scope, message in self.prepared:
            statuses: list[int] = []

            async def recording_send(message: Message, statuses: list[int] = statuses) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            try:
                await variant.app(dict(scope), receiver(message), recording_send)
            except RuntimeError as exc:
                assert self.bench.raises_500 and name == "500" and str(exc) == "boom", exc
            else:
                assert not (self.bench.raises_500 and name == "500"), f"{variant.name}: the 500 did not raise"
            variant.sent += 1
            assert statuses == [int(name)], f"{variant.name}: {name} request answered {statuses}"

    def run_block(self, variant: Variant, count: int) -> dict[str, list[float]]:
        return self.loop.run_until_complete(self._run_block(variant, count))

    async def _run_block(self, variant: Variant, count: int) -> dict[str, list[float]]:
        """``count`` requests, the kinds in turn, each timed on its own."""
        app = variant.app
        clock = time.perf_counter_ns
        prepared = self.prepared
        block: dict[str, list[float]] = {name: [] for name, _, _ in prepared}
        n = len(prepared)
        raised = 0
        for i in range(count):
            name, scope, message = prepared[i % n]
            scope = dict(scope)
            receive = receiver(message)
            start = clock()
            try:
                await app(scope, receive, discard)
            except RuntimeError:  # the 500s, re-raised by Starlette's ServerErrorMiddleware after it answered
                raised += 1
            block[name].append((clock() - start) / 1000)
        expected = count // n if self.bench.raises_500 else 0
        assert raised == expected, f"{variant.name}: {raised} exceptions in {count} requests"
        return block


class WsgiDriver:
    """Calls a WSGI app as a server does: environ, start_response, iterate the body, close it."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.prepared = [(kind.name, environ_for(kind), kind.body) for kind in bench.kinds]

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def check_statuses(self, variant: Variant) -> None:
        for name, environ, body in self.prepared:
            statuses: list[int] = []

            def recording_start_response(
                status: str, headers: Any, exc_info: Any = None, statuses: list[int] = statuses
            ) -> Any:
                statuses.append(int(status[:3]))
                return _write

            environ = dict(environ)
            environ["wsgi.input"] = io.BytesIO(body)
            response = variant.app(environ, recording_start_response)
            content = b"".join(response)
            getattr(response, "close", lambda: None)()
            variant.sent += 1
            assert statuses == [int(name)], f"{variant.name}: {name} request answered {statuses}"
            assert content, f"{variant.name}: {name} answered no body"

    def run_block(self, variant: Variant, count: int) -> dict[str, list[float]]:
        app = variant.app
        clock = time.perf_counter_ns
        prepared = self.prepared
        block: dict[str, list[float]] = {name: [] for name, _, _ in prepared}
        n = len(prepared)
        new_input = io.BytesIO
        for i in range(count):
            name, environ, body = prepared[i % n]
            environ = dict(environ)
            environ["wsgi.input"] = new_input(body)
            start = clock()
            response: Iterable[bytes] = app(environ, start_response_discard)
            for _chunk in response:
                pass
            close = getattr(response, "close", None)
            if close is not None:
                close()
            block[name].append((clock() - start) / 1000)
        return block


class DjangoChainDriver(AsgiDriver):
    """Django under ASGI without the handler's own per-request costs: builds each ASGIRequest (from the
    same scope and body) before the clock starts, then times ``await handler._middleware_chain(request)``:
    every middleware of the variant and the view, as ``get_response_async`` runs them. The response is
    closed after the clock stops. What is left out (reading the body, ``request_started``, sending the
    response, closing it in a new thread) is the same for every variant."""

    def __init__(self, bench: Bench) -> None:
        super().__init__(bench)
        from django.core.handlers.asgi import ASGIRequest

        self.request_class = ASGIRequest
        self.bodies = [kind.body for kind in bench.kinds]

    async def _check_statuses(self, variant: Variant) -> None:
        for (name, scope, _message), body in zip(self.prepared, self.bodies, strict=True):
            response = await variant.app._middleware_chain(self.request_class(dict(scope), io.BytesIO(body)))
            response.close()
            variant.sent += 1
            assert response.status_code == int(name), f"{variant.name}: {name} request answered {response.status_code}"

    async def _run_block(self, variant: Variant, count: int) -> dict[str, list[float]]:
        chain = variant.app._middleware_chain
        clock = time.perf_counter_ns
        new_request = self.request_class
        new_input = io.BytesIO
        prepared = [(name, scope, body) for (name, scope, _), body in zip(self.prepared, self.bodies, strict=True)]
        block: dict[str, list[float]] = {name: [] for name, _, _ in prepared}
        n = len(prepared)
        for i in range(count):
            name, scope, body = prepared[i % n]
            request = new_request(dict(scope), new_input(body))
            start = clock()
            response = await chain(request)
            block[name].append((clock() - start) / 1000)
            response.close()
        return block


def speed_probe() -> int:
    """A fixed piece of plain Python (dicts, tuples, strings, calls; ~45 µs here), timed once per round: how
    fast the machine runs Python at the moment. This VM's speed shifts by tens of percent for minutes at
    a time (other tenants of the host), and the overheads shift with it; the probe's median tells runs
    measured in a slow phase from the others."""
    table: dict[str, tuple[int, float]] = {}
    for i in range(120):
        table[f"key-{i}"] = (i, i * 0.5)
    total = 0
    for key, (i, _half) in table.items():
        total += len(key) + i
    return total


# --------------------------------------------------------------------------------------------
# Checks that every variant measured what it claims to.


def _configured_globals() -> list[str]:
    """Names of the OpenTelemetry global providers that someone has set (there must be none)."""
    deferred = {"ProxyTracerProvider", "_ProxyMeterProvider", "ProxyLoggerProvider"}
    providers = {
        "tracer": trace.get_tracer_provider(),
        "meter": metrics.get_meter_provider(),
        "logger": _logs.get_logger_provider(),
    }
    return [name for name, p in providers.items() if type(p).__name__ not in deferred]


def check_setup(bench: Bench) -> None:
    configured = _configured_globals()
    assert not configured, f"global OpenTelemetry providers are set ({configured}): FastAPI telemetry would be on"
    if bench.framework == "fastapi":
        for v in bench.variants:
            enabled = v.app._native_telemetry.enabled()
            assert enabled == v.native_telemetry, f"{v.name}: FastAPI built-in telemetry enabled={enabled}"


def check_recorded(bench: Bench, variant: Variant) -> None:
    """Exactly one duration measurement per request sent, per (route, status); bare: none."""
    per_kind = variant.sent // len(bench.kinds)
    assert per_kind * len(bench.kinds) == variant.sent
    expected: Counter[RouteStatus] = Counter()
    if variant.name != "bare":
        for kind in bench.kinds:
            expected[variant.expected_key(kind)] += per_kind
    got = variant.recorded()
    assert got == expected, f"{bench.framework}/{variant.name} recorded {dict(got)}, expected {dict(expected)}"


# --------------------------------------------------------------------------------------------
# The run.


def run_bench(bench: Bench, args: argparse.Namespace, rounds: int, block: int, warmup: int) -> None:
    if args.only:
        keep = {"bare", *args.only}
        bench.variants = [v for v in bench.variants if v.name in keep]
    driver: AsgiDriver | WsgiDriver
    if bench.driver == "chain":
        driver = DjangoChainDriver(bench)
    elif bench.interface == "asgi":
        driver = AsgiDriver(bench)
    else:
        driver = WsgiDriver(bench)
    n = len(bench.kinds)
    bench.block = block = max(n, block - block % n)  # every block has as many requests of each kind
    bench.warmup = warmup = max(n, warmup - warmup % n)
    try:
        driver.start()
        check_setup(bench)
        for v in bench.variants:
            driver.check_statuses(v)
            if args.progress:
                print(f"  {bench.framework}/{v.name}: {v.description}", file=sys.stderr)

        # Warm-up, interleaved too, in chunks.
        remaining = warmup
        while remaining > 0:
            chunk = min(n * (200 // n), remaining)
            for v in bench.variants:
                driver.run_block(v, chunk)
                v.sent += chunk
            remaining -= chunk

        gc.collect()
        gc.freeze()  # setup objects stay out of the collections that the requests trigger
        rng = random.Random(args.seed)
        started = time.perf_counter()
        order = list(bench.variants)
        for r in range(rounds):
            rng.shuffle(order)
            for v in order:
                result = driver.run_block(v, block)
                v.sent += block
                for name, values in result.items():
                    v.samples.setdefault(name, []).extend(values)
                    v.round_medians.setdefault(name, []).append(statistics.median(values))
            probe_start = time.perf_counter_ns()
            speed_probe()
            bench.probes.append((time.perf_counter_ns() - probe_start) / 1000)
            if args.progress and (r + 1) % max(1, rounds // 5) == 0:
                print(
                    f"  {bench.framework}: round {r + 1}/{rounds}, {time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                )
        bench.elapsed = time.perf_counter() - started
        bench.rounds = rounds
        gc.unfreeze()

        check_setup(bench)
        for v in bench.variants:
            check_recorded(bench, v)
    finally:
        driver.close()
        for v in bench.variants:
            v.cleanup()


# --------------------------------------------------------------------------------------------
# Processes: the rounds of a framework shared among several, each with its own hash seed.

PROCESSES = 4
"""Processes per framework by default. Every variant is its own app, and string hashing, seeded anew in
each process, lays out each app's dicts differently: in one process a variant can run 5-10 µs slower or
faster than in another for that alone (Litestar's floor: +3 µs over bare under PYTHONHASHSEED 1 and 2,
+13 under 3). pyperf runs every benchmark in several processes for the same reason; here each process
gets a fixed seed (1, 2, ...), so a run can be repeated, and its share of the rounds."""


def run_worker(args: argparse.Namespace) -> int:
    """One process's share of a framework's run (``--worker FILE``): runs it and writes what the report
    needs as JSON; the parent takes the median of the processes' overheads (``run_processes``)."""
    (name,) = args.framework
    plan = FRAMEWORKS[name]
    logging.disable(logging.CRITICAL)
    bench = plan.build()
    warmup = plan.warmup if args.warmup is None else args.warmup
    run_bench(bench, args, args.rounds or plan.rounds, args.block or plan.block, warmup)
    share = {
        "framework": bench.framework,
        "interface": bench.interface,
        "kinds": [k.name for k in bench.kinds],
        "notes": bench.notes,
        "elapsed": bench.elapsed,
        "rounds": bench.rounds,
        "block": bench.block,
        "warmup": bench.warmup,
        "probes": bench.probes,
        "variants": [
            {"name": v.name, "description": v.description, "samples": v.samples, "round_medians": v.round_medians}
            for v in bench.variants
        ],
    }
    with open(args.worker, "w", encoding="utf-8") as out:
        json.dump(share, out)
    return 0


def run_processes(name: str, args: argparse.Namespace) -> Bench:
    """A framework's run in ``args.processes`` processes, one after another (``PYTHONHASHSEED`` 1, 2, ...),
    pooled into one Bench: samples and per-round medians in process order, the probes of all."""
    plan = FRAMEWORKS[name]
    rounds = -(-(args.rounds or plan.rounds) // args.processes)  # each process's share, rounded up
    options = ["--framework", name, "--rounds", str(rounds)]
    for option in ("block", "warmup"):
        if getattr(args, option) is not None:
            options += [f"--{option}", str(getattr(args, option))]
    if args.only:
        options += ["--only", *args.only]
    if not args.progress:
        options.append("--quiet")
    shares = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.processes):
            out = os.path.join(folder, f"{index}.json")
            command = [sys.executable, __file__, *options, "--seed", str(args.seed + index), "--worker", out]
            env = {**os.environ, "PYTHONHASHSEED": str(index + 1)}
            subprocess.run(command, env=env, check=True)
            with open(out, encoding="utf-8") as f:
                shares.append(json.load(f))
    first = shares[0]
    bench = Bench(
        first["framework"],
        first["interface"],
        [types.SimpleNamespace(name=kind) for kind in first["kinds"]],  # type: ignore[misc]  # report reads names
        [Variant(v["name"], v["description"], None, nothing_recorded) for v in first["variants"]],
        notes=first["notes"],
        elapsed=sum(share["elapsed"] for share in shares),
        rounds=sum(share["rounds"] for share in shares),
        block=first["block"],
        warmup=first["warmup"],
        probes=[probe for share in shares for probe in share["probes"]],
    )
    for share in shares:
        for v, got in zip(bench.variants, share["variants"], strict=True):
            assert v.name == got["name"], f"{name}: the processes built different variants"
            for kind, values in got["samples"].items():
                v.samples.setdefault(kind, []).extend(values)
            for kind, values in got["round_medians"].items():
                v.round_medians.setdefault(kind, []).extend(values)
    kinds = first["kinds"]
    for i, v in enumerate(bench.variants[1:], start=1):
        per_kind = {
            k: [
                statistics.median(share["variants"][i]["samples"][k])
                - statistics.median(share["variants"][0]["samples"][k])
                for share in shares
            ]
            for k in kinds
        }
        mixes = [statistics.fmean(per_kind[k][p] for k in kinds) for p in range(len(shares))]
        bench.per_process[v.name] = {**per_kind, "mix": mixes}
        bench.notes.append(
            f"{v.name} on the mix in each process (PYTHONHASHSEED 1-{len(shares)}): "
            + ", ".join(f"{x:+.1f}" for x in mixes)
            + " µs"
        )
    return bench


# --------------------------------------------------------------------------------------------
# Report.


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


VERSIONED = [
    "tallyhub",
    "fastapi",
    "starlette",
    "pydantic",
    "litestar",
    "msgspec",
    "flask",
    "werkzeug",
    "django",
    "asgiref",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-asgi",
    "opentelemetry-instrumentation-fastapi",
    "opentelemetry-instrumentation-wsgi",
    "opentelemetry-instrumentation-flask",
    "opentelemetry-instrumentation-django",
    "opentelemetry-instrumentation-starlette",
]


@dataclass
class Summary:
    mix: float  # mean of the per-status overheads (µs); run in processes: the median of theirs
    spread: tuple[float, float]  # 25-75 % of the per-round mix overhead
    halves: tuple[float, float]  # the mix overhead of each half of the rounds; run in processes: lowest, highest


def overhead(bench: Bench, v: Variant, bare: Variant, kind: str) -> float:
    """A variant's overhead over bare on one status (or "mix"): the difference of their medians; run
    in processes, the median of that difference over the processes (each process's medians are its
    own: pooled, a process that ran slower would shift them)."""
    if bench.per_process:
        return statistics.median(bench.per_process[v.name][kind])
    if kind == "mix":
        return mix_overhead(v, bare, [k.name for k in bench.kinds])
    return statistics.median(v.samples[kind]) - statistics.median(bare.samples[kind])


def mix_overhead(v: Variant, bare: Variant, kinds: list[str], part: slice = slice(None)) -> float:
    return statistics.fmean(
        statistics.median(v.samples[k][part]) - statistics.median(bare.samples[k][part]) for k in kinds
    )


def report(bench: Bench, args: argparse.Namespace) -> dict[str, Summary]:
    """Print the framework's table; return each variant's summary."""
    bare = bench.variants[0]
    kinds = [k.name for k in bench.kinds]
    per_variant = bench.block * bench.rounds
    print()
    print(f"## {bench.framework} ({bench.interface.upper()})")
    print()
    print(
        f"{bench.rounds} rounds x {bench.block} requests per variant ({per_variant} timed per variant, "
        f"{per_variant // len(kinds)} per status), {bench.warmup} warm-up requests per variant, "
        f"{bench.elapsed:.0f} s; speed probe {statistics.median(bench.probes):.1f} µs (median)"
    )
    for note in bench.notes:
        print(f"- {note}")
    print()
    print("| variant | status | median µs | p99 µs | overhead µs (median - bare) | per-round overhead 25-75 % |")
    print("|---|---|---:|---:|---:|---:|")
    summaries: dict[str, Summary] = {}
    half = bench.rounds // 2
    for v in bench.variants:
        for k in kinds:
            s = sorted(v.samples[k])
            med = percentile(s, 0.5)
            p99 = percentile(s, 0.99)
            if v is bare:
                print(f"| {v.name} | {k} | {med:.1f} | {p99:.1f} | - | - |")
                continue
            diffs = sorted(a - b for a, b in zip(v.round_medians[k], bare.round_medians[k], strict=True))
            spread = f"{percentile(diffs, 0.25):+.1f} .. {percentile(diffs, 0.75):+.1f}"
            print(f"| {v.name} | {k} | {med:.1f} | {p99:.1f} | {overhead(bench, v, bare, k):+.1f} | {spread} |")
        all_sorted = sorted(x for k in kinds for x in v.samples[k])
        mix_med, mix_p99 = percentile(all_sorted, 0.5), percentile(all_sorted, 0.99)
        if v is bare:
            bench.bare_mix = mix_med
            print(f"| **{v.name}** | **mix** | {mix_med:.1f} | {mix_p99:.1f} | **-** | |")
            continue
        per_round = sorted(
            statistics.fmean(v.round_medians[k][r] - bare.round_medians[k][r] for k in kinds)
            for r in range(bench.rounds)
        )
        split = half * (bench.block // len(kinds))
        processes = bench.per_process.get(v.name, {}).get("mix")
        summary = Summary(
            mix=overhead(bench, v, bare, "mix"),
            spread=(percentile(per_round, 0.25), percentile(per_round, 0.75)),
            halves=(min(processes), max(processes))
            if processes
            else (
                mix_overhead(v, bare, kinds, slice(None, split)) if half else float("nan"),
                mix_overhead(v, bare, kinds, slice(split, None)) if half else float("nan"),
            ),
        )
        summaries[v.name] = summary
        print(
            f"| **{v.name}** | **mix** | {mix_med:.1f} | {mix_p99:.1f} | **{summary.mix:+.1f}** "
            f"| {summary.spread[0]:+.1f} .. {summary.spread[1]:+.1f} |"
        )
    print()
    return summaries


SUMMARY_COLUMNS = ["floor", "tallyhub", "otel-instrumentation", "fastapi-builtin"]


def report_summary(results: dict[str, tuple[Bench, dict[str, Summary]]], total: float) -> bool:
    """The framework x variant table of the mix overheads; whether tallyhub met the target everywhere."""
    print()
    print("## Summary: median overhead per request on the mix, µs over bare")
    print()
    in_processes = any(bench.per_process for bench, _ in results.values())
    parts = "lowest / highest process" if in_processes else "first half / second half of the rounds"
    print(
        f"each cell: overhead (per-round 25-75 %; {parts}); speed probe: the median time of a fixed piece of "
        "Python, once per round (higher: the machine ran slower)"
    )
    print()
    print(
        "| framework | speed probe µs | bare mix median µs | floor | tallyhub | stock OpenTelemetry | FastAPI builtin |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    ok = True
    for name, (bench, summaries) in results.items():
        cells = []
        for column in SUMMARY_COLUMNS:
            s = summaries.get(column)
            if s is None:
                cells.append("-")
                continue
            bold = "**" if column == "tallyhub" else ""
            cells.append(
                f"{bold}{s.mix:+.1f}{bold} ({s.spread[0]:+.1f} .. {s.spread[1]:+.1f}; "
                f"{s.halves[0]:+.1f} / {s.halves[1]:+.1f})"
            )
        probe = statistics.median(bench.probes)
        print(
            f"| {name} ({bench.interface.upper()}) | {probe:.1f} | {bench.bare_mix:.1f} | " + " | ".join(cells) + " |"
        )
        tally = summaries.get("tallyhub")
        if tally is not None and not round(tally.mix, 1) <= TARGET_US:
            ok = False
    print()
    for name, (_bench, summaries) in results.items():
        tally = summaries.get("tallyhub")
        if tally is not None:
            verdict = "within" if round(tally.mix, 1) <= TARGET_US else "ABOVE"
            print(f"- {name}: tallyhub {tally.mix:+.1f} µs, {verdict} the {TARGET_US:.0f} µs target")
    logging_run = results.get("fastapi-logging")
    if logging_run is not None and "tallyhub" in logging_run[1]:
        off = logging_run[1]["tallyhub"]
        print("Request log (fastapi-logging, ~1 KB bodies): median on the mix over tallyhub with the log off")
        print()
        for name, goal in (("tallyhub-log", 10.0), ("tallyhub-log-bodies", 25.0)):
            on = logging_run[1].get(name)
            if on is not None:
                verdict = "within" if round(on.mix - off.mix, 1) <= goal else "ABOVE"
                print(f"- {name}: {on.mix - off.mix:+.1f} µs, {verdict} the {goal:.0f} µs goal")
        apitally = logging_run[1].get("apitally-log")
        if apitally is None:
            print("- apitally-log: not run (Apitally 0.x is not installed: `pip install 'apitally[fastapi]<1'`)")
        else:
            print(f"- apitally-log (Apitally 0.x, logging with bodies): {apitally.mix:+.1f} µs over bare")
        print()
    print(f"Total run time: {total:.0f} s")
    return ok


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--framework", nargs="+", choices=list(FRAMEWORKS), default=list(FRAMEWORKS), help="frameworks (default: all)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds per framework (every round runs one block per variant); default per framework",
    )
    parser.add_argument(
        "--block",
        type=int,
        help="requests per variant per round (the statuses in turn; rounded to a multiple of their number); "
        "default per framework",
    )
    parser.add_argument("--warmup", type=int, help="warm-up requests per variant; default per framework")
    parser.add_argument("--seed", type=int, default=1, help="seed of the variant order shuffle")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[
            "floor",
            "tallyhub",
            "otel-instrumentation",
            "fastapi-builtin",
            "tallyhub-log",
            "tallyhub-log-bodies",
            "apitally-log",
        ],
        help="variants",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=PROCESSES,
        help=f"processes per framework, one after another, each with its share of the rounds and its own "
        f"PYTHONHASHSEED (1, 2, ...); 1: in this process, as it is seeded (default {PROCESSES})",
    )
    parser.add_argument("--worker", metavar="FILE", help=argparse.SUPPRESS)  # one process's share, as JSON
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress on stderr")
    parser.add_argument("--allow-dirty", action="store_true", help="run on uncommitted client code (marked DIRTY)")
    args = parser.parse_args(argv)
    if (args.block is not None and args.block <= 0) or (args.rounds is not None and args.rounds <= 0):
        parser.error("--block and --rounds must be positive")
    if args.processes <= 0:
        parser.error("--processes must be positive")
    if args.worker:
        return run_worker(args)
    commit = require_clean_tree(args.allow_dirty)

    # Flask and Django log every 500 with its traceback (and Django every 4xx): to stderr that would
    # dominate the run and flood the terminal. The logging calls still happen; they return early.
    logging.disable(logging.CRITICAL)

    started = time.perf_counter()
    print(f"Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"Machine: {machine()}")
    print(f"Versions: {versions(VERSIONED)}")
    print(f"tallyhub instrumentation sources: sha256 {source_digest()} (instrumentation/**/*.py), commit {commit}")
    print(f"Seed {args.seed}; command: python benchmarks/overhead.py {' '.join(argv or sys.argv[1:])}".rstrip())
    if args.processes > 1:
        print(
            f"Processes: {args.processes} per framework, one after another, with PYTHONHASHSEED 1 to "
            f"{args.processes}, each with its share of the rounds after its own warm-up; an overhead is the median "
            "over the processes of each one's difference of medians (the median and p99 columns pool their samples)"
        )
    for var in ("OTEL_SEMCONV_STABILITY_OPT_IN", "OTEL_PYTHON_EXCLUDED_URLS", "OTEL_SDK_DISABLED"):
        if os.environ.get(var):
            print(f"Environment: {var}={os.environ[var]}")
    results: dict[str, tuple[Bench, dict[str, Summary]]] = {}
    for name in args.framework:
        plan = FRAMEWORKS[name]
        if args.progress:
            print(f"{name} ...", file=sys.stderr)
        if args.processes > 1:
            bench = run_processes(name, args)
        else:
            bench = plan.build()
            warmup = plan.warmup if args.warmup is None else args.warmup
            run_bench(bench, args, args.rounds or plan.rounds, args.block or plan.block, warmup)
        results[name] = (bench, report(bench, args))
        sys.stdout.flush()
        for v in bench.variants:  # keep the memory of the next framework's run low
            v.samples.clear()
            v.round_medians.clear()
    report_summary(results, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
