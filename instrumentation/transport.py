"""How collected data leaves the process: through the spool to the hub (the default), or to
exporters given to the client (tests, other destinations), which are called directly."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from tallyhub.instrumentation.delivery import Delivery
from tallyhub.instrumentation.spool import LOGS, METRICS

if TYPE_CHECKING:  # the SDK's exporter and data classes: imported by the app only when it exports
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.sdk._logs.export import LogRecordExporter
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData

logger = logging.getLogger("tallyhub")


class Transport(Protocol):
    def send_metrics(self, data: MetricsData) -> None:
        """Hand over one collection; never waits on the network."""

    def send_logs(self, records: Sequence[ReadableLogRecord]) -> None: ...

    def ensure_started(self) -> None: ...

    def after_fork(self) -> None: ...

    def shutdown(self, timeout_s: float) -> None:
        """One last bounded attempt at what is still undelivered."""


class SpoolTransport:
    """Encodes each collection to OTLP once, and leaves it to ``Delivery``: spooled until the
    hub acknowledged it, retried with backoff for up to the retry window."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    def send_metrics(self, data: MetricsData) -> None:
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics  # protobuf: on first use

        request = encode_metrics(data)
        points = sum(
            len(getattr(metric, metric.WhichOneof("data")).data_points)
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        )
        self.delivery.submit(METRICS, request.SerializeToString(), points)

    def send_logs(self, records: Sequence[ReadableLogRecord]) -> None:
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

        self.delivery.submit(LOGS, encode_logs(records).SerializeToString(), len(records))

    def ensure_started(self) -> None:
        self.delivery.ensure_started()

    def after_fork(self) -> None:
        self.delivery.after_fork()

    def shutdown(self, timeout_s: float) -> None:
        self.delivery.shutdown(timeout_s)


class ExporterTransport:
    """OpenTelemetry exporters, called as they are (their own retries, no spool). Each process
    makes its own, on first use."""

    def __init__(
        self, make_exporter: Callable[[], MetricExporter], make_log_exporter: Callable[[], LogRecordExporter]
    ) -> None:
        self._make_exporter = make_exporter
        self._make_log_exporter = make_log_exporter
        self._exporter: MetricExporter | None = None
        self._log_exporter: LogRecordExporter | None = None

    def send_metrics(self, data: MetricsData) -> None:
        if self._exporter is None:
            self._exporter = self._make_exporter()
        from opentelemetry.sdk.metrics.export import MetricExportResult

        if self._exporter.export(data) is not MetricExportResult.SUCCESS:
            logger.warning("tallyhub: the metric exporter did not take a batch of request metrics")

    def send_logs(self, records: Sequence[ReadableLogRecord]) -> None:
        if self._log_exporter is None:
            self._log_exporter = self._make_log_exporter()
        self._log_exporter.export(records)

    def ensure_started(self) -> None:
        pass

    def after_fork(self) -> None:
        self._exporter = self._log_exporter = None

    def shutdown(self, timeout_s: float) -> None:
        for exporter in (self._exporter, self._log_exporter):
            if exporter is not None:
                exporter.shutdown()
