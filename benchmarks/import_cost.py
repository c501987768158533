"""What adding the client costs an app at start-up: import time and resident memory of tallyhub's
adapter and client, next to OpenTelemetry's own instrumentation of the same framework with its SDK
and OTLP exporter (the stock alternative), each beyond the framework's own import.

Run: ``python benchmarks/import_cost.py`` (about a minute); ``--runs N`` fresh interpreters per
cell (the median is reported). Each run is a new interpreter that imports the framework's
application modules first, then measures ``perf_counter`` and RSS (``/proc/self/statm``) around
the instrumentation's imports and the creation of its client (tallyhub: ``TallyhubClient``;
OpenTelemetry: a ``MeterProvider`` with a ``PeriodicExportingMetricReader`` over the OTLP gRPC
exporter, as ``opentelemetry-instrument`` sets up). Nothing is exported: the endpoint is unused.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time

from machine import machine, progress, require_clean_tree, source_digest, versions

FRAMEWORKS = {
    # name: (the app's own imports, tallyhub's adapter, OpenTelemetry's instrumentation)
    "flask": ("flask", "tallyhub.instrumentation.flask", "opentelemetry.instrumentation.flask"),
    "django": (
        "django.http, django.core.handlers.wsgi",
        "tallyhub.instrumentation.django",
        "opentelemetry.instrumentation.django",
    ),
    "fastapi": ("fastapi", "tallyhub.instrumentation.starlette", "opentelemetry.instrumentation.fastapi"),
    "starlette": (
        "starlette.applications, starlette.routing",
        "tallyhub.instrumentation.starlette",
        "opentelemetry.instrumentation.starlette",
    ),
    "litestar": ("litestar", "tallyhub.instrumentation.litestar", None),
}

CLIENT = {
    "tallyhub": "from tallyhub.instrumentation import TallyhubClient\n"
    "client = TallyhubClient(endpoint='http://127.0.0.1:9')\n",
    "otel": "from opentelemetry.sdk.metrics import MeterProvider\n"
    "from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader\n"
    "from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter\n"
    "reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint='http://127.0.0.1:9'))\n"
    "provider = MeterProvider(metric_readers=[reader])\n",
}

SCRIPT = """
import time, json
import {app}
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
base, started = rss(), time.perf_counter()
import {instrumentation}
{client}
print(json.dumps({{"ms": (time.perf_counter() - started) * 1000, "mib": (rss() - base) / 2**20}}))
"""


def measure(app: str, instrumentation: str, client: str, runs: int) -> tuple[float, float]:
    """Median import + client time (ms) and RSS growth (MiB) over ``runs`` fresh interpreters."""
    times, memory = [], []
    for _ in range(runs):
        code = SCRIPT.format(app=app, instrumentation=instrumentation, client=client)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        found = json.loads(out.splitlines()[-1])
        times.append(found["ms"])
        memory.append(found["mib"])
    return statistics.median(times), statistics.median(memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per cell (median reported)")
    parser.add_argument("--allow-dirty", action="store_true", help="run on uncommitted client code (marked DIRTY)")
    args = parser.parse_args()
    commit = require_clean_tree(args.allow_dirty)
    print(f"machine: {machine()}")
    print(f"versions: {versions(['flask', 'django', 'fastapi', 'starlette', 'litestar', 'opentelemetry-sdk'])}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {commit}")
    print(f"client source digest: {source_digest()}, {args.runs} runs per cell (median)")
    print()
    print("| framework | tallyhub: import + client | RSS | OpenTelemetry instrumentation + SDK + OTLP exporter | RSS |")
    print("|---|---:|---:|---:|---:|")
    for name, (app, adapter, otel) in FRAMEWORKS.items():
        progress(name)
        ours = measure(app, adapter, CLIENT["tallyhub"], args.runs)
        installed = otel is not None and importlib.util.find_spec(otel) is not None
        stock = measure(app, otel, CLIENT["otel"], args.runs) if installed and otel else None
        theirs = (
            f"{stock[0]:.1f} ms | +{stock[1]:.1f} MiB"
            if stock
            else (f"- ({otel} not installed) | -" if otel else "- (OpenTelemetry has no Litestar instrumentation) | -")
        )
        print(f"| {name} | {ours[0]:.1f} ms | +{ours[1]:.1f} MiB | {theirs} |")


if __name__ == "__main__":
    main()
