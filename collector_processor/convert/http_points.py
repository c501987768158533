"""The HTTP server metrics of any OpenTelemetry client, as delta points at the storage scale. Pure.

Accepted, whatever SDK sent them:

- names: the current semantic conventions (``http.server.request.duration`` in seconds,
  ``http.server.request.body.size``, ``http.server.response.body.size``) and the older ones
  many SDKs still emit (``http.server.duration``, in the unit it declares — milliseconds by
  default —, ``http.server.request.size``, ``http.server.response.size``);
- attributes: ``http.request.method`` / ``http.method``, ``http.route`` (else ``http.target``
  without its query string), ``http.response.status_code`` / ``http.status_code``;
- exponential histograms at any scale, and explicit-bucket histograms: each bucket's count goes
  to the storage bucket of its representative value (the geometric middle of its bounds; half
  the upper bound for a bucket from 0; the point's max, else twice the lower bound, for the
  last), so percentiles are as precise as the client's buckets allow;
- delta or cumulative temporality (cumulative series become deltas through ``DeltaState``).

A point counts in the minute in which it ends (tallyhub's client cuts its points at minutes).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from tallyhub.bucket_mapping import bucket_index, lower_bound
from tallyhub.collector_processor.convert.cumulative import Cumulative, DeltaState
from tallyhub.collector_processor.convert.points import STORAGE_SCALE, Source, as_int, metric_points, minute_of
from tallyhub.wire import DURATION, METHOD, REQUEST_SIZE, RESPONSE_SIZE, ROUTE, STATUS

FIELDS = {
    DURATION: "duration",
    "http.server.duration": "duration",
    REQUEST_SIZE: "request_size",
    "http.server.request.size": "request_size",
    RESPONSE_SIZE: "response_size",
    "http.server.response.size": "response_size",
}
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_HISTOGRAMS = ("exponential_histogram", "histogram")


def is_http_metric(metric: Metric) -> bool:
    kind = metric.WhichOneof("data")
    return (
        metric.name in FIELDS
        and kind in _HISTOGRAMS
        and getattr(metric, kind).aggregation_temporality in (_DELTA, _CUMULATIVE)
        and (FIELDS[metric.name] != "duration" or metric.unit in _SECONDS or not metric.unit)
    )


@dataclass
class HttpPoint:
    field: str
    """``duration``, ``request_size`` or ``response_size``."""
    minute: dt.datetime
    source: Source
    attributes: dict[str, Any]
    count: int
    total: float
    low: float
    high: float
    buckets: dict[int, int]

    @property
    def method(self) -> str:
        return str(self.attributes.get(METHOD, self.attributes.get("http.method", "")))

    @property
    def route(self) -> str:
        route = self.attributes.get(ROUTE)
        if route is None:
            route = str(self.attributes.get("http.target", "")).partition("?")[0]
        return str(route)

    @property
    def status(self) -> int:
        a = self.attributes
        return as_int(a.get(STATUS, a.get("http.status_code", 0)))


def http_points(
    request: ExportMetricsServiceRequest, app: str, deltas: DeltaState | None = None
) -> Iterator[HttpPoint]:
    """The export's HTTP server points as deltas; cumulative ones through ``deltas`` (a fresh
    state that counts every first point in full if none is given)."""
    if deltas is None:
        deltas = DeltaState(started_ns=0)
    for source, metric, point, attrs in metric_points(request, is_http_metric):
        field = FIELDS[metric.name]
        factor = _SECONDS.get(metric.unit, 1.0) if field == "duration" else 1.0
        kind = metric.WhichOneof("data") or ""  # metric_points yields only metrics with data
        if kind == "exponential_histogram" and factor == 1.0:
            buckets = rescale_buckets(point.scale, point.positive.offset, point.positive.bucket_counts)
        elif kind == "exponential_histogram":
            buckets = _exponential_by_value(point, factor)
        elif len(point.bucket_counts) in (0, len(point.explicit_bounds) + 1):
            buckets = explicit_buckets(point.explicit_bounds, point.bucket_counts, factor, _max(point, factor))
        else:  # malformed (the specification wants one count more than bounds): no buckets to trust
            continue
        count, total = int(point.count), point.sum * factor
        low, high = _min(point, factor), _max(point, factor)
        end_ns = point.time_unix_nano
        if getattr(metric, kind).aggregation_temporality == _CUMULATIVE:
            key = (app, *source, metric.name, tuple(sorted(attrs.items())))
            full = Cumulative(point.start_time_unix_nano, end_ns, count, total, tuple(sorted(buckets.items())))
            delta = deltas.delta(key, full)
            if delta is None or not delta.count:
                continue
            if delta is not full:  # min and max are the whole series': estimate them from the buckets
                low, high = _bucket_range(dict(delta.buckets))
            count, total, buckets = int(delta.count), delta.total, dict(delta.buckets)
        if not count:
            continue
        yield HttpPoint(field, minute_of(point), source, attrs, count, total, low or 0.0, high or 0.0, buckets)


def rescale_buckets(scale: int, offset: int, counts: Sequence[int], to_scale: int = STORAGE_SCALE) -> dict[int, int]:
    """Bucket counts at ``scale`` as a sparse dict at ``to_scale``.

    A finer bucket lies inside exactly one coarser bucket (``index >> shift``). A coarser bucket
    than the storage scale spans several storage buckets; its count goes to the one at its
    geometric middle, so the stored resolution is never worse than what the client sent.
    """
    out: dict[int, int] = {}
    shift = scale - to_scale
    for i, n in enumerate(counts):
        if not n:
            continue
        index = offset + i
        target = index >> shift if shift >= 0 else (index << -shift) + (1 << (-shift - 1))
        out[target] = out.get(target, 0) + n
    return out


def explicit_buckets(
    bounds: Sequence[float], counts: Sequence[int], factor: float = 1.0, maximum: float | None = None
) -> dict[int, int]:
    """Explicit-bucket counts (bucket ``i`` holds ``(bounds[i-1], bounds[i]]``) as storage buckets,
    each count at its bucket's representative value (see the module's docstring); values ≤ 0 are
    left to the zero count (requests minus the bucket total)."""
    out: dict[int, int] = {}
    for i, n in enumerate(counts):
        if not n:
            continue
        lower = bounds[i - 1] * factor if i > 0 else -math.inf
        upper = bounds[i] * factor if i < len(bounds) else math.inf
        if upper <= 0:
            continue
        if math.isinf(upper):
            value = maximum if maximum is not None and maximum > lower else lower * 2
        elif lower <= 0:
            value = upper / 2
        else:
            value = math.sqrt(lower * upper)
        index = _storage_index(value)
        if index is not None:
            out[index] = out.get(index, 0) + n
    return out


def _storage_index(value: float) -> int | None:
    """The storage bucket of a positive finite value; None for anything else (NaN, 0, infinity:
    a client's nonsense stays out of the buckets)."""
    if not 0 < value < math.inf:
        return None
    return bucket_index(value, STORAGE_SCALE)


def _exponential_by_value(point: Any, factor: float) -> dict[int, int]:
    """Exponential buckets in another unit: each at its geometric middle, converted."""
    out: dict[int, int] = {}
    for i, n in enumerate(point.positive.bucket_counts):
        if n:
            index = point.positive.offset + i
            try:
                middle = math.sqrt(lower_bound(index, point.scale) * lower_bound(index + 1, point.scale)) * factor
            except OverflowError:  # a bucket beyond any float
                continue
            target = _storage_index(middle)
            if target is not None:
                out[target] = out.get(target, 0) + n
    return out


def _bucket_range(buckets: dict[int, int]) -> tuple[float, float]:
    if not buckets:
        return 0.0, 0.0
    return lower_bound(min(buckets), STORAGE_SCALE), lower_bound(max(buckets) + 1, STORAGE_SCALE)


def _min(point: Any, factor: float) -> float | None:
    return point.min * factor if point.HasField("min") else None


def _max(point: Any, factor: float) -> float | None:
    return point.max * factor if point.HasField("max") else None
