"""OTLP metrics → rows of `validation_errors` and `server_errors`. Pure functions: no I/O, no clock.

The client counts errors per minute as delta monotonic sums (``tallyhub.validation_errors``,
``tallyhub.server_errors``), one data point per distinct error, its fields in the attributes
(``tallyhub.validation_error.location``/``.message``/``.type``; the semantic conventions'
``exception.type``/``exception.message``/``exception.stacktrace`` and
``tallyhub.error.fingerprint``). Points of a minute with the same fields are added up; a point
from the client's overflow (``otel.metric.overflow=true``) is stored with the route
``(overflow)`` and empty fields. Text is cut to the limits below, whatever a client sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from tallyhub.collector_processor.convert.points import metric_points, minute_of
from tallyhub.wire import (
    CONSUMER_ID,
    ERROR_FINGERPRINT,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
    METHOD,
    OVERFLOW,
    ROUTE,
    SERVER_ERRORS,
    VALIDATION_ERRORS,
    VALIDATION_LOCATION,
    VALIDATION_MESSAGE,
    VALIDATION_TYPE,
)

OVERFLOW_ROUTE = "(overflow)"

# (attribute, limit in characters) of each table's error columns, in column order.
_COMMON = ((METHOD, 32), (ROUTE, 2048), (CONSUMER_ID, 128))
_FIELDS = {
    VALIDATION_ERRORS: (
        (VALIDATION_LOCATION, 256),
        (VALIDATION_MESSAGE, 512),
        (VALIDATION_TYPE, 128),
    ),
    SERVER_ERRORS: ((EXCEPTION_TYPE, 256), (EXCEPTION_MESSAGE, 2048), (ERROR_FINGERPRINT, 64)),
}
MAX_STACKTRACE = 65536
"""Characters of a stack trace that are stored: its end (the innermost frames), as the client keeps it."""

_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


def is_error_metric(metric: Metric) -> bool:
    return (
        metric.name in _FIELDS
        and metric.WhichOneof("data") == "sum"
        and metric.sum.aggregation_temporality == _DELTA
        and metric.sum.is_monotonic
    )


@dataclass
class ErrorRow:
    """One distinct error of one minute and instance, with its count."""

    table: str
    minute: Any
    app: str
    env: str
    service: str
    instance: str
    method: str
    route: str
    consumer: str
    fields: tuple[str, ...]
    count: int = 0
    stacktrace: str = ""

    def values(self) -> list[Any]:
        """The row in its table's column order (``storage.writer``)."""
        head = [self.minute, self.app, self.env, self.service, self.instance, self.consumer, self.method, self.route]
        if self.table == "server_errors":
            return [*head, *self.fields, self.stacktrace, self.count]
        return [*head, *self.fields, self.count]


_TABLES = {VALIDATION_ERRORS: "validation_errors", SERVER_ERRORS: "server_errors"}


def error_rows(request: ExportMetricsServiceRequest, app: str) -> dict[str, list[ErrorRow]]:
    """``{"validation_errors": rows, "server_errors": rows}`` of an export, for the app the hub
    authenticated."""
    rows: dict[tuple[Any, ...], ErrorRow] = {}
    for source, metric, point, attrs in metric_points(request, is_error_metric):
        count = point.as_int if point.WhichOneof("value") == "as_int" else int(point.as_double)
        if count <= 0:
            continue
        if attrs.get(OVERFLOW) is True:  # the client's cap on distinct errors was hit
            attrs = {ROUTE: OVERFLOW_ROUTE}
        common = tuple(str(attrs.get(name, ""))[:limit] for name, limit in _COMMON)
        fields = tuple(str(attrs.get(name, ""))[:limit] for name, limit in _FIELDS[metric.name])
        table = _TABLES[metric.name]
        minute = minute_of(point)
        key = (table, minute, *source, *common, *fields)
        row = rows.get(key)
        if row is None:
            method, route, consumer = common
            row = rows[key] = ErrorRow(table, minute, app, *source, method, route, consumer, fields)
        row.count += count
        if table == "server_errors" and not row.stacktrace:
            trace = str(attrs.get(EXCEPTION_STACKTRACE, ""))
            row.stacktrace = trace[len(trace) - MAX_STACKTRACE :] if len(trace) > MAX_STACKTRACE else trace
    tables: dict[str, list[ErrorRow]] = {"validation_errors": [], "server_errors": []}
    for row in rows.values():
        tables[row.table].append(row)
    return tables
