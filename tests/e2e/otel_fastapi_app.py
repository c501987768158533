"""A FastAPI app monitored the stock way: OpenTelemetry's own FastAPI instrumentation and SDK, with
its defaults (cumulative temporality, explicit buckets, the semantic conventions it emits by
default), exporting to the hub over OTLP gRPC or HTTP (TEST_OTLP_PROTOCOL), configured by OTEL_*."""

import os

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.trace import NoOpTracerProvider

if os.environ.get("TEST_OTLP_PROTOCOL") == "http":
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
else:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

provider = MeterProvider([PeriodicExportingMetricReader(OTLPMetricExporter(), export_interval_millis=500)])
app = FastAPI()


@app.get("/items/{item_id}")
def read_item(item_id: int) -> dict:
    return {"id": item_id}


@app.post("/items", status_code=201)
def create_item(item: dict) -> dict:
    return item


FastAPIInstrumentor.instrument_app(app, meter_provider=provider, tracer_provider=NoOpTracerProvider())
