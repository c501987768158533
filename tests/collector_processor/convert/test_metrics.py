"""The compiled single pass against its oracle, the pure-Python converters: for any export, the
same `requests` rows byte for byte, the same consumers, errors and generic metrics, the same
partial-success answer; and never a crash on bytes that are not OTLP at all."""

from __future__ import annotations

import math
import random
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from tallyhub.collector_processor.convert import metrics
from tallyhub.collector_processor.convert.cumulative import DeltaState
from tallyhub.collector_processor.convert.metrics import COMPILED, accepted_as_is, metric_tables
from tallyhub.collector_processor.convert.requests import rejected_points
from tallyhub.storage.rowbinary import Encoded

MANY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW_NS = time.time_ns()


def test_the_compiled_pass_is_built() -> None:
    """`pip install` builds it on a machine with a C compiler (CI's): a failed build would only show
    as a slow hub, so it is checked here."""
    assert COMPILED, (
        "tallyhub.collector_processor.convert._otlp is missing: reinstall with a C compiler (pip install -e '.[hub]')"
    )


def string(s: str) -> dict[str, Any]:
    return {"string_value": s}


text = st.text(max_size=12)
value = st.one_of(
    st.builds(string, st.one_of(text, st.sampled_from(["GET", "POST", "/a/{id}", "/b?x=1", "200", "a" * 200]))),
    st.builds(lambda i: {"int_value": i}, st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([200, 404]))),
    st.builds(lambda d: {"double_value": d}, st.floats(allow_nan=True)),
    st.builds(lambda b: {"bool_value": b}, st.booleans()),
    st.just({}),
    st.just({"array_value": {"values": [{"string_value": "x"}]}}),
)
common_value = st.one_of(
    st.builds(string, st.sampled_from(["GET", "POST", "/a/{id}", "/b?x=1", "ü" * 130, "c-1"])),
    st.builds(lambda i: {"int_value": i}, st.sampled_from([200, 201, 404, 500, 70000, -1])),
    st.just({"bool_value": True}),
)
keys = st.sampled_from(
    [
        "http.request.method",
        "http.method",
        "http.route",
        "http.target",
        "http.response.status_code",
        "http.status_code",
        "tallyhub.consumer.id",
        "tallyhub.consumer.name",
        "tallyhub.consumer.group",
        "otel.metric.overflow",
        "other",
    ]
)
attribute = st.one_of(
    st.builds(lambda k, v: {"key": k, "value": v}, keys, common_value),
    st.builds(lambda k, v: {"key": k, "value": v}, st.one_of(keys, text), value),
)
minutes = st.integers(0, 3).map(lambda m: NOW_NS - m * 60 * 10**9)
times = st.one_of(minutes, minutes, minutes, st.sampled_from([0, 2**64 - 1, 4_102_444_800 * 10**9 + 1]))
counts = st.lists(st.one_of(st.integers(0, 3), st.integers(0, 2**49)), max_size=12)
exp_point = st.builds(
    lambda a, t, count, total, low, high, scale, offset, positive, negative, zero: pb.ExponentialHistogramDataPoint(
        attributes=a,
        time_unix_nano=t,
        count=count,
        sum=total,
        min=low,
        max=high,
        scale=scale,
        zero_count=zero,
        positive={"offset": offset, "bucket_counts": positive},
        negative={"offset": offset, "bucket_counts": negative},
    ),
    st.lists(attribute, max_size=6),
    times,
    st.one_of(st.integers(0, 20), st.integers(0, 2**64 - 1)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
    st.one_of(st.integers(-11, 21), st.sampled_from([3, 5, 8])),
    st.one_of(st.integers(-300, 300), st.integers(-(2**31), 2**31 - 1)),
    counts,
    st.lists(st.integers(0, 3), max_size=2),
    st.integers(0, 3),
)
number_point = st.builds(
    lambda a, t, v: pb.NumberDataPoint(attributes=a, time_unix_nano=t, as_int=v),
    st.lists(attribute, max_size=4),
    times,
    st.one_of(st.integers(-3, 3), st.integers(-(2**63), 2**63 - 1)),
)
http_names = st.sampled_from(
    [
        "http.server.request.duration",
        "http.server.request.body.size",
        "http.server.response.body.size",
        "http.server.duration",
        "http.server.request.size",
    ]
)
metric = st.one_of(
    *[
        st.builds(
            lambda n, u, ps, t: pb.Metric(
                name=n, unit=u, exponential_histogram={"data_points": ps, "aggregation_temporality": t}
            ),
            http_names,
            st.sampled_from(["s", "", "By", "ms"]),
            st.lists(exp_point, max_size=4),
            st.sampled_from([1, 1, 1, 2]),
        )
    ]
    * 3,
    st.builds(
        lambda n, ps: pb.Metric(name=n, sum={"data_points": ps, "aggregation_temporality": 1, "is_monotonic": True}),
        st.sampled_from(["tallyhub.server_errors", "tallyhub.validation_errors", "tallyhub.x", "app.count"]),
        st.lists(number_point, max_size=3),
    ),
    st.builds(lambda ps: pb.Metric(name="queue.depth", gauge={"data_points": ps}), st.lists(number_point, max_size=2)),
    st.builds(
        lambda ps: pb.Metric(name="http.server.request.duration", histogram={"data_points": ps}),
        st.just([pb.HistogramDataPoint(time_unix_nano=NOW_NS, count=1, bucket_counts=[1], attributes=[])]),
    ),
)
resource = st.lists(
    st.builds(
        lambda k, v: {"key": k, "value": v},
        st.sampled_from(
            ["service.name", "service.instance.id", "deployment.environment.name", "deployment.environment", "x"]
        ),
        st.one_of(st.builds(string, st.sampled_from(["shop", "i-1", "prod", ""])), value),
    ),
    max_size=5,
)
export = st.builds(
    lambda resources: ExportMetricsServiceRequest(
        resource_metrics=[
            {"resource": {"attributes": attrs}, "scope_metrics": [{"scope": {"name": "s"}, "metrics": ms}]}
            for attrs, ms in resources
        ]
    ),
    st.lists(st.tuples(resource, st.lists(metric, max_size=4)), min_size=1, max_size=3),
)

# Exports as clients send them (the pass's own ground): valid values, delta exponential histograms,
# several series sharing minutes, consumers, the overflow series, and now and then another metric.
plain_attribute = st.one_of(
    st.builds(
        lambda k, v: {"key": k, "value": v},
        st.sampled_from(["http.response.status_code", "http.status_code"]),
        st.builds(lambda i: {"int_value": i}, st.sampled_from([0, 200, 201, 404, 500, 65535])),
    ),
    st.builds(
        lambda k, v: {"key": k, "value": v},
        keys.filter(lambda k: "status" not in k and k != "otel.metric.overflow"),
        st.builds(string, st.sampled_from(["GET", "POST", "/a/{id}", "/b?x=1", "/b", "ü" * 130, "c-1", ""])),
    ),
    st.just({"key": "otel.metric.overflow", "value": {"bool_value": True}}),
)
plain_point = st.builds(
    lambda a, t, count, total, low, high, scale, offset, positive: pb.ExponentialHistogramDataPoint(
        attributes=a,
        time_unix_nano=t,
        count=count,
        sum=total,
        min=low,
        max=high,
        scale=scale,
        positive={"offset": offset, "bucket_counts": positive},
    ),
    st.lists(plain_attribute, max_size=5),
    minutes,
    st.integers(0, 5),
    st.floats(0, 100),
    st.floats(0, 1),
    st.floats(0, 1),
    st.one_of(st.integers(0, 12), st.integers(-10, 20)),
    st.integers(-500, 500),
    st.lists(st.integers(0, 3), max_size=20),
)
plain_metric = st.one_of(
    *[
        st.builds(
            lambda n, u, ps: pb.Metric(
                name=n, unit=u, exponential_histogram={"data_points": ps, "aggregation_temporality": 1}
            ),
            http_names,
            st.sampled_from(["s", ""]),
            st.lists(plain_point, max_size=6),
        )
    ]
    * 6,
    st.builds(
        lambda n, ps: pb.Metric(name=n, sum={"data_points": ps, "aggregation_temporality": 1, "is_monotonic": True}),
        st.sampled_from(["tallyhub.server_errors", "tallyhub.validation_errors", "app.count"]),
        st.lists(st.builds(lambda t: pb.NumberDataPoint(time_unix_nano=t, as_int=2), minutes), max_size=2),
    ),
)
plain_export = st.builds(
    lambda resources: ExportMetricsServiceRequest(
        resource_metrics=[
            {"resource": {"attributes": attrs}, "scope_metrics": [{"scope": {"name": "s"}, "metrics": ms}]}
            for attrs, ms in resources
        ]
    ),
    st.lists(
        st.tuples(
            st.lists(
                st.builds(
                    lambda k, v: {"key": k, "value": string(v)},
                    st.sampled_from(["service.name", "service.instance.id", "deployment.environment.name"]),
                    st.sampled_from(["shop", "i-1", "prod"]),
                ),
                max_size=3,
            ),
            st.lists(plain_metric, max_size=5),
        ),
        min_size=1,
        max_size=3,
    ),
)


def comparable(tables: dict[str, Any]) -> dict[str, Any]:
    """Tables as comparable values (NaN as text, so that equal rows compare equal)."""

    def plain(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return "nan"
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    out: dict[str, Any] = {}
    for table, rows in tables.items():
        if isinstance(rows, Encoded):
            out[table] = (rows.block, rows.rows)
        elif rows:
            out[table] = [plain(row.values()) for row in rows]
    return out


def both(payload: bytes) -> tuple[Any, Any]:
    outcomes = []
    for compiled in (True, False):
        try:
            outcomes.append(comparable(metric_tables(payload, "shop", DeltaState(started_ns=0), compiled=compiled)))
        except ValueError as exc:
            outcomes.append(f"ValueError: {exc}")
    return outcomes[0], outcomes[1]


@MANY
@given(st.one_of(export, plain_export))
def test_any_export_gives_the_python_converters_rows(request: ExportMetricsServiceRequest) -> None:
    payload = request.SerializeToString()
    fast, reference = both(payload)
    assert fast == reference
    as_is = accepted_as_is(payload)
    assert as_is is None or (as_is == bool(request.resource_metrics) and rejected_points(request) == (0, ""))


def client_export(seed: int) -> ExportMetricsServiceRequest:
    """What tallyhub's client sends: the three request histograms per series, with consumers."""
    rng = random.Random(seed)
    series = []
    for i in range(20):
        attrs = [
            {"key": "http.request.method", "value": string(rng.choice(["GET", "POST"]))},
            {"key": "http.route", "value": string(f"/r/{i % 7}/{{id}}")},
            {"key": "http.response.status_code", "value": {"int_value": rng.choice([200, 201, 404, 500])}},
        ]
        if i % 3:
            attrs.append({"key": "tallyhub.consumer.id", "value": string(f"c-{i % 4}")})
            attrs.append({"key": "tallyhub.consumer.name", "value": string(f"Consumer {i % 4}")})
        series.append(attrs)

    def histogram(name: str, unit: str, scale: int) -> pb.Metric:
        points = []
        for attrs in series:
            buckets = [rng.choice([0, 0, 1, 2]) for _ in range(rng.randint(0, 40))]
            points.append(
                pb.ExponentialHistogramDataPoint(
                    attributes=attrs,
                    time_unix_nano=NOW_NS - rng.randint(0, 1) * 60 * 10**9,
                    count=sum(buckets),
                    sum=rng.random(),
                    min=rng.random(),
                    max=rng.random() + 1,
                    scale=scale,
                    positive={"offset": rng.randint(-200, 50), "bucket_counts": buckets},
                )
            )
        return pb.Metric(
            name=name, unit=unit, exponential_histogram={"data_points": points, "aggregation_temporality": 1}
        )

    return ExportMetricsServiceRequest(
        resource_metrics=[
            {
                "resource": {"attributes": [{"key": "service.name", "value": string("shop")}]},
                "scope_metrics": [
                    {
                        "metrics": [
                            histogram("http.server.request.duration", "s", 8),
                            histogram("http.server.request.body.size", "By", 3),
                            histogram("http.server.response.body.size", "By", 2),
                        ]
                    }
                ],
            }
        ]
    )


@pytest.mark.parametrize("seed", range(5))
def test_client_exports_take_the_compiled_pass(seed: int) -> None:
    request = client_export(seed)
    payload = request.SerializeToString()
    assert metrics._otlp.requests(payload, "shop") is not None  # not left to Python
    assert metrics._otlp.scan(payload) == (1, 60)
    fast, reference = both(payload)
    assert fast == reference
    assert fast["requests"][1] > 0 and fast["consumers"]


def parses(data: bytes) -> bool:
    try:
        ExportMetricsServiceRequest.FromString(data)
    except Exception:
        return False
    return True


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=512))
@example(b"\x0a\xff\xff\xff\xff\x0f")
@example(b"\x0a\x02\x12\x00")
@example(b"\x0a\x04\x1a\x02\xc3\x28")  # a schema_url that is not UTF-8
def test_arbitrary_bytes_never_crash_the_pass(data: bytes) -> None:
    """The queue holds only exports the receiver could decode, but the pass must not trust that; and
    what the receiver takes without protobuf's parser, that parser takes too."""
    if metrics._otlp.scan(data) is not None:
        assert parses(data)
    metrics._otlp.requests(data, "shop")


@pytest.mark.parametrize("seed", range(60))
def test_damaged_client_exports_never_crash_the_pass(seed: int) -> None:
    payload = bytearray(client_export(seed % 5).SerializeToString())
    rng = random.Random(seed)
    for _ in range(rng.randint(1, 8)):
        payload[rng.randrange(len(payload))] = rng.randrange(256)
    damaged = bytes(payload)
    if metrics._otlp.scan(damaged) is not None:
        assert parses(damaged)  # taken without protobuf's parser: it must be valid
    result = metrics._otlp.requests(damaged, "shop")
    if result is not None and parses(damaged):
        fast, reference = both(damaged)
        assert fast == reference


@MANY
@given(st.one_of(export, plain_export), st.data())
def test_what_the_receiver_takes_as_is_protobuf_takes(request: ExportMetricsServiceRequest, data) -> None:
    """Valid exports damaged in one byte: the compiled check never calls a malformed one valid."""
    payload = bytearray(request.SerializeToString())
    if payload:
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    if accepted_as_is(bytes(payload)) is not None:
        assert parses(bytes(payload))
