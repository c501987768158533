"""HTTP server metrics as other OpenTelemetry SDKs send them: older names and units, explicit
buckets, cumulative temporality — made with the real SDK and its OTLP encoder."""

from __future__ import annotations

import math

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from tallyhub.bucket_mapping import bucket_index, lower_bound
from tallyhub.collector_processor.convert.cumulative import DeltaState
from tallyhub.collector_processor.convert.http_points import STORAGE_SCALE, explicit_buckets
from tallyhub.collector_processor.convert.requests import rejected_points, request_rows


def sdk() -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader()  # the SDK's defaults: cumulative, explicit buckets
    return MeterProvider([reader], resource=Resource.create({"service.instance.id": "i-1"})), reader


def test_old_semconv_in_milliseconds_with_explicit_buckets_cumulative() -> None:
    provider, reader = sdk()
    duration = provider.get_meter("opentelemetry.instrumentation.flask").create_histogram("http.server.duration", "ms")
    size = provider.get_meter("x").create_histogram("http.server.response.size", "By")
    old = {"http.method": "GET", "http.target": "/items/<id>", "http.status_code": 200}
    for ms in (3, 7, 7, 40, 120):
        duration.record(ms, old)
        size.record(100, old)
    duration.record(900, {"http.method": "POST", "http.route": "/items", "http.status_code": 500})
    state = DeltaState(started_ns=0)
    first = encode_metrics(reader.get_metrics_data())
    assert rejected_points(first) == (0, "")
    rows = {(r.method, r.route, r.status): r for r in request_rows(first, "shop", state)}
    get = rows["GET", "/items/<id>", 200]
    assert get.requests == 5 and math.isclose(get.duration_sum, 0.177)
    assert get.response_size_sum == 500 and sum(get.response_size_buckets.values()) == 5
    # each count sits at its bucket's middle, in seconds: (0,5] → 2.5 ms, (5,10] → 7.07 ms, ...
    assert get.duration_buckets == {
        bucket_index(0.0025, STORAGE_SCALE): 1,
        bucket_index(math.sqrt(0.005 * 0.010), STORAGE_SCALE): 2,
        bucket_index(math.sqrt(0.025 * 0.050), STORAGE_SCALE): 1,
        bucket_index(math.sqrt(0.100 * 0.250), STORAGE_SCALE): 1,
    }
    assert rows["POST", "/items", 500].requests == 1

    # the next export is cumulative: only what happened since counts
    duration.record(7, old)
    later = {
        (r.method, r.route, r.status): r for r in request_rows(encode_metrics(reader.get_metrics_data()), "shop", state)
    }
    assert set(later) == {("GET", "/items/<id>", 200)}  # the others did not change
    assert later["GET", "/items/<id>", 200].requests == 1
    assert later["GET", "/items/<id>", 200].duration_buckets == {
        bucket_index(math.sqrt(0.005 * 0.010), STORAGE_SCALE): 1
    }
    low, high = later["GET", "/items/<id>", 200].duration_min, later["GET", "/items/<id>", 200].duration_max
    assert low <= math.sqrt(0.005 * 0.010) <= high  # estimated: the stored bucket of its count


def test_target_without_route_loses_its_query_string() -> None:
    provider, reader = sdk()
    histogram = provider.get_meter("x").create_histogram("http.server.request.duration", "s")
    histogram.record(
        0.1, {"http.request.method": "GET", "http.target": "/health?verbose=1", "http.response.status_code": 200}
    )
    (row,) = request_rows(encode_metrics(reader.get_metrics_data()), "shop")
    assert row.route == "/health"


def test_explicit_bucket_edges() -> None:
    assert explicit_buckets([0.0, 1.0], [4, 0, 0]) == {}  # (-inf, 0]: zeros, left to the zero count
    assert explicit_buckets([1.0], [0, 2], maximum=8.0) == {bucket_index(8.0, STORAGE_SCALE): 2}  # the max
    assert explicit_buckets([1.0], [0, 2]) == {bucket_index(2.0, STORAGE_SCALE): 2}  # no max: twice the bound
    (index,) = explicit_buckets([2.0, 8.0], [0, 3, 0])
    assert lower_bound(index, STORAGE_SCALE) < 4.0 <= lower_bound(index + 1, STORAGE_SCALE)
