"""Per-request overhead of TallyhubMiddleware over a bare FastAPI app, next to the alternatives.

Run: ``python benchmarks/overhead.py`` (``--help`` for the options; the default run takes about
50 s on a 2-core AMD EPYC VM).

Every variant is its own FastAPI app with the same routes, called directly through ASGI: no
network, no server, no TestClient. The driver builds the scope dict, hands the app a ``receive``
that returns the request body and a ``send`` that discards, and times each request with
``perf_counter_ns``. The requests cycle through four outcomes: 200 (``GET /items/{item_id}``),
201 (``POST /items`` with a JSON body), 422 (``GET /items/abc``, a validation error) and 500 (the
handler raises; Starlette's ``ServerErrorMiddleware`` sends the 500 and re-raises, as it does
under a real server, so the driver catches the exception).

Variants run interleaved: each round runs a block of requests on every variant, in a shuffled
order, so that drift on the machine (other processes, frequency changes) hits all of them alike.
Reported per variant and status: median and p99 of the per-request time, and the overhead over
``bare`` as the difference of the medians; the spread column is the 25-75 % range of the same
difference computed round by round, a measure of how stable the overhead estimate is.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from fastapi import FastAPI
from opentelemetry import _logs, metrics, trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExporter, MetricExportResult
from opentelemetry.trace import NoOpTracerProvider
from pydantic import BaseModel

from tallyhub.instrumentation import TallyhubClient, TallyhubMiddleware
from tallyhub.instrumentation.aggregator import DURATION

Scope = dict[str, Any]
Message = dict[str, Any]

# --------------------------------------------------------------------------------------------
# The application: the same routes in every variant.


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


def add_routes(app: FastAPI) -> FastAPI:
    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, Any]:
        return {"item_id": item_id, "name": "widget", "price": 9.5}

    @app.post("/items", status_code=201)
    async def create_item(item: Item) -> dict[str, Any]:
        return {"item_id": 1, **item.model_dump()}

    @app.get("/boom")
    async def boom() -> dict[str, Any]:
        raise RuntimeError("boom")

    return app


# --------------------------------------------------------------------------------------------
# The floor: the least a metrics middleware can do.


class FloorMiddleware:
    """Reads ``perf_counter`` twice and bumps a dict keyed by (method, route template, status)."""

    def __init__(self, app: Any, counts: dict[tuple[str, str | None, int], list[float]]) -> None:
        self.app = app
        self.counts = counts

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
            key = (scope["method"], getattr(scope.get("route"), "path", None), status)
            entry = self.counts.get(key)
            if entry is None:
                self.counts[key] = [1, duration]
            else:
                entry[0] += 1
                entry[1] += duration


class CountingExporter(MetricExporter):
    """Tallyhub's exporter in the benchmark: keeps nothing, never touches the network."""

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


# --------------------------------------------------------------------------------------------
# The variants.


@dataclass
class Variant:
    name: str
    description: str
    app: FastAPI
    recorded: Callable[[], Counter[tuple[str | None, int]]]  # (route, status) -> count, as the variant saw it
    cleanup: Callable[[], None] = lambda: None
    native_telemetry: bool = False
    sent: int = 0  # requests sent to the app, warm-up included
    samples: dict[str, list[float]] = field(default_factory=dict)  # kind -> µs
    round_medians: dict[str, list[float]] = field(default_factory=dict)  # kind -> per-round median µs


def otel_recorded(reader: InMemoryMetricReader, names: tuple[str, ...]) -> Callable[[], Counter]:
    """Counts per (route, status) of the duration histogram: the first of ``names`` the reader has."""

    def recorded() -> Counter[tuple[str | None, int]]:
        found: dict[str, Counter[tuple[str | None, int]]] = {}
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
                        # the instrumentation's default (pre-stable) conventions put the template in http.target
                        route = attrs.get("http.route", attrs.get("http.target"))
                        out[(route, int(status) if status is not None else -1)] += point.count
        return next((found[name] for name in names if name in found), Counter())

    return recorded


