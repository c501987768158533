"""The aggregates as OTLP: delta, per minute, semantic-convention names, and what the hub makes of them."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.collector_processor.otlp_rows import request_rows
from tallyhub.instrumentation.aggregator import DURATION, REQUEST_SIZE, RESPONSE_SIZE, RequestAggregator

from .conftest import request_counts

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
