from __future__ import annotations

from collections import Counter

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)

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
