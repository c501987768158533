"""One process's tallyhub client: configuration, aggregates and the export loop."""

from __future__ import annotations

import logging
import os
import re
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.re import parse_env_headers

from tallyhub import __version__
from tallyhub.instrumentation.aggregator import RequestAggregator, ValidationErrors
from tallyhub.instrumentation.consumers import Consumer
from tallyhub.instrumentation.delivery import DEFAULT_RETRY_WINDOW_S, DISK_POLL_S, Delivery
from tallyhub.instrumentation.export_loop import ExportLoop
from tallyhub.instrumentation.request_log import RequestLog, RequestLoggingConfig, logging_config
from tallyhub.instrumentation.server_errors import ServerError, describe_exception
from tallyhub.instrumentation.spool import DEFAULT_DISK_BYTES, DEFAULT_MEMORY_BYTES, DiskSpool, MemorySpool, Spool
from tallyhub.instrumentation.startup import StartupReporter
from tallyhub.instrumentation.transport import ExporterTransport, SpoolTransport, Transport
from tallyhub.wire import APP_KEY_HEADER

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricExporter

logger = logging.getLogger("tallyhub")

DEFAULT_ENDPOINT = "http://127.0.0.1:4317"
DEFAULT_INTERVAL_S = 60.0
DEFAULT_TIMEOUT_S = 10.0
"""One attempt at sending a batch (``OTEL_METRIC_EXPORT_TIMEOUT``, ms, overrides it)."""


