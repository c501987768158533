"""OTLP → rows, on protobuf messages built by hand."""

from __future__ import annotations

import math

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from tallyhub.bucket_mapping import bucket_index
from tallyhub.collector_processor.convert.http_points import STORAGE_SCALE, rescale_buckets
from tallyhub.collector_processor.convert.points import MAX_ATTRIBUTES, MAX_POINTS
from tallyhub.collector_processor.convert.requests import rejected_points, request_rows

T0 = 1_764_000_000 * 1_000_000_000  # a whole minute, in ns
DELTA = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


def kv(key: str, value) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def exp_point(
    count: int, total: float, scale: int, offset: int, counts: list[int], attrs: dict
) -> pb.ExponentialHistogramDataPoint:
    return pb.ExponentialHistogramDataPoint(
        attributes=[kv(k, v) for k, v in attrs.items()],
        start_time_unix_nano=T0 + 5_000_000_000,
        time_unix_nano=T0 + 60_000_000_000,
        count=count,
        sum=total,
        scale=scale,
        zero_count=count - sum(counts),
        positive=pb.ExponentialHistogramDataPoint.Buckets(offset=offset, bucket_counts=counts),
        min=0.01,
        max=0.2,
    )


def export(*metrics: pb.Metric, resource_attrs: dict | None = None) -> ExportMetricsServiceRequest:
    resource_attrs = resource_attrs or {"service.name": "shop", "service.instance.id": "i-1"}
    return ExportMetricsServiceRequest(
        resource_metrics=[
            pb.ResourceMetrics(
                resource={"attributes": [kv(k, v) for k, v in resource_attrs.items()]},
                scope_metrics=[pb.ScopeMetrics(metrics=list(metrics))],
            )
        ]
    )


def exp_metric(name: str, *points, temporality=DELTA) -> pb.Metric:
    return pb.Metric(
        name=name,
        exponential_histogram=pb.ExponentialHistogram(data_points=list(points), aggregation_temporality=temporality),
    )


HTTP = {"http.request.method": "GET", "http.route": "/items/{id}", "http.response.status_code": 200}


def test_rescale_finer_buckets_fold_into_storage_buckets() -> None:
    values = [0.013, 0.0131, 0.2, 0.21, 1.5]
    fine = 8
    counts: dict[int, int] = {}
    for v in values:
        counts[bucket_index(v, fine)] = counts.get(bucket_index(v, fine), 0) + 1
    offset = min(counts)
    dense = [counts.get(i, 0) for i in range(offset, max(counts) + 1)]
    stored = rescale_buckets(fine, offset, dense)
    expected: dict[int, int] = {}
    for v in values:
        expected[bucket_index(v, STORAGE_SCALE)] = expected.get(bucket_index(v, STORAGE_SCALE), 0) + 1
    assert stored == expected


def test_rescale_coarser_bucket_lands_in_its_middle() -> None:
    # scale 0 bucket 3 is (8, 16]; its geometric middle 8*sqrt(2) ≈ 11.3
    stored = rescale_buckets(0, 3, [4])
    assert stored == {bucket_index(8 * math.sqrt(2) * 1.0001, STORAGE_SCALE): 4}


def test_rows_merge_the_three_metrics_and_take_the_app_from_the_key() -> None:
    request = export(
        exp_metric("http.server.request.duration", exp_point(3, 0.3, 3, -30, [1, 0, 2], HTTP)),
        exp_metric("http.server.request.body.size", exp_point(3, 0.0, 0, 0, [], HTTP)),
        exp_metric("http.server.response.body.size", exp_point(3, 300, 0, 6, [3], HTTP)),
        resource_attrs={"service.name": "shop", "service.instance.id": "i-1", "tallyhub.app": "someone-else"},
    )
    (row,) = request_rows(request, app="verified-app")
    assert row.app == "verified-app"
    assert (row.method, row.route, row.status, row.requests) == ("GET", "/items/{id}", 200, 3)
    assert row.minute.timestamp() * 1e9 == T0
    assert (row.duration_sum, row.duration_min, row.duration_max) == (0.3, 0.01, 0.2)
    assert sum(row.duration_buckets.values()) == 3
    assert row.request_size_buckets == {}
    assert row.response_size_sum == 300
    assert row.response_size_buckets == {bucket_index(64 * math.sqrt(2) * 1.0001, STORAGE_SCALE): 3}  # (64, 128]


def test_points_of_one_series_and_minute_are_added_up() -> None:
    request = export(
        exp_metric(
            "http.server.request.duration",
            exp_point(2, 0.2, 3, -30, [2], HTTP),
            exp_point(5, 0.5, 3, -30, [5], HTTP),
        )
    )
    (row,) = request_rows(request, app="a")
    assert (row.requests, row.duration_sum, sum(row.duration_buckets.values())) == (7, 0.7, 7)


def test_points_beyond_the_limits_are_refused_and_the_rest_kept() -> None:
    crowded = exp_point(1, 0.1, 3, -30, [1], {**HTTP, **{f"k{i}": "v" for i in range(MAX_ATTRIBUTES)}})
    request = export(
        exp_metric("http.server.request.duration", exp_point(2, 0.2, 3, -30, [2], HTTP), crowded),
        pb.Metric(
            name="process.cpu", gauge=pb.Gauge(data_points=[pb.NumberDataPoint(time_unix_nano=T0, as_double=1.0)] * 2)
        ),
    )
    rejected, message = rejected_points(request)
    assert rejected == 1
    assert f"more than {MAX_ATTRIBUTES} attributes" in message
    assert [r.requests for r in request_rows(request, app="a")] == [2]
    many = export(
        pb.Metric(
            name="g", gauge=pb.Gauge(data_points=[pb.NumberDataPoint(time_unix_nano=T0, as_int=1)] * (MAX_POINTS + 3))
        )
    )
    assert rejected_points(many)[0] == 3


def test_everything_supported_rejects_nothing() -> None:
    assert rejected_points(
        export(exp_metric("http.server.request.duration", exp_point(1, 0.1, 3, -30, [1], HTTP)))
    ) == (0, "")
