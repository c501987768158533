"""An OTLP metrics export → its rows per table, in one compiled pass where it can be.

The compiled pass (``_otlp``, convert/_otlp.c) turns the export's delta exponential HTTP server
histograms — what tallyhub's client sends, and what any OpenTelemetry SDK sends with delta
temporality — into `requests` rows, already encoded for the insert, and the consumers seen on
them; it hands the export's other metrics back as a smaller export for the Python converters.
Whatever it does not do exactly as the Python converters would (a point the hub refuses,
cumulative or explicit-bucket HTTP metrics, an attribute of an unusual type), it leaves whole to
them: the Python converters are the reference, and the fallback where the extension is not built.
"""

from __future__ import annotations

import datetime as dt
import logging
from types import ModuleType
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tallyhub.collector_processor.convert.cumulative import DeltaState
from tallyhub.collector_processor.convert.errors import error_rows
from tallyhub.collector_processor.convert.generic import generic_rows
from tallyhub.collector_processor.convert.http_points import FIELDS
from tallyhub.collector_processor.convert.points import (
    MAX_ATTRIBUTES,
    MAX_COUNT,
    MAX_POINTS,
    MAX_SCALE,
    MAX_TIME_NS,
    MIN_SCALE,
    STORAGE_SCALE,
)
from tallyhub.collector_processor.convert.requests import (
    MAX_CONSUMER_ID,
    MAX_CONSUMER_NAME,
    OVERFLOW_ROUTE,
    ConsumerRow,
    consumer_rows,
    merge_consumers,
    request_rows,
)
from tallyhub.storage.rowbinary import REQUEST_ENCODERS, Encoded, encode
from tallyhub.wire import (
    CONSUMER_GROUP,
    CONSUMER_ID,
    CONSUMER_NAME,
    DURATION,
    METHOD,
    OVERFLOW,
    ROUTE,
    STATUS,
)

logger = logging.getLogger("tallyhub.collector_processor.convert")


def _compiled_pass() -> ModuleType | None:
    """The compiled pass, configured; None where it is not built (no C compiler at install): the
    pure-Python converters then do it all."""
    try:
        import tallyhub.collector_processor.convert._otlp as module
    except ImportError:
        return None
    module.configure(
        metric_fields={name: ("duration", "request_size", "response_size").index(f) for name, f in FIELDS.items()},
        duration=DURATION,
        method=METHOD,
        old_method="http.method",
        route=ROUTE,
        target="http.target",
        status=STATUS,
        old_status="http.status_code",
        consumer_id=CONSUMER_ID,
        consumer_name=CONSUMER_NAME,
        consumer_group=CONSUMER_GROUP,
        overflow=OVERFLOW,
        env="deployment.environment.name",
        old_env="deployment.environment",
        service="service.name",
        instance="service.instance.id",
        checked_sum_prefix="tallyhub.",
        overflow_route=OVERFLOW_ROUTE,
        max_points=MAX_POINTS,
        max_attributes=MAX_ATTRIBUTES,
        max_time_ns=MAX_TIME_NS,
        max_count=MAX_COUNT,
        storage_scale=STORAGE_SCALE,
        min_scale=MIN_SCALE,
        max_scale=MAX_SCALE,
        stored_index_low=-(1023 << STORAGE_SCALE),
        stored_index_high=1023 << STORAGE_SCALE,
        max_consumer_id=MAX_CONSUMER_ID,
        max_consumer_name=MAX_CONSUMER_NAME,
    )
    return module


_otlp = _compiled_pass()

COMPILED = _otlp is not None
"""Whether the compiled pass is there (``tallyhub status`` says which converter runs)."""

Tables = dict[str, Any]
"""Table → its rows (objects with ``values()``), or an ``Encoded`` block for `requests`."""


def accepted_as_is(payload: bytes, compiled: bool = COMPILED) -> bool | None:
    """For the receiver, without decoding: whether an export is worth queuing (it has resources),
    when the compiled check is certain that protobuf parses it and that the hub refuses none of its
    points. None when it is not certain: then decode it, and ask ``rejected_points``."""
    checked = _otlp.scan(payload) if compiled and _otlp is not None else None
    return None if checked is None else checked[0] > 0


def metric_tables(payload: bytes, app: str, deltas: DeltaState, compiled: bool = COMPILED) -> Tables:
    """The rows of an export for every table, for the app the hub authenticated (raises
    ``DecodeError`` or ``ValueError`` for an export that cannot be converted)."""
    fast = _otlp.requests(payload, app) if compiled and _otlp is not None else None
    if fast is None:
        return python_tables(ExportMetricsServiceRequest.FromString(payload), app, deltas)
    block, rows, consumers, residual = fast
    tables: Tables = {"requests": Encoded(block, rows), "consumers": _consumers(app, consumers)}
    if residual is not None:
        rest = ExportMetricsServiceRequest.FromString(residual)
        tables.update(error_rows(rest, app))
        tables["metrics"] = generic_rows(rest, app, deltas)
    return tables


def python_tables(request: ExportMetricsServiceRequest, app: str, deltas: DeltaState) -> Tables:
    """The pure-Python conversion: the reference for the compiled pass."""
    return {
        "requests": encode((row.values() for row in request_rows(request, app, deltas)), REQUEST_ENCODERS),
        "consumers": consumer_rows(request, app),
        **error_rows(request, app),
        "metrics": generic_rows(request, app, deltas),
    }


def _consumers(app: str, seen: list[tuple[str, str, int, str, str]]) -> list[ConsumerRow]:
    """``otlp_rows.consumer_rows`` from the compiled pass's (env, identifier, minute, name, group)."""
    minutes: dict[int, dt.datetime] = {}
    for seconds in {item[2] for item in seen}:
        minutes[seconds] = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return merge_consumers(app, ((env, who, minutes[s], name, group) for env, who, s, name, group in seen))
