"""Values no column takes, from one app, must not stop any other app's data: refused at the
receiver as partial success, and if one ever reaches an insert, only its record is set aside."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from tallyhub.collector_processor import store as store_module
from tallyhub.collector_processor.convert import points as otlp_points
from tallyhub.collector_processor.convert.points import MAX_COUNT
from tallyhub.collector_processor.convert.requests import rejected_points, request_rows
from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.auth import KeyRing, generate_key, hash_key
from tallyhub.collector_processor.receive.receiver import KIND_METRICS, Receiver, start_grpc_server
from tallyhub.collector_processor.store import Processor
from tallyhub.storage.rowbinary import Encoded
from tallyhub.storage.writer import insert_batch

T0 = (int(time.time()) // 60 - 60) * 60 * 10**9  # a whole minute an hour ago (inside the tables' TTL)
DELTA = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
DURATION = "http.server.request.duration"
GOOD_KEY, EVIL_KEY = generate_key(), generate_key()


def attrs(status: int | float | str = 200, route: str = "/items") -> list[KeyValue]:
    value = {int: "int_value", float: "double_value", str: "string_value"}[type(status)]
    return [
        KeyValue(key="http.request.method", value=AnyValue(string_value="GET")),
        KeyValue(key="http.route", value=AnyValue(string_value=route)),
        KeyValue(key="http.response.status_code", value=AnyValue(**{value: status})),
    ]


def duration(count: int = 3, status: int | float | str = 200, scale: int = 3, offset: int = -30, **kw) -> pb.Metric:
    buckets = kw.pop("buckets", [count])
    point = pb.ExponentialHistogramDataPoint(
        attributes=attrs(status, kw.pop("route", "/items")),
        start_time_unix_nano=T0,
        time_unix_nano=T0 + 60 * 10**9,
        count=count,
        sum=0.1 * count,
        scale=scale,
        positive={"offset": offset, "bucket_counts": buckets},
    )
    return pb.Metric(
        name=DURATION, unit="s", exponential_histogram={"data_points": [point], "aggregation_temporality": DELTA}
    )


def error_count(value: float) -> pb.Metric:
    point = pb.NumberDataPoint(attributes=attrs(500), time_unix_nano=T0 + 60 * 10**9, as_double=value)
    return pb.Metric(
        name="tallyhub.server_errors",
        sum={"data_points": [point], "aggregation_temporality": DELTA, "is_monotonic": True},
    )


def export(*metrics: pb.Metric) -> ExportMetricsServiceRequest:
    resource = {"attributes": [KeyValue(key="service.instance.id", value=AnyValue(string_value="i-1"))]}
    return ExportMetricsServiceRequest(
        resource_metrics=[{"resource": resource, "scope_metrics": [{"metrics": metrics}]}]
    )


HOSTILE = {
    "status 70000": duration(status=70000),
    "status -1": duration(status=-1),
    "status as text": duration(status="99999"),
    "bucket index beyond Int32": duration(scale=0, offset=2**30),
    "bucket beyond any float": duration(scale=20, offset=2**31 - 2),
    "scale beyond the specification": duration(scale=-2000),
    "count beyond UInt64 once merged": duration(count=2**63, buckets=[2**63]),
    "buckets beyond the count limit": duration(count=1, buckets=[MAX_COUNT + 1]),
    "error count infinite": error_count(float("inf")),
    "error count NaN": error_count(float("nan")),
    "error count beyond UInt64": error_count(1e30),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_each_hostile_point_is_refused_as_partial_success_and_left_out(name: str) -> None:
    request = export(duration(count=2, route="/fine"), HOSTILE[name])
    refused, message = rejected_points(request)
    assert refused == 1, message
    assert [(row.route, row.requests) for row in request_rows(request, "evil")] == [("/fine", 2)]


def test_a_status_that_is_no_number_is_stored_as_0_not_a_crash() -> None:
    request = export(duration(count=2, status=float("inf")), duration(count=1, status="teapot"))
    assert rejected_points(request) == (0, "")
    assert [(row.status, row.requests) for row in request_rows(request, "evil")] == [(0, 3)]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[MetricsServiceStub, DurableQueue]]:
    queue = DurableQueue(tmp_path / "queue")
    keyring = KeyRing(lambda: {hash_key(GOOD_KEY): "good", hash_key(EVIL_KEY): "evil"})
    server, port = start_grpc_server(Receiver(keyring, queue), "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield MetricsServiceStub(channel), queue
    channel.close()
    server.stop(None)
    queue.close()


def totals(ch, app: str) -> dict[tuple[str, int], int]:
    rows = ch.query(
        "SELECT route, status, sum(requests) FROM requests WHERE app = {app:String} GROUP BY ALL", {"app": app}
    ).result_rows
    return {(route, status): n for route, status, n in rows}


def drain(queue: DurableQueue, processor: Processor, timeout_s: float = 30.0) -> None:
    processor.start()
    try:
        deadline = time.monotonic() + timeout_s
        while queue.depth() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        processor.stop()


def test_a_hostile_export_over_grpc_blocks_no_other_app(hub, ch, tmp_path: Path) -> None:
    stub, queue = hub
    good = export(duration(count=5, route="/orders"))
    stub.Export(good, metadata=[("x-tallyhub-app-key", GOOD_KEY)], timeout=10)
    response: ExportMetricsServiceResponse = stub.Export(
        export(duration(count=2, route="/fine"), *HOSTILE.values()), metadata=[("x-tallyhub-app-key", EVIL_KEY)]
    )
    assert response.partial_success.rejected_data_points == len(HOSTILE)
    assert "HTTP status code outside 0..65535" in response.partial_success.error_message
    stub.Export(good, metadata=[("x-tallyhub-app-key", GOOD_KEY)], timeout=10)

    processor = Processor(queue, lambda tables, token: insert_batch(ch, tables, token), tmp_path / "rejected")
    drain(queue, processor)
    assert queue.depth() == 0 and processor.last_error == ""
    assert totals(ch, "good") == {("/orders", 200): 10}
    assert totals(ch, "evil") == {("/fine", 200): 2}
    assert not (tmp_path / "rejected").exists()


def test_values_past_the_receiver_are_set_aside_before_the_insert(ch, tmp_path: Path, monkeypatch) -> None:
    """Should a value slip past the receiver's checks (here: the checks turned off), its record is
    set aside when its rows are encoded, with the reason; the other apps' rows land."""
    monkeypatch.setattr(otlp_points, "out_of_range", lambda *_: "")
    queue = DurableQueue(tmp_path / "queue")
    for app, metric in [
        ("good", duration(count=1, route="/a")),
        ("evil", duration(count=2, status=70000)),
        ("good", duration(count=3, route="/a")),
        ("evil", duration(scale=0, offset=2**30)),
    ]:
        queue.append(KIND_METRICS, app, export(metric).SerializeToString(), time.time_ns())
    processor = Processor(queue, lambda tables, token: insert_batch(ch, tables, token), tmp_path / "rejected")
    assert processor.process(queue.next_batch(100, 1 << 30, wait_s=0))
    assert queue.depth() == 0
    assert totals(ch, "good") == {("/a", 200): 4}
    assert totals(ch, "evil") == {}
    reasons = sorted(path.read_text() for path in (tmp_path / "rejected").glob("*.txt"))
    assert len(reasons) == 2 and all("app: evil" in r and "does not fit its column" in r for r in reasons)


