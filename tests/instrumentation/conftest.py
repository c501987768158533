from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)

from tallyhub.instrumentation import TallyhubClient
from tallyhub.instrumentation.aggregator import DURATION


class CapturingExporter(MetricExporter):
    """An OpenTelemetry metric exporter that keeps what it is given, in memory."""

    def __init__(self) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self.batches: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


class CapturingLogExporter(LogRecordExporter):
    """An OpenTelemetry log exporter that keeps the records it is given (the start-up event)."""

    def __init__(self) -> None:
        self.records: list[ReadableLogRecord] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.records.extend(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def startup_document(self) -> dict[str, Any]:
        (record,) = self.records
        return json.loads(record.log_record.body)


def capturing_client(**config: Any) -> TallyhubClient:
    """A real client whose exporters keep what they are given, in memory (no hub): read them
    as ``client.metrics_out`` and ``client.logs_out``."""
    config.setdefault("export_interval", 3600)
    metrics_out, logs_out = CapturingExporter(), CapturingLogExporter()
    client = TallyhubClient(exporter=metrics_out, log_exporter=logs_out, **config)
    client.metrics_out, client.logs_out = metrics_out, logs_out  # type: ignore[attr-defined]
    return client


def request_counts(*batches: MetricsData | None) -> Counter:
    """{(method, route, status): requests} over collections; asserts they are delta histograms."""
    counts: Counter = Counter()
    for data in batches:
        if data is not None:
            _add_counts(counts, data)
    return counts


def _add_counts(counts: Counter, data: MetricsData) -> None:
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                assert metric.data.aggregation_temporality is AggregationTemporality.DELTA
                if metric.name == DURATION:
                    for p in metric.data.data_points:
                        a = p.attributes
                        counts[a["http.request.method"], a["http.route"], a["http.response.status_code"]] += p.count
    return counts


def error_counts(name: str, *batches: MetricsData | None) -> Counter:
    """{attributes as a sorted tuple of items: count} of the error metric ``name``
    (``tallyhub.validation_errors`` or ``tallyhub.server_errors``) over collections."""
    counts: Counter = Counter()
    for data in batches:
        for rm in data.resource_metrics if data is not None else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        assert metric.data.is_monotonic
                        assert metric.data.aggregation_temporality is AggregationTemporality.DELTA
                        for p in metric.data.data_points:
                            counts[tuple(sorted(p.attributes.items()))] += p.value
    return counts
