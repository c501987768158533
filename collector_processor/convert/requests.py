"""OTLP metrics → `requests` and `consumers` rows. Pure functions: no I/O, no clock.

The HTTP server metrics (duration, request and response body sizes; see ``http_points`` for
what is accepted) become one row per minute and series; the app is the one the hub verified
from the key, never an attribute the client sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Metric,
)

from tallyhub.collector_processor.convert.cumulative import DeltaState
from tallyhub.collector_processor.convert.http_points import HttpPoint, http_points
from tallyhub.collector_processor.convert.points import metric_points, minute_of, refused_points
from tallyhub.wire import CONSUMER_GROUP, CONSUMER_ID, CONSUMER_NAME, DURATION, OVERFLOW

MAX_CONSUMER_ID = 128  # the client's limits, enforced again: a foreign client may send anything
MAX_CONSUMER_NAME = 64

OVERFLOW_ROUTE = "(overflow)"
"""The route of requests a client counted in its overflow series (``otel.metric.overflow=true``,
over its cardinality limit): their method and status are not known, their number is."""

_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


@dataclass
class RequestRow:
    """One minute of one series, filled metric by metric."""

    minute: dt.datetime
    app: str
    env: str
    service: str
    instance: str
    consumer: str
    method: str
    route: str
    status: int
    requests: int = 0
    duration_sum: float = 0.0
    duration_min: float = 0.0
    duration_max: float = 0.0
    duration_buckets: dict[int, int] = field(default_factory=dict)
    request_size_sum: float = 0.0
    request_size_buckets: dict[int, int] = field(default_factory=dict)
    response_size_sum: float = 0.0
    response_size_buckets: dict[int, int] = field(default_factory=dict)

    def values(self) -> list[Any]:
        return list(self.__dict__.values())


def _durations_with_consumers(metric: Metric) -> bool:
    """The metric that carries consumers: tallyhub's client's durations (delta, exponential)."""
    return (
        metric.name == DURATION
        and metric.WhichOneof("data") == "exponential_histogram"
        and metric.exponential_histogram.aggregation_temporality == _DELTA
    )


def rejected_points(request: ExportMetricsServiceRequest) -> tuple[int, str]:
    """How many data points of an export the hub refuses, and why (for partial success): every
    kind of metric is stored, within the limits of ``otlp_points``."""
    refused, reasons = refused_points(request)
    if not refused:
        return 0, ""
    return refused, f"{refused} data points not stored: {reasons}"


def request_rows(request: ExportMetricsServiceRequest, app: str, deltas: DeltaState | None = None) -> list[RequestRow]:
    """The `requests` rows of an export, for the app the hub authenticated: the HTTP server
    metrics of any client (``http_points``), cumulative ones made deltas through ``deltas``."""
    rows: dict[tuple[Any, ...], RequestRow] = {}
    for point in http_points(request, app, deltas):
        attrs = point.attributes
        if attrs.get(OVERFLOW) is True:  # the client's cardinality limit was hit
            method, route, status = "", OVERFLOW_ROUTE, 0
        else:
            method, route, status = point.method, point.route, point.status
        consumer = str(attrs.get(CONSUMER_ID, ""))[:MAX_CONSUMER_ID]
        env, service, instance = point.source
        key = (point.minute, env, service, instance, method, route, status, consumer)
        row = rows.get(key)
        if row is None:
            row = rows[key] = RequestRow(
                minute=point.minute,
                app=app,
                env=env,
                service=service,
                instance=instance,
                consumer=consumer,
                method=method,
                route=route,
                status=status,
            )
        _add(row, point)
    return list(rows.values())


def _add(row: RequestRow, point: HttpPoint) -> None:
    """Merge one data point into its row (several points of a series may share a minute)."""
    name = point.field
    buckets = getattr(row, f"{name}_buckets")
    for index, n in point.buckets.items():
        buckets[index] = buckets.get(index, 0) + n
    setattr(row, f"{name}_sum", getattr(row, f"{name}_sum") + point.total)
    if name == "duration":
        first = row.requests == 0
        row.duration_min = point.low if first else min(row.duration_min, point.low)
        row.duration_max = point.high if first else max(row.duration_max, point.high)
        row.requests += point.count


@dataclass
class ConsumerRow:
    """A consumer seen in an export: the minutes of its first and last requests in it, and the
    name and group it was sent with last (the table keeps the latest across exports)."""

    app: str
    env: str
    identifier: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    latest: tuple[dt.datetime, str, str]

    def values(self) -> list[Any]:
        return list(self.__dict__.values())


def consumer_rows(request: ExportMetricsServiceRequest, app: str) -> list[ConsumerRow]:
    """One row per (env, consumer) of the export's HTTP request metrics."""
    return merge_consumers(app, _consumers_seen(request))


def _consumers_seen(request: ExportMetricsServiceRequest) -> Iterator[ConsumerSeen]:
    for (env, _, _), _, point, attrs in metric_points(request, _durations_with_consumers):
        identifier = str(attrs.get(CONSUMER_ID, ""))[:MAX_CONSUMER_ID]
        if identifier:
            name = str(attrs.get(CONSUMER_NAME, ""))[:MAX_CONSUMER_NAME]
            group = str(attrs.get(CONSUMER_GROUP, ""))[:MAX_CONSUMER_NAME]
            yield env, identifier, minute_of(point), name, group


ConsumerSeen = tuple[str, str, dt.datetime, str, str]
"""A consumer on one data point: env, identifier, minute, name, group."""


def merge_consumers(app: str, seen: Iterable[ConsumerSeen]) -> list[ConsumerRow]:
    """One row per (env, consumer): first and last minute, and the latest name and group."""
    rows: dict[tuple[str, str], ConsumerRow] = {}
    for env, identifier, minute, name, group in seen:
        row = rows.get((env, identifier))
        if row is None:
            rows[env, identifier] = ConsumerRow(app, env, identifier, minute, minute, (minute, name, group))
            continue
        row.first_seen = min(row.first_seen, minute)
        row.last_seen = max(row.last_seen, minute)
        row.latest = max(row.latest, (minute, name, group))
    return list(rows.values())