def make_variants() -> list[Variant]:
    variants = []

    variants.append(
        Variant(
            "bare",
            "plain FastAPI app",
            add_routes(FastAPI()),
            recorded=lambda: Counter(),
        )
    )

    floor_counts: dict[tuple[str, str | None, int], list[float]] = {}
    floor_app = add_routes(FastAPI())
    floor_app.add_middleware(FloorMiddleware, counts=floor_counts)
    variants.append(
        Variant(
            "floor",
            "minimal pure-ASGI middleware: 2x perf_counter + dict bump",
            floor_app,
            recorded=lambda: Counter({(route, status): n for (_m, route, status), (n, _d) in floor_counts.items()}),
        )
    )

    exporter = CountingExporter()
    client = TallyhubClient(exporter=exporter, export_interval=3600)
    tally_app = add_routes(FastAPI())
    tally_app.add_middleware(TallyhubMiddleware, client=client)

    def tally_recorded() -> Counter[tuple[str | None, int]]:
        out: Counter[tuple[str | None, int]] = Counter()
        data = client.aggregator.collect()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == DURATION:
                        for point in metric.data.data_points:
                            out[(point.attributes["http.route"], point.attributes["http.response.status_code"])] += (
                                point.count
                            )
        return out

    variants.append(
        Variant(
            "tallyhub",
            "TallyhubMiddleware (in-memory aggregates, export thread idle)",
            tally_app,
            recorded=tally_recorded,
            cleanup=client.loop.shutdown,
        )
    )

    otel_reader = InMemoryMetricReader()
    otel_app = add_routes(FastAPI())
    FastAPIInstrumentor.instrument_app(
        otel_app,
        meter_provider=MeterProvider(metric_readers=[otel_reader]),
        tracer_provider=NoOpTracerProvider(),
    )
    variants.append(
        Variant(
            "otel-instrumentation",
            "opentelemetry-instrumentation-fastapi, metrics to an InMemoryMetricReader, NoOp tracer",
            otel_app,
            recorded=otel_recorded(otel_reader, ("http.server.request.duration", "http.server.duration")),
            cleanup=lambda: FastAPIInstrumentor.uninstrument_app(otel_app),
        )
    )

    native_reader = InMemoryMetricReader()
    native_app = add_routes(
        FastAPI(
            telemetry={
                "meter_provider": MeterProvider(metric_readers=[native_reader]),
                "tracing": False,
                "logs": False,
            }
        )
    )
    variants.append(
        Variant(
            "fastapi-builtin",
            "FastAPI's built-in OpenTelemetry metrics (tracing and logs off), InMemoryMetricReader",
            native_app,
            recorded=otel_recorded(native_reader, ("http.server.request.duration",)),
            native_telemetry=True,
        )
    )
    return variants


# --------------------------------------------------------------------------------------------
# The requests.

HEADERS = [
    (b"host", b"api.example.com"),
    (b"user-agent", b"benchmark/1.0"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate"),
]
POST_BODY = b'{"name": "widget", "price": 9.5, "tags": ["a", "b"]}'


def scope_for(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 51000),
        "server": ("127.0.0.1", 8000),
    }


def receiver(body: bytes) -> Callable[[], Any]:
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> Message:
        return message

    return receive


async def discard(message: Message) -> None:
    pass


@dataclass(frozen=True)
class RequestKind:
    name: str  # the expected status, as a string
    route: str
    scope: Scope
    receive: Callable[[], Any]


KINDS = [
    RequestKind("200", "/items/{item_id}", scope_for("GET", "/items/42", HEADERS), receiver(b"")),
    RequestKind(
        "201",
        "/items",
        scope_for(
            "POST",
            "/items",
            [*HEADERS, (b"content-type", b"application/json"), (b"content-length", str(len(POST_BODY)).encode())],
        ),
        receiver(POST_BODY),
    ),
    RequestKind("422", "/items/{item_id}", scope_for("GET", "/items/abc", HEADERS), receiver(b"")),
    RequestKind("500", "/boom", scope_for("GET", "/boom", HEADERS), receiver(b"")),
]


async def call(app: FastAPI, kind: RequestKind, send: Callable[[Message], Any] = discard) -> None:
    try:
        await app(dict(kind.scope), kind.receive, send)
    except RuntimeError as exc:
        if kind.name != "500":
            raise
        assert str(exc) == "boom", exc


