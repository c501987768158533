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


def metric_points(
    request: ExportMetricsServiceRequest, stored: Callable[[Metric], bool]
) -> Iterator[tuple[Source, Metric, Any, dict[str, Any]]]:
    """(source, metric, data point, the point's attributes) of every point of the metrics
    that ``stored`` accepts."""
    for resource_metrics in request.resource_metrics:
        resource = attribute_map(resource_metrics.resource.attributes)
        source = Source(
            str(resource.get("deployment.environment.name", resource.get("deployment.environment", ""))),
            str(resource.get("service.name", "")),
            str(resource.get("service.instance.id", "")),
        )
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if stored(metric):
                    for point in getattr(metric, metric.WhichOneof("data")).data_points:
                        yield source, metric, point, attribute_map(point.attributes)


def minute_of(point: Any) -> dt.datetime:
    """The minute a delta point belongs to: the one its interval starts in (the client cuts
    its intervals at minute boundaries)."""
    return dt.datetime.fromtimestamp(point.start_time_unix_nano // _NS_PER_MINUTE * 60, dt.UTC)


def as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
