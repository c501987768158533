"""The aggregates as OTLP: delta, per minute, semantic-convention names, and what the hub makes of them."""

from __future__ import annotations

import logging
import threading

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.collector_processor.convert.requests import request_rows
from tallyhub.instrumentation import aggregator as aggregator_module
from tallyhub.instrumentation.aggregator import RequestAggregator
from tallyhub.instrumentation.consumers import Consumer
from tallyhub.instrumentation.server_errors import ServerError
from tallyhub.instrumentation.validation_errors import ValidationError
from tallyhub.wire import (
    CONSUMER_ID,
    DURATION,
    ERROR_FINGERPRINT,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
    METHOD,
    REQUEST_SIZE,
    RESPONSE_SIZE,
    ROUTE,
    SERVER_ERRORS,
    VALIDATION_ERRORS,
    VALIDATION_LOCATION,
    VALIDATION_MESSAGE,
    VALIDATION_TYPE,
)

from .conftest import error_counts, request_counts

MINUTE = 29_000_000  # a minute number (since the epoch) in 2025


class Clock:
    """Wall time in ns, set by the test: collections see the minute the test is in."""

    def __init__(self, seconds: float) -> None:
        self.ns = int(seconds * 1e9)

    def __call__(self) -> int:
        return self.ns


def aggregator(clock: Clock | None = None) -> RequestAggregator:
    resource = Resource.create({"service.name": "shop", "service.instance.id": "i-1"})
    return RequestAggregator(resource, InstrumentationScope("tallyhub", "test"), clock or Clock(MINUTE * 60))


def test_collect_is_delta_and_empty_after() -> None:
    agg = aggregator()
    agg.record("GET", "/a", 200, 0.01, 0, 10, MINUTE * 60 + 1)
    agg.record("GET", "/a", 200, 0.03, 0, 30, MINUTE * 60 + 2)
    agg.record("PATCH", "/a", 500, 0.05, 7, 0, MINUTE * 60 + 3)
    first = agg.collect()
    assert request_counts(first) == {("GET", "/a", 200): 2, ("PATCH", "/a", 500): 1}
    assert agg.collect() is None


def test_points_carry_names_units_and_sums() -> None:
    agg = aggregator()
    agg.record("POST", "/orders", 201, 0.25, 120, 40, MINUTE * 60)
    agg.record("POST", "/orders", 201, 0.75, 80, 60, MINUTE * 60 + 59.9)
    metrics = {m.name: m for m in agg.collect().resource_metrics[0].scope_metrics[0].metrics}
    assert {name: m.unit for name, m in metrics.items()} == {DURATION: "s", REQUEST_SIZE: "By", RESPONSE_SIZE: "By"}
    duration = metrics[DURATION].data.data_points[0]
    assert (duration.count, duration.sum, duration.min, duration.max) == (2, 1.0, 0.25, 0.75)
    assert metrics[REQUEST_SIZE].data.data_points[0].sum == 200
    assert metrics[RESPONSE_SIZE].data.data_points[0].sum == 100
    assert "error.type" not in duration.attributes


def test_sizes_declared_by_headers_are_read_when_folded() -> None:
    """The WSGI middleware queues a ``Content-Length`` header's text; what it declares is counted
    when folded, nothing for a body that HEAD, 1xx, 204 and 304 responses never send, 0 for a
    value that is not a length."""
    agg = aggregator()
    agg.record("POST", "/a", 201, 0.01, "120", "44", MINUTE * 60)
    agg.record("POST", "/a", 201, 0.01, " 30 ", "6", MINUTE * 60)
    agg.record("HEAD", "/a", 200, 0.01, 0, "44", MINUTE * 60)
    agg.record("GET", "/a", 304, 0.01, 0, "44", MINUTE * 60)
    agg.record("GET", "/a", 200, 0.01, "-3", "4x", MINUTE * 60)
    agg.record("GET", "/a", 200, 0.01, "\u00b2", 5, MINUTE * 60)  # a digit to isdigit(), not to int()
    metrics = {m.name: m for m in agg.collect().resource_metrics[0].scope_metrics[0].metrics}
    sums = {
        (p.attributes[METHOD], p.attributes["http.response.status_code"]): (p.sum, r.sum)
        for p, r in zip(metrics[REQUEST_SIZE].data.data_points, metrics[RESPONSE_SIZE].data.data_points, strict=True)
    }
    assert sums == {("POST", 201): (150, 50), ("HEAD", 200): (0, 0), ("GET", 304): (0, 0), ("GET", 200): (0, 5)}