async def check_statuses(variant: Variant) -> None:
    """Each kind of request gets the status it is named after, in every variant."""
    for kind in KINDS:
        statuses = []

        async def recording_send(message: Message, statuses: list[int] = statuses) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await call(variant.app, kind, recording_send)
        variant.sent += 1
        assert statuses == [int(kind.name)], f"{variant.name}: {kind.name} request answered {statuses}"


async def run_block(variant: Variant, count: int) -> None:
    """``count`` requests, the kinds in turn, each timed on its own."""
    app = variant.app
    clock = time.perf_counter_ns
    kinds = [(kind, kind.scope, kind.receive, variant.samples.setdefault(kind.name, [])) for kind in KINDS]
    block: dict[str, list[float]] = {kind.name: [] for kind in KINDS}
    n = len(kinds)
    raised = 0
    for i in range(count):
        kind, scope, receive, _ = kinds[i % n]
        scope = dict(scope)
        start = clock()
        try:
            await app(scope, receive, discard)
        except RuntimeError:  # the 500s, re-raised by ServerErrorMiddleware after it answered
            raised += 1
        block[kind.name].append((clock() - start) / 1000)
    assert raised == count // n, f"{variant.name}: {raised} exceptions in {count} requests"
    variant.sent += count
    for kind, _scope, _receive, samples in kinds:
        samples.extend(block[kind.name])
        variant.round_medians.setdefault(kind.name, []).append(statistics.median(block[kind.name]))


# --------------------------------------------------------------------------------------------
# Checks that every variant measured what it claims to.


def _unconfigured_globals() -> list[str]:
    """Names of the OpenTelemetry global providers that someone has set (there must be none)."""
    deferred = {"ProxyTracerProvider", "_ProxyMeterProvider", "ProxyLoggerProvider"}
    providers = {
        "tracer": trace.get_tracer_provider(),
        "meter": metrics.get_meter_provider(),
        "logger": _logs.get_logger_provider(),
    }
    return [name for name, p in providers.items() if type(p).__name__ not in deferred]


def check_setup(variants: list[Variant]) -> None:
    configured = _unconfigured_globals()
    assert not configured, f"global OpenTelemetry providers are set ({configured}): FastAPI telemetry would be on"
    for v in variants:
        enabled = v.app._native_telemetry.enabled()
        assert enabled == v.native_telemetry, f"{v.name}: FastAPI built-in telemetry enabled={enabled}"


def check_recorded(variant: Variant) -> None:
    expected: Counter[tuple[str | None, int]] = Counter()
    per_kind = variant.sent // len(KINDS)
    assert per_kind * len(KINDS) == variant.sent
    for kind in KINDS:
        expected[(kind.route, int(kind.name))] = per_kind
    got = variant.recorded()
    if variant.name == "bare":
        return
    assert got == expected, f"{variant.name} recorded {dict(got)}, expected {dict(expected)}"


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


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> str:
    names = [
        "tallyhub",
        "fastapi",
        "starlette",
        "pydantic",
        "opentelemetry-api",
        "opentelemetry-sdk",
        "opentelemetry-instrumentation-fastapi",
    ]
    parts = [f"Python {platform.python_version()} ({platform.python_implementation()})"]
    for name in names:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def machine() -> str:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu_model()}, {os.cpu_count()} logical cores ({affinity} usable), {system}"