class TallyhubClient:
    """Everything the middleware needs; configured from arguments, then OpenTelemetry's variables.

    - ``endpoint``: the hub's OTLP gRPC address, else ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` /
      ``OTEL_EXPORTER_OTLP_ENDPOINT``, else ``http://127.0.0.1:4317``.
    - ``app_key``: sent as the ``x-tallyhub-app-key`` header; without it the headers come from
      ``OTEL_EXPORTER_OTLP_HEADERS`` (e.g. ``x-tallyhub-app-key=thk_…``).
    - ``service_name``, ``env``, ``app_version``: resource attributes ``service.name``,
      ``deployment.environment.name`` and ``service.version``; ``OTEL_SERVICE_NAME`` and
      ``OTEL_RESOURCE_ATTRIBUTES`` apply.
    - ``export_interval``: seconds, else ``OTEL_METRIC_EXPORT_INTERVAL`` (ms), else 60.

    - ``excluded_urls``: comma-separated regular expressions; a request whose path matches one is
      not measured (health checks, say). Else ``OTEL_PYTHON_EXCLUDED_URLS``, as OpenTelemetry's
      instrumentations read it.
    - ``excluded_methods``: methods not measured, e.g. ``["OPTIONS"]`` (CORS preflights); else
      ``TALLYHUB_EXCLUDED_METHODS`` (comma-separated).

    - ``identify_consumer``: called with the framework's request object after each request for
      which no handler called ``set_consumer``; returns a ``Consumer``, an identifier or None.

    - ``retry_window``: seconds a batch the hub did not acknowledge is retried, else
      ``TALLYHUB_RETRY_WINDOW``, else 3600.
    - ``spool_dir``: keep unacknowledged batches in this directory (shared by the app's worker
      processes; they survive restarts), else ``TALLYHUB_SPOOL_DIR``, else in memory.
    - ``spool_max_bytes``: the spool's cap, else ``TALLYHUB_SPOOL_MAX_BYTES``, else 16 MiB in
      memory or 128 MiB on disk; the oldest batches are dropped beyond it.

    - ``request_logging``: True or a ``RequestLoggingConfig`` logs every request (masked; see
      ``request_log``), else ``TALLYHUB_REQUEST_LOGGING=1``; off by default.

    ``exporter`` and ``log_exporter`` replace the delivery to the hub by OpenTelemetry exporters,
    called as they are, without the spool (tests, other destinations).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        app_key: str | None = None,
        service_name: str | None = None,
        env: str | None = None,
        app_version: str | None = None,
        export_interval: float | None = None,
        excluded_urls: str | None = None,
        excluded_methods: Iterable[str] | None = None,
        identify_consumer: Callable[[Any], Any] | None = None,
        retry_window: float | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int | None = None,
        exporter: MetricExporter | None = None,
        log_exporter: LogRecordExporter | None = None,
        request_logging: bool | RequestLoggingConfig | None = None,
    ) -> None:
        self._attributes: dict[str, str] = {}
        if service_name:
            self._attributes["service.name"] = service_name
        if env:
            self._attributes["deployment.environment.name"] = env
        if app_version:
            self._attributes["service.version"] = app_version
        resource = self._new_resource()
        self.identify_consumer = identify_consumer
        self.excluded = _exclusions(
            excluded_urls or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS"),
            excluded_methods if excluded_methods is not None else os.environ.get("TALLYHUB_EXCLUDED_METHODS", ""),
        )
        scope = InstrumentationScope("tallyhub", __version__)
        self.aggregator = RequestAggregator(resource, scope)
        if export_interval is None:
            export_interval = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_INTERVAL_S * 1000)) / 1000
        timeout_s = float(os.environ.get("OTEL_METRIC_EXPORT_TIMEOUT", DEFAULT_TIMEOUT_S * 1000)) / 1000
        headers = {APP_KEY_HEADER: app_key} if app_key else otlp_headers()
        self.endpoint = otlp_endpoint(endpoint, "METRICS")
        transport: Transport
        if exporter is not None or log_exporter is not None:
            # Exporters are made in the process that uses them: a gRPC channel must not cross a fork.
            transport = ExporterTransport(
                (lambda: exporter)
                if exporter is not None
                else lambda: _otlp_exporter("metrics", self.endpoint, headers),
                (lambda: log_exporter)
                if log_exporter is not None
                else lambda: _otlp_exporter("logs", self.endpoint, headers),
            )
        else:
            spool_dir = spool_dir or os.environ.get("TALLYHUB_SPOOL_DIR") or None
            max_bytes = spool_max_bytes or int(os.environ.get("TALLYHUB_SPOOL_MAX_BYTES", 0)) or None
            spool: Spool = (
                DiskSpool(os.fspath(spool_dir), max_bytes or DEFAULT_DISK_BYTES)
                if spool_dir
                else MemorySpool(max_bytes or DEFAULT_MEMORY_BYTES)
            )
            window = retry_window or float(os.environ.get("TALLYHUB_RETRY_WINDOW", DEFAULT_RETRY_WINDOW_S))
            self.delivery = Delivery(
                spool,
                lambda: _grpc_sender(self.endpoint, headers, timeout_s),
                window,
                poll_s=DISK_POLL_S if spool_dir else None,
            )
            transport = SpoolTransport(self.delivery)
        self.startup = StartupReporter(transport, resource, scope)
        config = logging_config(request_logging, os.environ)
        self.request_log = RequestLog(config, resource, scope) if config is not None else None
        """None when request logging is off: the middlewares then skip it with one check."""
        self.loop = ExportLoop(self.aggregator, transport, export_interval, self.request_log)
        _CLIENTS.add(self)

    def _new_resource(self) -> Resource:
        """The resource, with a new ``service.instance.id``: one per process."""
        return Resource.create({"service.instance.id": str(uuid.uuid4()), **self._attributes})

    def after_fork(self) -> None:
        """Every worker of a pre-forking server is an instance of its own, with empty aggregates."""
        resource = self.aggregator.resource.merge(Resource({"service.instance.id": str(uuid.uuid4())}))
        self.aggregator.resource = resource
        self.startup.resource = resource
        if self.request_log is not None:
            self.request_log.resource = resource
        self.loop.after_fork()  # and the transport's
        self.startup.after_fork()

    def start(self, describe_app: Callable[[Resource], str] | None = None) -> None:
        """Start exporting in this process and send the start-up event, built in the background by
        ``describe_app(resource)`` (see ``introspection.startup_document``). Adapters call this at
        the app's start-up or first request; later calls in the same process do nothing. It
        never raises into the app: a failure is logged and the app goes on unmeasured."""
        try:
            self.loop.ensure_started()
            if describe_app is not None:
                resource = self.startup.resource
                self.startup.report(lambda: describe_app(resource))
        except Exception:
            logger.exception("tallyhub: starting the export failed; requests are not exported")

    def shutdown(self) -> None:
        """The last export (at most ~5 s) and a stop to the background threads: for the app's
        shutdown (ASGI lifespan, Litestar's hook); at interpreter exit it happens by itself."""
        self.startup.join(1.0)  # an event still being built goes out with the last attempt
        self.loop.shutdown()

    def record_request(
        self,
        method: str,
        route: str,
        status: int,
        start: float,
        end: float,
        request_size: int,
        response_size: int,
        consumer: Consumer | None = None,
        validation_errors: ValidationErrors | None = None,
        exception: BaseException | None = None,
    ) -> ServerError | None:
        """Count one finished request; ``start`` and ``end`` are its ``time.perf_counter()`` at
        arrival and when it finished; ``validation_errors``: those its response described;
        ``exception``: the unhandled one it failed with (recorded as a server error when the status
        is 5xx or none was sent).

        What a custom integration calls on its request path: memory only, no I/O. tallyhub's own
        middlewares (ASGI, WSGI, Django) queue the same tuple themselves, inline, without a call.
        Returns the server error it recorded (the request log sends its stack trace too).
        """
        if not self.loop.running:  # the first request in this process (or this forked worker)
            self.loop.ensure_started()
        server_error = None
        if exception is not None and status >= 500 and isinstance(exception, Exception):
            server_error = describe_exception(exception)
        # The minute is the one in which the request finished: the export that carries it
        # covers that moment, so the hub files it in the minute it happened.
        aggregator = self.aggregator
        aggregator.record(
            method, route, status, end - start, request_size, response_size, end + aggregator.wall_offset, consumer,
            validation_errors, server_error,
        )  # fmt: skip
        return server_error


def _grpc_sender(endpoint: str, headers: dict[str, str], timeout_s: float) -> Any:
    """The sender, imported on the delivery thread when first needed: gRPC and protobuf cost an app
    ~100 ms of start-up and ~10 MB if imported with the client."""
    from tallyhub.instrumentation.sender import GrpcSender

    return GrpcSender(endpoint, headers, timeout_s)


def _otlp_exporter(signal: str, endpoint: str, headers: dict[str, str]) -> Any:
    """OpenTelemetry's OTLP gRPC exporter of ``signal``, imported when first used (see ``_grpc_sender``)."""
    if signal == "metrics":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint, headers=headers)
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    return OTLPLogExporter(endpoint, headers=headers)


