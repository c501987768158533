"""Validation and server errors: client aggregates → OTLP → rows → ClickHouse (embedded chDB)."""

from __future__ import annotations

import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.collector_processor.convert.errors import MAX_STACKTRACE, error_rows
from tallyhub.collector_processor.convert.requests import rejected_points
from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.receiver import KIND_METRICS
from tallyhub.collector_processor.store import Processor
from tallyhub.instrumentation.aggregator import RequestAggregator
from tallyhub.instrumentation.consumers import Consumer
from tallyhub.instrumentation.server_errors import ServerError
from tallyhub.instrumentation.validation_errors import ValidationError
from tests.collector_processor.test_store import FlakyInsert

T0 = int(time.time()) // 60 * 60 - 3600  # a whole minute an hour ago (inside the tables' TTL)
MISSING = ValidationError("body.name", "Field required", "missing")
NOT_INT = ValidationError("query.limit", "Input should be a valid integer", "int_parsing")
KEY_ERROR = ServerError(
    "KeyError", "'sku'", "Traceback (most recent call last):\n  File \"shop.py\"\nKeyError: 'sku'\n", "f1"
)


def aggregator(max_server_errors: int = 100) -> RequestAggregator:
    return RequestAggregator(
        Resource.create({"deployment.environment.name": "prod", "service.instance.id": "i-1"}),
        InstrumentationScope("tallyhub"),
        lambda: T0 * 10**9,
        max_server_errors=max_server_errors,
    )


def export(agg: RequestAggregator) -> ExportMetricsServiceRequest:
    return encode_metrics(agg.collect())


def test_error_rows_carry_exact_counts_and_fields() -> None:
    agg = aggregator()
    acme = Consumer("acme", "Acme")
    agg.record("POST", "/items", 422, 0.01, 10, 90, T0 + 1, acme, [MISSING, NOT_INT])
    agg.record("POST", "/items", 422, 0.01, 10, 90, T0 + 2, acme, [MISSING])
    agg.record("POST", "/items", 422, 0.01, 10, 90, T0 + 61, None, [MISSING])  # the next minute
    agg.record("GET", "/items/{id}", 500, 0.02, 0, 21, T0 + 3, None, None, KEY_ERROR)
    agg.record("GET", "/items/{id}", 500, 0.02, 0, 21, T0 + 4, None, None, KEY_ERROR)
    request = export(agg)
    assert rejected_points(request) == (0, "")
    tables = error_rows(request, "shop")
    validation = sorted([*row.values()[5:], row.minute.timestamp() - T0] for row in tables["validation_errors"])
    assert validation == [
        ["", "POST", "/items", "body.name", "Field required", "missing", 1, 60],
        ["acme", "POST", "/items", "body.name", "Field required", "missing", 2, 0],
        ["acme", "POST", "/items", "query.limit", "Input should be a valid integer", "int_parsing", 1, 0],
    ]
    [server] = tables["server_errors"]
    assert server.values()[1:] == [
        "shop", "prod", "unknown_service:python", "i-1", "", "GET", "/items/{id}",
        "KeyError", "'sku'", "f1", KEY_ERROR.stacktrace, 2,
    ]  # fmt: skip


def test_overflow_and_limits_whatever_the_client_sent() -> None:
    agg = aggregator(max_server_errors=2)
    for i in range(5):
        error = ServerError(f"E{i}", "boom", "x" * (MAX_STACKTRACE + 10) + "END", f"f{i}")
        agg.record("GET", "/a", 500, 0.01, 0, 0, T0 + 1, None, None, error)
    rows = error_rows(export(agg), "shop")["server_errors"]
    by_type = {row.fields[0]: (row.route, row.count, len(row.stacktrace)) for row in rows}
    assert by_type == {"E0": ("/a", 1, MAX_STACKTRACE), "E1": ("/a", 1, MAX_STACKTRACE), "": ("(overflow)", 3, 0)}
    assert all(row.stacktrace.endswith("END") for row in rows if row.stacktrace)


def test_stored_in_clickhouse_once_even_when_delivered_twice(ch, tmp_path: Path) -> None:
    agg = aggregator()
    for i in range(7):
        agg.record("POST", "/items", 422, 0.01, 10, 90, T0 + i, None, [MISSING])
    for i in range(3):
        agg.record("GET", "/boom", 500, 0.01, 0, 21, T0 + i, Consumer("acme"), None, KEY_ERROR)
    payload = export(agg).SerializeToString()
    queue = DurableQueue(tmp_path / "q")
    processor = Processor(queue, FlakyInsert(ch), tmp_path / "rejected")
    queue.append(KIND_METRICS, "shop", payload, 0)
    batch = queue.next_batch(10, 1 << 30, wait_s=0)
    token = queue.begin(batch)
    processor._store(processor._convert(batch), token)  # stored, then the hub dies before the ack
    assert processor.process(batch)  # replayed after the restart: the same batch, the same token
    assert ch.query("SELECT location, message, type, sum(count) FROM validation_errors GROUP BY ALL").result_rows == [
        ("body.name", "Field required", "missing", 7)
    ]
    assert ch.query(
        "SELECT consumer, route, exception_type, message, fingerprint, stacktrace, sum(count) FROM server_errors "
        "GROUP BY ALL"
    ).result_rows == [("acme", "/boom", "KeyError", "'sku'", "f1", KEY_ERROR.stacktrace, 3)]
    assert ch.query("SELECT sum(requests) FROM requests").result_rows == [(10,)]
