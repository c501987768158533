"""Walking the data points of an OTLP metrics export: what every row converter needs. Pure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from tallyhub.wire import STATUS

_NS_PER_MINUTE = 60_000_000_000


class Source(NamedTuple):
    """Who sent a data point, from its resource: the environment, service and instance."""

    env: str
    service: str
    instance: str


def attribute_map(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    """OTLP attributes as a dict of plain Python values (arrays and maps as their text)."""
    result: dict[str, Any] = {}
    for kv in attributes:
        kind = kv.value.WhichOneof("value")
        if kind in ("string_value", "int_value", "bool_value", "double_value"):
            result[kv.key] = getattr(kv.value, kind)
        elif kind is not None:
            result[kv.key] = str(getattr(kv.value, kind))
    return result


MAX_POINTS = 50_000
"""Data points stored per export: the first ones, in the order sent; the rest are refused (partial success)."""
MAX_ATTRIBUTES = 128
"""Attributes per data point: a point with more is refused (partial success)."""
MAX_TIME_NS = 4_102_444_800 * 10**9
"""2100-01-01: a point dated later (or not dated at all) is refused (partial success)."""
MAX_COUNT = 2**48
"""The most a data point may count (its count, the total of its buckets; tallyhub's own counters'
values): 2.8e14, far beyond any API's requests in a point, and small enough that the 50 000 points
of an export add up within the UInt64 columns."""
STORAGE_SCALE = 5
"""The exponential-histogram scale of the stored buckets: every client's buckets are brought to
this one scale, so rows merge with a plain sumMap across minutes, instances and rollups."""
MIN_SCALE, MAX_SCALE = -10, 20
"""The scales the OpenTelemetry specification allows for exponential histograms."""
STATUS_ATTRIBUTES = (STATUS, "http.status_code")
_STORED_INDEXES = range(-(1023 << STORAGE_SCALE), 1023 << STORAGE_SCALE)
"""Storage bucket indexes of values between 2^-1023 and 2^1023: within Int32, and within floats
(so that a bucket's bounds can be computed)."""
_UINT16 = range(2**16)


def metric_points(
    request: ExportMetricsServiceRequest, stored: Callable[[Metric], bool]
) -> Iterator[tuple[Source, Metric, Any, dict[str, Any]]]:
    """(source, metric, data point, the point's attributes) of every point of the metrics
    that ``stored`` accepts, within the limits (``refused_points`` counts the others)."""
    for source, metric, point, refused in _all_points(request):
        if not refused and stored(metric):
            yield source, metric, point, attribute_map(point.attributes)


def refused_points(request: ExportMetricsServiceRequest) -> tuple[int, str]:
    """How many points of an export are beyond the limits, and why."""
    reasons: dict[str, int] = {}
    for _, _, _, refused in _all_points(request):
        if refused:
            reasons[refused] = reasons.get(refused, 0) + 1
    return sum(reasons.values()), "; ".join(f"{n} {reason}" for reason, n in reasons.items())


def _all_points(request: ExportMetricsServiceRequest) -> Iterator[tuple[Source, Metric, Any, str]]:
    seen = 0
    for resource_metrics in request.resource_metrics:
        resource = attribute_map(resource_metrics.resource.attributes)
        source = Source(
            str(resource.get("deployment.environment.name", resource.get("deployment.environment", ""))),
            str(resource.get("service.name", "")),
            str(resource.get("service.instance.id", "")),
        )
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                for point in getattr(metric, kind).data_points:
                    seen += 1
                    refused = ""
                    if seen > MAX_POINTS:
                        refused = f"points beyond the first {MAX_POINTS} of the export"
                    elif len(point.attributes) > MAX_ATTRIBUTES:
                        refused = f"points with more than {MAX_ATTRIBUTES} attributes"
                    elif not 0 < point.time_unix_nano <= MAX_TIME_NS:
                        refused = "points without a time, or dated after 2100"
                    else:
                        refused = out_of_range(metric, kind, point)
                    yield source, metric, point, refused


def out_of_range(metric: Metric, kind: str, point: Any) -> str:
    """Why a point holds a value that no column takes (the reason for partial success), or "".

    Checked at the receiver, before the export is acknowledged, so that a value ClickHouse would
    refuse never reaches the queue: one such point must not stop every app's inserts.
    """
    if kind in ("histogram", "exponential_histogram", "summary"):
        if point.count > MAX_COUNT:
            return f"histogram points counting more than {MAX_COUNT}"
        if kind != "summary" and sum(_bucket_counts(kind, point)) > MAX_COUNT:
            return f"histogram points whose buckets count more than {MAX_COUNT}"
        if kind == "exponential_histogram":
            if not MIN_SCALE <= point.scale <= MAX_SCALE:
                return f"exponential histogram points with a scale outside {MIN_SCALE}..{MAX_SCALE}"
            if not all(_storage_indexes_fit(point.scale, b.offset, len(b.bucket_counts)) for b in _sides(point)):
                return "exponential histogram points with buckets beyond 2^±1023"
    elif kind == "sum" and metric.name.startswith("tallyhub."):
        value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
        if not -MAX_COUNT <= value <= MAX_COUNT:  # also false for NaN
            return f"tallyhub counts that are not numbers within ±{MAX_COUNT}"
    for kv in point.attributes:
        if kv.key in STATUS_ATTRIBUTES:
            status = kv.value.WhichOneof("value")
            raw = getattr(kv.value, status) if status in ("int_value", "double_value", "string_value") else 0
            if as_int(raw) not in _UINT16:
                return "points with an HTTP status code outside 0..65535"
    return ""


def _sides(point: Any) -> tuple[Any, Any]:
    return point.positive, point.negative


def _bucket_counts(kind: str, point: Any) -> Iterator[int]:
    if kind == "histogram":
        yield from point.bucket_counts
        return
    yield point.zero_count
    yield from point.positive.bucket_counts
    yield from point.negative.bucket_counts


def _storage_indexes_fit(scale: int, offset: int, length: int) -> bool:
    """Whether buckets ``offset .. offset + length - 1`` at ``scale`` lie within ``_STORED_INDEXES``
    once brought to the storage scale."""
    if not length:
        return True
    shift = scale - STORAGE_SCALE
    ends = (offset, offset + length - 1)
    mapped = [i >> shift if shift >= 0 else i << -shift for i in ends]
    return mapped[0] in _STORED_INDEXES and mapped[1] + (1 << max(-shift, 0)) - 1 in _STORED_INDEXES


def minute_of(point: Any) -> dt.datetime:
    """The minute a point belongs to: the one in which its interval ends (tallyhub's client cuts
    its intervals at minute boundaries, so its points lie within one minute)."""
    return dt.datetime.fromtimestamp(max(point.time_unix_nano - 1, 0) // _NS_PER_MINUTE * 60, dt.UTC)


def as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # not a number, NaN, infinity
        return 0
