"""Every metric the request and error tables do not take → rows of the generic `metrics` table.
Pure functions: no I/O, no clock.

One row per data point, whatever its kind (gauge, sum, histogram, exponential histogram,
summary), with its attributes as a map. Cumulative sums and histograms are stored as deltas
(through the same ``DeltaState`` as the request metrics), so that any row can be summed over time;
gauges and summaries (which have no delta form) are stored as sent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from tallyhub.collector_processor.convert.cumulative import Cumulative, DeltaState
from tallyhub.collector_processor.convert.errors import is_error_metric
from tallyhub.collector_processor.convert.http_points import is_http_metric
from tallyhub.collector_processor.convert.points import metric_points

KINDS = {"gauge": 1, "sum": 2, "histogram": 3, "exponential_histogram": 4, "summary": 5}
MAX_NAME = 255
MAX_ATTRIBUTES = 128
"""Attributes kept per point (the first ones, in the order sent); values cut to ``MAX_VALUE``."""
MAX_VALUE = 4096
_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


def is_generic(metric: Metric) -> bool:
    return metric.WhichOneof("data") in KINDS and not is_http_metric(metric) and not is_error_metric(metric)


@dataclass
class MetricRow:
    time: dt.datetime
    start_time: dt.datetime
    app: str
    env: str
    service: str
    instance: str
    name: str
    unit: str
    kind: str
    monotonic: int
    attributes: dict[str, str]
    value: float = 0.0
    count: int = 0
    sum: float = 0.0
    min: float = 0.0
    max: float = 0.0
    bounds: list[float] = field(default_factory=list)
    bucket_counts: list[int] = field(default_factory=list)
    scale: int = 0
    zero_count: int = 0
    positive_offset: int = 0
    positive_counts: list[int] = field(default_factory=list)
    negative_offset: int = 0
    negative_counts: list[int] = field(default_factory=list)

    def values(self) -> list[Any]:
        return list(self.__dict__.values())


def generic_rows(request: ExportMetricsServiceRequest, app: str, deltas: DeltaState | None = None) -> list[MetricRow]:
    if deltas is None:
        deltas = DeltaState(started_ns=0)
    rows = []
    for source, metric, point, attrs in metric_points(request, is_generic):
        kind = metric.WhichOneof("data") or ""  # metric_points yields only metrics with data
        data = getattr(metric, kind)
        row = MetricRow(
            _time(point.time_unix_nano),
            _time(min(point.start_time_unix_nano, point.time_unix_nano)),
            app,
            *source,
            metric.name[:MAX_NAME],
            metric.unit[:MAX_NAME],
            kind,
            int(getattr(data, "is_monotonic", False)),
            {str(k)[:MAX_NAME]: str(v)[:MAX_VALUE] for k, v in list(attrs.items())[:MAX_ATTRIBUTES]},
        )
        if kind in ("gauge", "sum"):
            row.value = point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)
        else:
            row.count, row.sum = int(point.count), point.sum
            if kind != "summary":  # summaries have no min and max
                row.min = point.min if point.HasField("min") else 0.0
                row.max = point.max if point.HasField("max") else 0.0
        if kind == "histogram":
            row.bounds, row.bucket_counts = list(point.explicit_bounds), list(point.bucket_counts)
        elif kind == "exponential_histogram":
            row.scale, row.zero_count = point.scale, int(point.zero_count)
            row.positive_offset, row.positive_counts = point.positive.offset, list(point.positive.bucket_counts)
            row.negative_offset, row.negative_counts = point.negative.offset, list(point.negative.bucket_counts)
        elif kind == "summary":
            row.bounds = [q.quantile for q in point.quantile_values]
            row.bucket_counts = []
            row.value = point.quantile_values[-1].value if point.quantile_values else 0.0
        cumulative = (
            kind in ("sum", "histogram", "exponential_histogram") and data.aggregation_temporality == _CUMULATIVE
        )
        key = (app, *source, metric.name, tuple(sorted(attrs.items())))
        if cumulative and not _to_delta(row, deltas, key, point):
            continue
        rows.append(row)
    return rows


def _to_delta(row: MetricRow, deltas: DeltaState, key: tuple[Any, ...], point: Any) -> bool:
    """Make a cumulative row a delta in place; False if it adds nothing."""
    if row.kind == "sum":
        full = Cumulative(point.start_time_unix_nano, point.time_unix_nano, row.value)
    else:
        full = Cumulative(point.start_time_unix_nano, point.time_unix_nano, row.count, row.sum, _bucket_items(row))
    delta = deltas.delta(key, full)
    if delta is None:
        return False
    row.start_time = _time(delta.start_ns)
    if row.kind == "sum":
        row.value = delta.count
        return True
    if delta is not full:  # min and max are the whole series': unknown for the delta
        row.min = row.max = 0.0
    row.count, row.sum = int(delta.count), delta.total
    counts = dict(delta.buckets)
    if row.kind == "histogram":
        row.bucket_counts = [counts.get(i, 0) for i in range(len(row.bucket_counts))]
    else:
        row.zero_count = counts.get("z", 0)
        row.positive_counts = [counts.get(("p", row.positive_offset + i), 0) for i in range(len(row.positive_counts))]
        row.negative_counts = [counts.get(("n", row.negative_offset + i), 0) for i in range(len(row.negative_counts))]
    return bool(delta.count)


def _bucket_items(row: MetricRow) -> tuple[tuple[Any, int], ...]:
    if row.kind == "histogram":
        return tuple((i, n) for i, n in enumerate(row.bucket_counts) if n)
    items: list[tuple[Any, int]] = [("z", row.zero_count)] if row.zero_count else []
    items += [(("p", row.positive_offset + i), n) for i, n in enumerate(row.positive_counts) if n]
    items += [(("n", row.negative_offset + i), n) for i, n in enumerate(row.negative_counts) if n]
    return tuple(items)


def _time(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC)
