"""Property-based: whatever bytes or well-formed-but-odd OTLP a client sends, the receiver answers
with the right status, never crashes, and the queue, the processor and real inserts into
ClickHouse (chDB) keep flowing: another app's totals stay exact."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.auth import KeyRing, generate_key, hash_key
from tallyhub.collector_processor.receive.receiver import Receiver, start_grpc_server
from tallyhub.collector_processor.store import Processor
from tallyhub.storage.writer import insert_batch

KEY = generate_key()
GOOD_KEY = generate_key()
EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[tuple]:
    directory: Path = tmp_path_factory.mktemp("fuzz")
    queue = DurableQueue(directory / "queue")
    keyring = KeyRing(lambda: {hash_key(KEY): "shop", hash_key(GOOD_KEY): "good"})
    server, port = start_grpc_server(Receiver(keyring, queue), "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
    yield call, queue, directory
    channel.close()
    server.stop(None)
    queue.close()


def send(call, data: bytes, key: str = KEY) -> grpc.StatusCode:
    try:
        call(data, metadata=[("x-tallyhub-app-key", key)], timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@FAST
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_ok_or_invalid_argument(hub, data: bytes) -> None:
    call, _, _ = hub
    try:
        ExportMetricsServiceRequest.FromString(data)
        expected = grpc.StatusCode.OK
    except Exception:
        expected = grpc.StatusCode.INVALID_ARGUMENT
    assert send(call, data) is expected


text = st.text(max_size=40)
keys = st.one_of(
    text,
    st.sampled_from(
        ["http.response.status_code", "http.status_code", "http.route", "http.request.method", "tallyhub.consumer.id"]
    ),
)
attribute = st.builds(
    lambda k, v: {"key": k, "value": v},
    keys,
    st.one_of(
        st.builds(lambda s: {"string_value": s}, text),
        st.builds(lambda i: {"int_value": i}, st.integers(-(2**63), 2**63 - 1)),
        st.builds(lambda d: {"double_value": d}, st.floats(allow_nan=True)),
        st.builds(lambda b: {"bool_value": b}, st.booleans()),
    ),
)
NOW_NS = time.time_ns()
times = st.one_of(st.integers(0, 2**64 - 1), st.integers(NOW_NS - 3 * 86400 * 10**9, NOW_NS))  # recent: kept by TTL
number_point = st.builds(
    lambda a, t0, t, v: pb.NumberDataPoint(attributes=a, start_time_unix_nano=t0, time_unix_nano=t, as_double=v),
    st.lists(attribute, max_size=4),
    times,
    times,
    st.floats(allow_nan=True, allow_infinity=True),
)
exp_point = st.builds(
    lambda a, t0, t, count, total, scale, offset, counts: pb.ExponentialHistogramDataPoint(
        attributes=a,
        start_time_unix_nano=t0,
        time_unix_nano=t,
        count=count,
        sum=total,
        scale=scale,
        positive={"offset": offset, "bucket_counts": counts},
    ),
    st.lists(attribute, max_size=4),
    times,
    times,
    st.integers(0, 2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-20, 20),
    st.integers(-(2**31), 2**31 - 1),
    st.lists(st.integers(0, 2**64 - 1), max_size=8),
)
hist_point = st.builds(
    lambda a, t0, t, count, bounds, counts: pb.HistogramDataPoint(
        attributes=a,
        start_time_unix_nano=t0,
        time_unix_nano=t,
        count=count,
        explicit_bounds=bounds,
        bucket_counts=counts,
    ),
    st.lists(attribute, max_size=4),
    times,
    times,
    st.integers(0, 2**64 - 1),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6),
    st.lists(st.integers(0, 2**64 - 1), max_size=8),
)
names = st.sampled_from(
    [
        "http.server.request.duration",
        "http.server.duration",
        "http.server.response.size",
        "tallyhub.server_errors",
        "tallyhub.validation_errors",
        "x.y",
    ]
)
temporality = st.sampled_from([0, 1, 2])
metric = st.one_of(
    st.builds(
        lambda n, u, ps: pb.Metric(name=n, unit=u, gauge={"data_points": ps}),
        names,
        text,
        st.lists(number_point, max_size=3),
    ),
    st.builds(
        lambda n, ps, t, m: pb.Metric(name=n, sum={"data_points": ps, "aggregation_temporality": t, "is_monotonic": m}),
        names,
        st.lists(number_point, max_size=3),
        temporality,
        st.booleans(),
    ),
    st.builds(
        lambda n, u, ps, t: pb.Metric(
            name=n, unit=u, exponential_histogram={"data_points": ps, "aggregation_temporality": t}
        ),
        names,
        st.sampled_from(["s", "ms", "By", ""]),
        st.lists(exp_point, max_size=3),
        temporality,
    ),
    st.builds(
        lambda n, u, ps, t: pb.Metric(name=n, unit=u, histogram={"data_points": ps, "aggregation_temporality": t}),
        names,
        st.sampled_from(["s", "ms", ""]),
        st.lists(hist_point, max_size=3),
        temporality,
    ),
)
export = st.builds(
    lambda resource, metrics: ExportMetricsServiceRequest(
        resource_metrics=[{"resource": {"attributes": resource}, "scope_metrics": [{"metrics": metrics}]}]
    ),
    st.lists(attribute, max_size=4),
    st.lists(metric, min_size=1, max_size=4),
)


GOOD_EXPORT = ExportMetricsServiceRequest(
    resource_metrics=[
        {
            "scope_metrics": [
                {
                    "metrics": [
                        pb.Metric(
                            name="http.server.request.duration",
                            unit="s",
                            exponential_histogram={
                                "aggregation_temporality": 1,
                                "data_points": [
                                    pb.ExponentialHistogramDataPoint(
                                        time_unix_nano=NOW_NS,
                                        count=3,
                                        sum=0.3,
                                        scale=3,
                                        positive={"offset": -27, "bucket_counts": [3]},
                                        attributes=[{"key": "http.route", "value": {"string_value": "/canary"}}],
                                    )
                                ],
                            },
                        )
                    ]
                }
            ]
        }
    ]
).SerializeToString()


@pytest.fixture(scope="module")
def canary() -> dict[str, int]:
    return {"sent": 0}


@FAST
@given(export)
def test_any_export_of_one_app_leaves_another_apps_totals_exact_in_clickhouse(
    hub, ch, canary: dict[str, int], request: ExportMetricsServiceRequest
) -> None:
    call, queue, directory = hub
    assert send(call, GOOD_EXPORT, GOOD_KEY) is grpc.StatusCode.OK
    assert send(call, request.SerializeToString()) is grpc.StatusCode.OK
    assert send(call, GOOD_EXPORT, GOOD_KEY) is grpc.StatusCode.OK
    canary["sent"] += 6
    processor = Processor(queue, lambda tables, token: insert_batch(ch, tables, token), directory / "rejected")
    batch = queue.next_batch(100, 1 << 30, wait_s=0)
    worker = threading.Thread(target=processor.process, args=(batch,), daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # retrying forever: an insert error taken for a passing one
        processor.stop(0)
        pytest.fail(f"the batch is retried forever: {processor.last_error}")
    assert queue.depth() == 0
    assert list((directory / "rejected").glob("*.txt")) == []  # nothing set aside: refused at receipt instead
    stored = ch.query("SELECT sum(requests) FROM requests WHERE app = 'good'").result_rows[0][0]
    assert stored == canary["sent"]


@FAST
@given(export)
def test_odd_but_well_formed_exports_are_taken_and_never_stick_the_queue(
    hub, request: ExportMetricsServiceRequest
) -> None:
    call, queue, directory = hub
    assert send(call, request.SerializeToString()) is grpc.StatusCode.OK
    stored: list[dict] = []
    processor = Processor(queue, lambda tables, token: stored.append(dict(tables)), directory / "rejected")
    batch = queue.next_batch(100, 1 << 30, wait_s=0)
    assert processor.process(batch)  # rows made (or the record set aside with its reason): the queue moves on
    assert queue.depth() == 0
    reasons = [path.read_text() for path in (directory / "rejected").glob("*.txt")]
    assert reasons == []  # and no record it could not convert