def test_unknown_methods_share_one_series() -> None:
    agg = aggregator()
    for method in ("BREW", "PROPFIND", "get"):
        agg.record(method, "/x", 405, 0.001, 0, 0, MINUTE * 60)
    assert request_counts(agg.collect()) == {("_OTHER", "/x", 405): 3}


def test_each_minute_becomes_its_own_row_at_the_hub() -> None:
    clock = Clock(MINUTE * 60 + 30)
    agg = aggregator(clock)
    agg.record("GET", "/a", 200, 0.010, 0, 5, MINUTE * 60 + 58)
    agg.record("GET", "/a", 200, 0.020, 0, 5, MINUTE * 60 + 59.5)
    agg.record("GET", "/a", 200, 0.040, 0, 5, MINUTE * 60 + 61)
    agg.record("GET", "/a", 503, 0.080, 0, 5, MINUTE * 60 + 62)
    clock.ns += 60 * 10**9
    data = agg.collect()
    windows = {
        (p.start_time_unix_nano, p.time_unix_nano)
        for p in data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    }
    minute_ns = MINUTE * 60 * 10**9
    # delta windows: from the previous collection to the end of the minute, then to this collection
    assert windows == {
        (minute_ns + 30 * 10**9, minute_ns + 60 * 10**9),
        (minute_ns + 60 * 10**9, minute_ns + 90 * 10**9),
    }
    rows = request_rows(encode_metrics(data), app="shop-app")
    got = {
        (r.minute.timestamp() // 60, r.status): (r.requests, round(r.duration_sum, 6), r.response_size_sum)
        for r in rows
    }
    assert got == {
        (MINUTE, 200): (2, 0.03, 10),
        (MINUTE + 1, 200): (1, 0.04, 5),
        (MINUTE + 1, 503): (1, 0.08, 5),
    }
    assert {(r.app, r.service, r.instance, r.route, r.method) for r in rows} == {
        ("shop-app", "shop", "i-1", "/a", "GET")
    }


def test_series_beyond_the_limit_are_counted_in_the_overflow_series() -> None:
    resource = Resource.create({"service.instance.id": "i-1"})
    agg = RequestAggregator(resource, InstrumentationScope("tallyhub", "test"), Clock(MINUTE * 60), max_series=10)
    for i in range(1000):  # a scanner: a new route each time (as if templates had gone wrong)
        agg.record("GET", f"/wp-{i}.php", 404, 0.001, 0, 0, MINUTE * 60 + 1)
    agg.record("GET", "/wp-3.php", 404, 0.001, 0, 0, MINUTE * 60 + 2)  # a series that exists still counts there
    data = agg.collect()
    points = data.resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert len(points) == 11
    overflow = [p for p in points if p.attributes == {"otel.metric.overflow": True}]
    assert [p.count for p in overflow] == [990]
    assert sum(p.count for p in points) == 1001
    rows = request_rows(encode_metrics(data), app="a")
    assert {(r.route, r.method, r.status): r.requests for r in rows if r.route == "(overflow)"} == {
        ("(overflow)", "", 0): 990
    }
    assert sum(r.requests for r in rows) == 1001


# Validation errors and server errors.


def attributes(**named: object) -> tuple:
    """An error point's attributes as ``error_counts`` keys them (``consumer`` is the consumer id)."""
    names = {
        "method": METHOD,
        "route": ROUTE,
        "consumer": CONSUMER_ID,
        "location": VALIDATION_LOCATION,
        "message": VALIDATION_MESSAGE,
        "type": VALIDATION_TYPE,
        "exc_type": EXCEPTION_TYPE,
        "exc_message": EXCEPTION_MESSAGE,
        "fingerprint": ERROR_FINGERPRINT,
        "stacktrace": EXCEPTION_STACKTRACE,
    }
    return tuple(sorted((names[k], v) for k, v in named.items()))


OVERFLOW_POINT = (("otel.metric.overflow", True),)


def server_error(n: int, trace: str | None = None) -> ServerError:
    return ServerError(f"shop.errors.E{n}", f"failure {n}", trace or f"Traceback {n}\n", f"{n:016x}")


def error_metrics(data) -> dict:
    return {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics if m.name.startswith("tallyhub.")}


def test_validation_errors_are_counted_per_request_route_and_error() -> None:
    agg = aggregator()
    missing = ValidationError("body.name", "Field required", "missing")
    parsing = ValidationError("query.limit", "Input should be a valid integer", "int_parsing")
    untyped = ValidationError("query.limit", "Expected `int`, got `str`", "")  # Litestar has no type
    agg.record("POST", "/items", 422, 0.01, 10, 100, MINUTE * 60 + 1, validation_errors=[missing, parsing])
    agg.record("POST", "/items", 422, 0.01, 10, 100, MINUTE * 60 + 2, validation_errors=[missing])
    agg.record("GET", "/items", 400, 0.01, 0, 100, MINUTE * 60 + 3, Consumer("acme", "Acme", "paid"), [untyped])
    agg.record("GET", "/items", 400, 0.01, 0, 100, MINUTE * 60 + 4, validation_errors=[])
    data = agg.collect()
    assert request_counts(data) == {("POST", "/items", 422): 2, ("GET", "/items", 400): 2}
    assert error_counts(VALIDATION_ERRORS, data) == {
        attributes(method="POST", route="/items", location="body.name", message="Field required", type="missing"): 2,
        attributes(
            method="POST",
            route="/items",
            location="query.limit",
            message="Input should be a valid integer",
            type="int_parsing",
        ): 1,
        attributes(
            method="GET", route="/items", consumer="acme", location="query.limit", message="Expected `int`, got `str`"
        ): 1,
    }
    metric = error_metrics(data)[VALIDATION_ERRORS]
    assert metric.unit == "{error}"
    assert SERVER_ERRORS not in error_metrics(data)
    assert all(
        (p.start_time_unix_nano, p.time_unix_nano) == (MINUTE * 60 * 10**9, MINUTE * 60 * 10**9 + 1)
        for p in metric.data.data_points
    )
    assert agg.collect() is None


def test_validation_errors_beyond_the_cap_are_counted_in_the_overflow_point() -> None:
    resource = Resource.create({"service.instance.id": "i-1"})
    agg = RequestAggregator(
        resource, InstrumentationScope("tallyhub", "test"), Clock(MINUTE * 60), max_validation_errors=3
    )
    errors = [ValidationError(f"body.f{i}", "Field required", "missing") for i in range(5)]
    agg.record("POST", "/a", 422, 0.01, 0, 0, MINUTE * 60 + 1, validation_errors=errors)  # 3 keys, 2 beyond
    agg.record("POST", "/a", 422, 0.01, 0, 0, MINUTE * 60 + 2, validation_errors=errors[:1])  # a known key
    agg.record("POST", "/b", 422, 0.01, 0, 0, MINUTE * 60 + 3, validation_errors=errors[:1])  # a new key: beyond
    counts = error_counts(VALIDATION_ERRORS, agg.collect())
    assert counts == {
        **{
            attributes(method="POST", route="/a", location=f"body.f{i}", message="Field required", type="missing"): n
            for i, n in ((0, 2), (1, 1), (2, 1))
        },
        OVERFLOW_POINT: 3,
    }
    assert sum(counts.values()) == 7
    # A new collection interval starts with no keys.
    agg.record("POST", "/b", 422, 0.01, 0, 0, MINUTE * 60 + 4, validation_errors=errors[4:])
    assert error_counts(VALIDATION_ERRORS, agg.collect()) == {
        attributes(method="POST", route="/b", location="body.f4", message="Field required", type="missing"): 1
    }


def test_server_errors_beyond_the_cap_are_counted_in_the_overflow_point() -> None:
    resource = Resource.create({"service.instance.id": "i-1"})
    agg = RequestAggregator(resource, InstrumentationScope("tallyhub", "test"), Clock(MINUTE * 60), max_server_errors=2)
    for n in range(5):
        agg.record("GET", "/x", 500, 0.01, 0, 0, MINUTE * 60 + 1, server_error=server_error(n))
    agg.record("GET", "/x", 500, 0.01, 0, 0, MINUTE * 60 + 2, server_error=server_error(1))  # a known key
    agg.record("GET", "/x", 500, 0.01, 0, 0, MINUTE * 60 + 3)  # a 500 without exception: no server error
    data = agg.collect()
    counts = error_counts(SERVER_ERRORS, data)
    assert counts == {
        **{
            attributes(
                method="GET",
                route="/x",
                exc_type=f"shop.errors.E{n}",
                exc_message=f"failure {n}",
                fingerprint=f"{n:016x}",
                stacktrace=f"Traceback {n}\n",
            ): count
            for n, count in ((0, 1), (1, 2))
        },
        OVERFLOW_POINT: 3,  # no stack trace there
    }
    assert request_counts(data) == {("GET", "/x", 500): 7}
    assert error_metrics(data)[SERVER_ERRORS].unit == "{error}"


def test_a_stack_trace_is_sent_once_per_error_and_interval() -> None:
    agg = aggregator()
    for trace in ("Traceback first\n", "Traceback second\n", "Traceback third\n"):  # one site, other traces
        agg.record("PUT", "/y", 500, 0.01, 0, 0, MINUTE * 60 + 1, Consumer("acme"), server_error=server_error(7, trace))
    agg.record("PUT", "/y", 502, 0.01, 0, 0, MINUTE * 60 + 2, server_error=server_error(7, "Traceback anonymous\n"))
    expected = attributes(
        method="PUT",
        route="/y",
        exc_type="shop.errors.E7",
        exc_message="failure 7",
        fingerprint=f"{7:016x}",
    )
    points = error_metrics(agg.collect())[SERVER_ERRORS].data.data_points
    assert len(points) == 2  # one per key: the trace travels once, with the first occurrence's text
    by_consumer = {p.attributes.get(CONSUMER_ID): p for p in points}
    assert by_consumer["acme"].value == 3
    assert dict(by_consumer["acme"].attributes) == {
        **dict(expected),
        CONSUMER_ID: "acme",
        EXCEPTION_STACKTRACE: "Traceback first\n",
    }
    assert by_consumer[None].value == 1
    assert dict(by_consumer[None].attributes) == {**dict(expected), EXCEPTION_STACKTRACE: "Traceback anonymous\n"}
    agg.record("PUT", "/y", 500, 0.01, 0, 0, MINUTE * 60 + 3, Consumer("acme"), server_error=server_error(7, "T2\n"))
    (point,) = error_metrics(agg.collect())[SERVER_ERRORS].data.data_points  # the next interval: sent again
    assert (point.value, point.attributes[EXCEPTION_STACKTRACE]) == (1, "T2\n")


def test_errors_of_each_minute_are_points_of_their_own() -> None:
    clock = Clock(MINUTE * 60 + 30)
    agg = aggregator(clock)
    error = ValidationError("body", "Invalid JSON", "json_invalid")
    agg.record("POST", "/z", 422, 0.01, 0, 0, MINUTE * 60 + 50, validation_errors=[error])
    agg.record("POST", "/z", 422, 0.01, 0, 0, MINUTE * 60 + 70, validation_errors=[error, error])
    agg.record("POST", "/z", 500, 0.01, 0, 0, MINUTE * 60 + 71, server_error=server_error(1))
    clock.ns += 60 * 10**9
    metrics = error_metrics(agg.collect())
    minute_ns = MINUTE * 60 * 10**9
    assert {
        (p.start_time_unix_nano, p.time_unix_nano, p.value) for p in metrics[VALIDATION_ERRORS].data.data_points
    } == {
        (minute_ns + 30 * 10**9, minute_ns + 60 * 10**9, 1),
        (minute_ns + 60 * 10**9, minute_ns + 90 * 10**9, 2),
    }
    ((point),) = metrics[SERVER_ERRORS].data.data_points
    assert (point.start_time_unix_nano, point.time_unix_nano) == (minute_ns + 60 * 10**9, minute_ns + 90 * 10**9)


def test_errors_of_consumers_beyond_their_cap_go_to_the_overflow_consumer() -> None:
    resource = Resource.create({"service.instance.id": "i-1"})
    agg = RequestAggregator(resource, InstrumentationScope("tallyhub", "test"), Clock(MINUTE * 60), max_consumers=1)
    error = ValidationError("query.q", "Field required", "missing")
    agg.record("GET", "/s", 422, 0.01, 0, 0, MINUTE * 60 + 1, Consumer("first"), [error])
    agg.record("GET", "/s", 422, 0.01, 0, 0, MINUTE * 60 + 2, Consumer("second"), [error])
    agg.record("GET", "/s", 500, 0.01, 0, 0, MINUTE * 60 + 3, Consumer("third"), server_error=server_error(2))
    data = agg.collect()
    common = {"method": "GET", "route": "/s"}
    assert error_counts(VALIDATION_ERRORS, data) == {
        attributes(**common, consumer=consumer, location="query.q", message="Field required", type="missing"): 1
        for consumer in ("first", "(overflow)")
    }
    assert error_counts(SERVER_ERRORS, data) == {
        attributes(
            **common,
            consumer="(overflow)",
            exc_type="shop.errors.E2",
            exc_message="failure 2",
            fingerprint=f"{2:016x}",
            stacktrace="Traceback 2\n",
        ): 1
    }


def test_the_heartbeat_is_the_uptime_gauge_alone() -> None:
    clock = Clock(MINUTE * 60)
    agg = aggregator(clock)
    clock.ns += 90 * 10**9
    ((scope,),) = [rm.scope_metrics for rm in agg.heartbeat().resource_metrics]
    (metric,) = scope.metrics
    (point,) = metric.data.data_points
    assert (metric.name, metric.unit, type(metric.data).__name__) == ("process.uptime", "s", "Gauge")
    assert (point.value, point.attributes) == (90.0, {})
    assert point.time_unix_nano == clock.ns and point.start_time_unix_nano == MINUTE * 60 * 10**9


def test_requests_recorded_while_others_fold_and_collect_are_each_counted_once() -> None:
    agg = aggregator()
    collected: list = []
    done = threading.Event()

    def record(thread: int) -> None:
        for i in range(20_000):
            agg.record("GET", f"/t{thread}", 200, 0.001 * (i % 7 + 1), 0, 10, MINUTE * 60 + 1)

    def fold_and_collect() -> None:
        while not done.is_set():
            agg.fold()
            collected.append(agg.collect())

    folder = threading.Thread(target=fold_and_collect)
    folder.start()
    recorders = [threading.Thread(target=record, args=(t,)) for t in range(3)]
    for thread in recorders:
        thread.start()
    for thread in recorders:
        thread.join()
    done.set()
    folder.join()
    collected.append(agg.collect())
    assert request_counts(*collected) == {("GET", f"/t{t}", 200): 20_000 for t in range(3)}


def test_a_long_queue_wakes_the_export_thread_and_a_full_one_is_folded_by_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(aggregator_module, "FOLD_SOON", 3)
    monkeypatch.setattr(aggregator_module, "MAX_PENDING", 5)
    agg = aggregator()
    woken = []
    for i in range(12):
        agg.record("GET", "/a", 200, 0.01, 0, 10, MINUTE * 60 + 1)
        woken.append(agg.backlog.is_set())
        assert len(agg.pending) == (i + 1) % 5  # never more than MAX_PENDING waiting
        if not agg.pending:
            assert not agg.backlog.is_set()  # the fold cleared it
    assert woken[:5] == [False, False, True, True, False]
    assert request_counts(agg.collect()) == {("GET", "/a", 200): 12}


def test_a_request_that_cannot_be_counted_is_left_out_alone_and_said(caplog: pytest.LogCaptureFixture) -> None:
    agg = aggregator()
    agg.record("GET", "/a", 200, 0.01, 0, 10, MINUTE * 60 + 1)
    agg.record("GET", ["not", "a", "route"], 200, 0.01, 0, 10, MINUTE * 60 + 1)  # type: ignore[arg-type]
    agg.record("GET", "/a", 200, 0.01, 0, 10, MINUTE * 60 + 2)
    with caplog.at_level(logging.ERROR, logger="tallyhub"):
        assert request_counts(agg.collect()) == {("GET", "/a", 200): 2}
    assert "1 requests could not be counted and were left out (first: TypeError(" in caplog.text


def test_an_error_body_is_parsed_when_folded_not_when_recorded() -> None:
    agg = aggregator()
    parsed: list[bytes] = []

    def errors() -> list[ValidationError]:
        parsed.append(b"body")
        return [ValidationError("query.limit", "Input should be a valid integer", "int_parsing")]

    agg.record("GET", "/a", 422, 0.01, 0, 10, MINUTE * 60 + 1, validation_errors=errors)
    assert parsed == []
    data = agg.collect()
    assert parsed == [b"body"]
    assert error_counts(VALIDATION_ERRORS, data) == {
        attributes(
            method="GET",
            route="/a",
            location="query.limit",
            message="Input should be a valid integer",
            type="int_parsing",
        ): 1
    }