def otlp_headers() -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_METRICS_HEADERS`` or ``OTEL_EXPORTER_OTLP_HEADERS`` (``k=v,k2=v2``)."""
    value = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_HEADERS") or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", "")
    return dict(parse_env_headers(value, liberal=True))


def otlp_endpoint(configured: str | None, signal: str) -> str:
    """The hub's OTLP gRPC address for a signal, from the argument or OpenTelemetry's variables."""
    return (
        configured
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or DEFAULT_ENDPOINT
    )


def _exclusions(patterns: str | None, methods: Iterable[str] | str) -> Callable[[str, str], bool] | None:
    """``excluded(method, path)``, or None when nothing is excluded (the request path then
    skips the call). Patterns are searched (``re.search``) in the path, as OpenTelemetry does."""
    parts = [p.strip() for p in (patterns or "").split(",") if p.strip()]
    search = re.compile("|".join(f"(?:{p})" for p in parts)).search if parts else None
    if isinstance(methods, str):
        methods = methods.split(",")
    skipped = frozenset(m.strip().upper() for m in methods if m.strip())
    if search is None and not skipped:
        return None
    return lambda method, path: method in skipped or (search is not None and search(path) is not None)


_CLIENTS: weakref.WeakSet[TallyhubClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client.after_fork()


if hasattr(os, "register_at_fork"):  # one hook for all clients, which it does not keep alive
    os.register_at_fork(after_in_child=_after_fork_in_child)
