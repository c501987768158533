"""Walking the data points of an OTLP metrics export: what every row converter needs. Pure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

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
                    yield source, metric, point, refused


def minute_of(point: Any) -> dt.datetime:
    """The minute a point belongs to: the one in which its interval ends (tallyhub's client cuts
    its intervals at minute boundaries, so its points lie within one minute)."""
    return dt.datetime.fromtimestamp(max(point.time_unix_nano - 1, 0) // _NS_PER_MINUTE * 60, dt.UTC)


def as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