def report(variants: list[Variant], args: argparse.Namespace, elapsed: float) -> float:
    """Print the table; return tallyhub's overhead on the mix (µs)."""
    bare = variants[0]
    kinds = [k.name for k in KINDS]
    bare_median = {k: statistics.median(bare.samples[k]) for k in kinds}
    print()
    print(f"Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"Machine: {machine()}")
    print(f"Versions: {versions()}")
    per_variant = args.block * args.rounds
    print(
        f"Run: {args.rounds} rounds x {args.block} requests per variant ({per_variant} timed per variant, "
        f"{per_variant // len(KINDS)} per status), {args.warmup} warm-up requests per variant, seed {args.seed}, "
        f"{elapsed:.0f} s"
    )
    for var in ("OTEL_SEMCONV_STABILITY_OPT_IN", "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "OTEL_SDK_DISABLED"):
        if os.environ.get(var):
            print(f"Environment: {var}={os.environ[var]}")
    print()
    print("| variant | status | median µs | p99 µs | overhead µs (median - bare) | per-round overhead 25-75 % |")
    print("|---|---|---:|---:|---:|---:|")
    mix_overhead: dict[str, float] = {}
    for v in variants:
        overheads = []
        for k in kinds:
            s = sorted(v.samples[k])
            med = percentile(s, 0.5)
            p99 = percentile(s, 0.99)
            overhead = med - bare_median[k]
            overheads.append(overhead)
            diffs = sorted(a - b for a, b in zip(v.round_medians[k], bare.round_medians[k], strict=True))
            spread = f"{percentile(diffs, 0.25):+.1f} .. {percentile(diffs, 0.75):+.1f}"
            if v is bare:
                print(f"| {v.name} | {k} | {med:.1f} | {p99:.1f} | - | - |")
            else:
                print(f"| {v.name} | {k} | {med:.1f} | {p99:.1f} | {overhead:+.1f} | {spread} |")
        all_sorted = sorted(x for k in kinds for x in v.samples[k])
        mix_overhead[v.name] = statistics.fmean(overheads)
        over = "-" if v is bare else f"{mix_overhead[v.name]:+.1f}"
        print(
            f"| **{v.name}** | **mix** | {percentile(all_sorted, 0.5):.1f} | {percentile(all_sorted, 0.99):.1f} "
            f"| **{over}** | |"
        )
    print()
    print("mix: all four statuses pooled for median/p99; its overhead is the mean of the four per-status overheads.")
    return mix_overhead.get("tallyhub", float("nan"))


# --------------------------------------------------------------------------------------------


async def benchmark(args: argparse.Namespace) -> tuple[list[Variant], float]:
    variants = make_variants()
    if args.only:
        keep = {"bare", *args.only}
        variants = [v for v in variants if v.name in keep]
    check_setup(variants)
    for v in variants:
        await check_statuses(v)
        if args.progress:
            print(f"  {v.name}: {v.description}", file=sys.stderr)

    # Warm-up, interleaved too, in chunks.
    remaining = args.warmup
    while remaining > 0:
        chunk = min(200, remaining)
        for v in variants:
            await run_block(v, chunk)
        remaining -= chunk
    for v in variants:
        v.samples.clear()
        v.round_medians.clear()

    gc.collect()
    gc.freeze()  # setup objects stay out of the collections that the requests trigger
    rng = random.Random(args.seed)
    started = time.perf_counter()
    order = list(variants)
    for r in range(args.rounds):
        rng.shuffle(order)
        for v in order:
            await run_block(v, args.block)
        if args.progress and (r + 1) % max(1, args.rounds // 10) == 0:
            print(f"  round {r + 1}/{args.rounds}, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    elapsed = time.perf_counter() - started
    gc.unfreeze()

    check_setup(variants)
    for v in variants:
        check_recorded(v)
    return variants, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="rounds; every round runs one block per variant")
    parser.add_argument(
        "--block", type=int, default=400, help="requests per variant per round (a multiple of 4: the statuses in turn)"
    )
    parser.add_argument("--warmup", type=int, default=2000, help="warm-up requests per variant")
    parser.add_argument("--seed", type=int, default=1, help="seed of the variant order shuffle")
    parser.add_argument(
        "--only", nargs="+", choices=["floor", "tallyhub", "otel-instrumentation", "fastapi-builtin"], help="variants"
    )
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.block % len(KINDS) or args.block <= 0 or args.rounds <= 0:
        parser.error("--block must be a positive multiple of 4 and --rounds positive")
    args.warmup = max(len(KINDS), args.warmup - args.warmup % len(KINDS))
    variants, elapsed = asyncio.run(benchmark(args))
    try:
        overhead = report(variants, args, elapsed)
    finally:
        for v in variants:
            v.cleanup()
    if overhead == overhead:  # not NaN
        verdict = "within" if overhead <= 10 else "ABOVE"
        print(f"tallyhub median overhead on the mix: {overhead:+.1f} µs, {verdict} the 10 µs target.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
