"""One process's tallyhub client: configuration, aggregates and the export loop."""

from __future__ import annotations

import os
import uuid

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub import __version__
from tallyhub.instrumentation.aggregator import RequestAggregator
from tallyhub.instrumentation.export_loop import ExportLoop

DEFAULT_ENDPOINT = "http://127.0.0.1:4317"
APP_KEY_HEADER = "x-tallyhub-app-key"
DEFAULT_INTERVAL_S = 60.0


class TallyhubClient:
    """Everything the middleware needs; configured from arguments, then OpenTelemetry's variables.

    - ``endpoint``: the hub's OTLP gRPC address, else ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` /
      ``OTEL_EXPORTER_OTLP_ENDPOINT``, else ``http://127.0.0.1:4317``.
    - ``app_key``: sent as the ``x-tallyhub-app-key`` header; without it the headers come from
      ``OTEL_EXPORTER_OTLP_HEADERS`` (e.g. ``x-tallyhub-app-key=thk_…``).
    - ``service_name``, ``env``: resource attributes ``service.name`` and
      ``deployment.environment.name``; ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` apply.
    - ``export_interval``: seconds, else ``OTEL_METRIC_EXPORT_INTERVAL`` (ms), else 60.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        app_key: str | None = None,
        service_name: str | None = None,
        env: str | None = None,
        export_interval: float | None = None,
        exporter: MetricExporter | None = None,
    ) -> None:
        attributes: dict[str, str] = {"service.instance.id": str(uuid.uuid4())}
        if service_name:
            attributes["service.name"] = service_name
        if env:
            attributes["deployment.environment.name"] = env
        resource = Resource.create(attributes)
        self.aggregator = RequestAggregator(resource, InstrumentationScope("tallyhub", __version__))
        if export_interval is None:
            export_interval = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_INTERVAL_S * 1000)) / 1000
        timeout_s = float(os.environ.get("OTEL_METRIC_EXPORT_TIMEOUT", 30_000)) / 1000
        if exporter is None:
            endpoint = (
                endpoint
                or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or DEFAULT_ENDPOINT
            )
            headers = {APP_KEY_HEADER: app_key} if app_key else None
            # The OTLP exporter picks TLS from the scheme (http:// is plaintext, https:// is TLS)
            # and OTEL_EXPORTER_OTLP_INSECURE.
            # One export, retries included, lasts at most the export timeout.
            exporter = OTLPMetricExporter(endpoint=endpoint, headers=headers, timeout=timeout_s)
        self.loop = ExportLoop(self.aggregator, exporter, export_interval, timeout_s)

    def record_request(
        self,
        method: str,
        route: str,
        status: int,
        duration_s: float,
        request_size: int,
        response_size: int,
        started: float,
    ) -> None:
        """Count one finished request; ``started`` is its ``time.perf_counter()`` at arrival.

        What every framework adapter calls on the request path: memory only, no I/O.
        """
        if not self.loop.running:  # the first request in this process (or this forked worker)
            self.loop.ensure_started()
        aggregator = self.aggregator
        aggregator.record(
            method, route, status, duration_s, request_size, response_size, started + aggregator.wall_offset
        )