def test_rows_clickhouse_refuses_set_aside_only_their_record(ch, tmp_path: Path) -> None:
    """Rows that ClickHouse itself refuses for good (here: the evil app's rows made unreadable on
    their way, so that ClickHouse answers "Too large string size", code 131): the insert's
    permanent error is bisected down to the records that hold them; the other apps' rows land."""
    queue = DurableQueue(tmp_path / "queue")
    for app, metric in [
        ("good", duration(count=1, route="/a")),
        ("other", duration(count=4, route="/b")),
        ("evil", duration(count=2)),
        ("good", duration(count=3, route="/a")),
        ("evil", duration(count=5)),
    ]:
        queue.append(KIND_METRICS, app, export(metric).SerializeToString(), time.time_ns())
    calls: list[str] = []

    def store(tables, token) -> None:
        calls.append(token)
        requests = tables["requests"]
        corrupted = requests.block.replace(b"\x04evil", b"\xff\xff\xff\xff\x0fevil")
        insert_batch(ch, {**tables, "requests": Encoded(corrupted, requests.rows)}, token)

    processor = Processor(queue, store, tmp_path / "rejected")
    assert processor.process(queue.next_batch(100, 1 << 30, wait_s=0))
    assert queue.depth() == 0
    assert totals(ch, "good") == {("/a", 200): 4}
    assert totals(ch, "other") == {("/b", 200): 4}
    assert totals(ch, "evil") == {}
    reasons = sorted(path.read_text() for path in (tmp_path / "rejected").glob("*.txt"))
    assert len(reasons) == 2 and all("app: evil" in r and "ClickHouse refused its requests rows" in r for r in reasons)
    assert all("Too large string size" in r for r in reasons)
    assert processor.stats.counts()["exports set aside"] == 2

    # A replay of the same batch (the hub died before its acknowledgement) makes the same split:
    # every part's token is seen again, so nothing is stored twice.
    replayed = DurableQueue(tmp_path / "replay")
    for payload, app in [(export(duration(count=1, route="/a")), "good"), (export(duration(count=7)), "evil")]:
        replayed.append(KIND_METRICS, app, payload.SerializeToString(), time.time_ns())
    again = Processor(replayed, store, tmp_path / "rejected-2")
    batch = replayed.next_batch(100, 1 << 30, wait_s=0)
    token = replayed.begin(batch)
    assert again._store(again._convert(batch), token) == 1
    assert again._store(again._convert(batch), token) == 1
    assert totals(ch, "good") == {("/a", 200): 5}


def test_exports_set_aside_are_capped_the_oldest_deleted(ch, tmp_path: Path, monkeypatch) -> None:
    """A client that keeps sending what cannot be stored must not fill the disk."""
    monkeypatch.setattr(store_module, "MAX_SET_ASIDE", 3)
    queue = DurableQueue(tmp_path / "queue")
    for _ in range(5):
        queue.append(KIND_METRICS, "evil", b"\x0a\xff", time.time_ns())  # cannot be decoded
    queue.append(KIND_METRICS, "good", export(duration(count=2, route="/a")).SerializeToString(), time.time_ns())
    processor = Processor(queue, lambda tables, token: insert_batch(ch, tables, token), tmp_path / "rejected")
    assert processor.process(queue.next_batch(100, 1 << 30, wait_s=0))
    kept = sorted(p.name for p in (tmp_path / "rejected").glob("*.bin"))
    assert kept == [f"{seq:020d}.bin" for seq in (3, 4, 5)]  # the newest three
    assert len(list((tmp_path / "rejected").glob("*.txt"))) == 3
    assert processor.stats.counts()["exports set aside, then deleted (over the cap)"] == 2
    assert totals(ch, "good") == {("/a", 200): 2}
