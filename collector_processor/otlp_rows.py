"""OTLP metrics → `requests` rows. Pure functions: no I/O, no clock.

The HTTP server metrics of the OpenTelemetry semantic conventions (duration, request and
response body sizes, as delta exponential histograms) become one row per minute and series;
the app is the one the hub verified from the key, never an attribute the client sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    Metric,
)

from tallyhub.collector_processor.otlp_errors import is_error_metric
from tallyhub.collector_processor.otlp_points import as_int, metric_points, minute_of

STORAGE_SCALE = 5
"""The exponential-histogram scale of the stored buckets: every client's buckets are brought to
this one scale, so rows merge with a plain sumMap across minutes, instances and rollups."""

DURATION = "http.server.request.duration"
REQUEST_SIZE = "http.server.request.body.size"
RESPONSE_SIZE = "http.server.response.body.size"
_FIELDS = {DURATION: "duration", REQUEST_SIZE: "request_size", RESPONSE_SIZE: "response_size"}

CONSUMER_ID = "tallyhub.consumer.id"
CONSUMER_NAME = "tallyhub.consumer.name"
CONSUMER_GROUP = "tallyhub.consumer.group"
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


def _supported(metric: Metric) -> bool:
    return (
        metric.name in _FIELDS
        and metric.WhichOneof("data") == "exponential_histogram"
        and metric.exponential_histogram.aggregation_temporality == _DELTA
    )


def rejected_points(request: ExportMetricsServiceRequest) -> tuple[int, str]:
    """How many data points of an export this hub cannot store yet, and why (for partial success)."""
    rejected = 0
    names = []
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if not (_supported(metric) or is_error_metric(metric)):
                    kind = metric.WhichOneof("data")
                    rejected += len(getattr(metric, kind).data_points) if kind else 0
                    names.append(metric.name)
    if not rejected:
        return 0, ""
    shown = ", ".join(sorted(set(names))[:5])
    return rejected, (
        f"{rejected} data points not stored ({shown}): this hub stores the HTTP server metrics "
        f"{', '.join(_FIELDS)} as delta exponential histograms, and tallyhub's error counts"
    )


def request_rows(request: ExportMetricsServiceRequest, app: str) -> list[RequestRow]:
    """The `requests` rows of an export, for the app the hub authenticated.

    Metrics that ``rejected_points`` counts are skipped (the client was told at receipt).
    """
    rows: dict[tuple[Any, ...], RequestRow] = {}
    for (env, service, instance), metric, point, attrs in metric_points(request, _supported):
        name = _FIELDS[metric.name]
        if attrs.get("otel.metric.overflow") is True:  # the client's cardinality limit was hit
            attrs = {"http.route": OVERFLOW_ROUTE}
        minute = minute_of(point)
        method = str(attrs.get("http.request.method", ""))
        route = str(attrs.get("http.route", ""))
        status = as_int(attrs.get("http.response.status_code", 0))
        consumer = str(attrs.get(CONSUMER_ID, ""))[:MAX_CONSUMER_ID]
        key = (minute, env, service, instance, method, route, status, consumer)
        row = rows.get(key)
        if row is None:
            row = rows[key] = RequestRow(
                minute=minute,
                app=app,
                env=env,
                service=service,
                instance=instance,
                consumer=consumer,
                method=method,
                route=route,
                status=status,
            )
        _add(row, name, point)
    return list(rows.values())


def _add(row: RequestRow, name: str, point: ExponentialHistogramDataPoint) -> None:
    """Merge one data point into its row (several points of a series may share a minute)."""
    buckets = getattr(row, f"{name}_buckets")
    for index, n in rescale_buckets(point.scale, point.positive.offset, point.positive.bucket_counts).items():
        buckets[index] = buckets.get(index, 0) + n
    setattr(row, f"{name}_sum", getattr(row, f"{name}_sum") + point.sum)
    if name == "duration" and point.count:
        first = row.requests == 0
        row.duration_min = point.min if first else min(row.duration_min, point.min)
        row.duration_max = point.max if first else max(row.duration_max, point.max)
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
    rows: dict[tuple[str, str], ConsumerRow] = {}
    for (env, _, _), metric, point, attrs in metric_points(request, _supported):
        if metric.name != DURATION:
            continue
        identifier = str(attrs.get(CONSUMER_ID, ""))[:MAX_CONSUMER_ID]
        if not identifier:
            continue
        minute = minute_of(point)
        name = str(attrs.get(CONSUMER_NAME, ""))[:MAX_CONSUMER_NAME]
        group = str(attrs.get(CONSUMER_GROUP, ""))[:MAX_CONSUMER_NAME]
        row = rows.get((env, identifier))
        if row is None:
            rows[env, identifier] = ConsumerRow(app, env, identifier, minute, minute, (minute, name, group))
            continue
        row.first_seen = min(row.first_seen, minute)
        row.last_seen = max(row.last_seen, minute)
        row.latest = max(row.latest, (minute, name, group))
    return list(rows.values())
