"""The OTLP gRPC receiver over a real loopback channel."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from tallyhub.collector_processor.queue import DurableQueue, QueueFull
from tallyhub.collector_processor.receive.auth import KeyRing, generate_key, hash_key
from tallyhub.collector_processor.receive.receiver import (
    KIND_LOGS,
    KIND_METRICS,
    LOGS_SERVICE,
    METRICS_SERVICE,
    QUEUE_FULL_RETRY_S,
    Receiver,
    start_grpc_server,
)
from tallyhub.instrumentation.sender import classify
from tests.collector_processor import startup_events

KEY = generate_key()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[grpc.Channel, DurableQueue]]:
    queue = DurableQueue(tmp_path / "queue")
    keyring = KeyRing(lambda: {hash_key(KEY): "shop"})
    server, port = start_grpc_server(Receiver(keyring, queue), "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, queue
    channel.close()
    server.stop(None)
    queue.close()


def sample_request() -> ExportMetricsServiceRequest:
    point = pb.ExponentialHistogramDataPoint(
        time_unix_nano=1_790_000_000 * 10**9, count=1, sum=0.1, scale=3, positive={"offset": -27, "bucket_counts": [1]}
    )
    metric = pb.Metric(
        name="http.server.request.duration",
        exponential_histogram={
            "data_points": [point],
            "aggregation_temporality": pb.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA,
        },
    )
    return ExportMetricsServiceRequest(resource_metrics=[{"scope_metrics": [{"metrics": [metric]}]}])


def test_valid_key_queues_the_export_verbatim_under_its_app(hub) -> None:
    channel, queue = hub
    request = sample_request()
    response = MetricsServiceStub(channel).Export(request, metadata=[("x-tallyhub-app-key", KEY)], timeout=5)
    assert not response.HasField("partial_success")
    (record,) = queue.next_batch(10, 1 << 20, wait_s=0)
    assert (record.kind, record.app, record.payload) == (KIND_METRICS, "shop", request.SerializeToString())


def test_bearer_authorization_is_accepted(hub) -> None:
    channel, queue = hub
    MetricsServiceStub(channel).Export(sample_request(), metadata=[("authorization", f"Bearer {KEY}")], timeout=5)
    assert queue.depth() == 1


@pytest.mark.parametrize("metadata", [[], [("x-tallyhub-app-key", "thk_wrong")], [("authorization", "Basic abc")]])
def test_missing_or_wrong_key_is_unauthenticated_and_stores_nothing(hub, metadata) -> None:
    channel, queue = hub
    with pytest.raises(grpc.RpcError) as caught:
        MetricsServiceStub(channel).Export(sample_request(), metadata=metadata, timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "tallyhub apps create" in caught.value.details()
    assert queue.depth() == 0


def test_two_different_keys_are_refused_even_when_both_are_valid(tmp_path: Path) -> None:
    other = generate_key()
    queue = DurableQueue(tmp_path / "queue")
    keyring = KeyRing(lambda: {hash_key(KEY): "shop", hash_key(other): "billing"})
    server, port = start_grpc_server(Receiver(keyring, queue), "127.0.0.1:0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as caught:
            metadata = [("x-tallyhub-app-key", KEY), ("authorization", f"Bearer {other}")]
            MetricsServiceStub(channel).Export(sample_request(), metadata=metadata, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "two different app keys" in caught.value.details()
        assert queue.depth() == 0
    finally:
        server.stop(None)
        queue.close()


def startup_request():
    return startup_events.export(startup_events.log_record())


@pytest.mark.parametrize("service, valid", [(METRICS_SERVICE, sample_request), (LOGS_SERVICE, startup_request)])
@pytest.mark.parametrize("damage", [lambda data: b"\xff\xff\xff", lambda data: data[:-3]], ids=["garbage", "cut"])
def test_malformed_protobuf_is_invalid_argument_and_stores_nothing(hub, service, valid, damage) -> None:
    channel, queue = hub
    export = channel.unary_unary(f"/{service}/Export")  # raw bytes both ways
    data = valid().SerializeToString()
    with pytest.raises(grpc.RpcError) as caught:
        export(damage(data), metadata=[("x-tallyhub-app-key", KEY)], timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"malformed {type(valid()).__name__}" in caught.value.details()
    assert queue.depth() == 0
    # the hub still serves the next, valid export
    export(data, metadata=[("x-tallyhub-app-key", KEY)], timeout=5)
    assert queue.depth() == 1


def test_metrics_it_cannot_store_get_partial_success(hub) -> None:
    channel, queue = hub
    request = sample_request()
    attributes = [{"key": f"k{i}", "value": {"int_value": i}} for i in range(200)]
    request.resource_metrics[0].scope_metrics[0].metrics.append(
        pb.Metric(
            name="jvm.threads",
            gauge={"data_points": [{"as_int": 3, "time_unix_nano": 1_790_000_000 * 10**9, "attributes": attributes}]},
        )
    )
    response = MetricsServiceStub(channel).Export(request, metadata=[("x-tallyhub-app-key", KEY)], timeout=5)
    assert response.partial_success.rejected_data_points == 1
    assert "more than 128 attributes" in response.partial_success.error_message
    assert queue.depth() == 1  # the HTTP metrics in it are kept


def test_an_empty_export_is_accepted_and_not_queued(hub) -> None:
    channel, queue = hub
    MetricsServiceStub(channel).Export(ExportMetricsServiceRequest(), metadata=[("x-tallyhub-app-key", KEY)], timeout=5)
    assert queue.depth() == 0


def test_a_full_disk_answers_unavailable(hub, monkeypatch) -> None:
    channel, queue = hub

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(queue, "append", no_space)
    with pytest.raises(grpc.RpcError) as caught:
        MetricsServiceStub(channel).Export(sample_request(), metadata=[("x-tallyhub-app-key", KEY)], timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_an_oversized_message_is_resource_exhausted(hub) -> None:
    channel, queue = hub
    request = sample_request()
    request.resource_metrics[0].resource.attributes.add(key="huge", value={"string_value": "x" * (17 << 20)})
    with pytest.raises(grpc.RpcError) as caught:
        MetricsServiceStub(channel).Export(request, metadata=[("x-tallyhub-app-key", KEY)], timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert queue.depth() == 0


# -- logs: the start-up event ----------------------------------------------------------------


def export_logs(channel: grpc.Channel, request, metadata=(("x-tallyhub-app-key", KEY),)) -> ExportLogsServiceResponse:
    return LogsServiceStub(channel).Export(request, metadata=list(metadata), timeout=5)


def test_a_startup_event_is_queued_verbatim_with_the_logs_kind(hub) -> None:
    channel, queue = hub
    request = startup_request()
    assert not export_logs(channel, request).HasField("partial_success")
    (record,) = queue.next_batch(10, 1 << 20, wait_s=0)
    assert (record.kind, record.app, record.payload) == (KIND_LOGS, "shop", request.SerializeToString())


def test_a_startup_event_with_a_wrong_key_is_unauthenticated(hub) -> None:
    channel, queue = hub
    with pytest.raises(grpc.RpcError) as caught:
        export_logs(channel, startup_request(), [("x-tallyhub-app-key", "thk_no")])
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert queue.depth() == 0


def test_other_log_records_get_partial_success(hub) -> None:
    channel, queue = hub
    plain = startup_events.log_record(event_name=None, text="GET /items 200")
    response = export_logs(channel, startup_events.export(plain, startup_events.log_record()))
    assert response.partial_success.rejected_log_records == 1
    assert "only tallyhub.startup and tallyhub.request events" in response.partial_success.error_message
    assert queue.depth() == 1  # the start-up event in it is kept

    response = export_logs(channel, startup_events.export(plain))
    assert response.partial_success.rejected_log_records == 1
    assert queue.depth() == 1  # nothing the hub stores: not queued


def test_a_batch_sent_twice_is_queued_once(hub) -> None:
    channel, queue = hub
    export = MetricsServiceStub(channel).Export
    metadata = [("x-tallyhub-app-key", KEY), ("x-tallyhub-batch-id", "0f3a")]
    for _ in range(3):  # the client never got the acknowledgement, and sends it again
        assert export(sample_request(), metadata=metadata, timeout=5) == ExportMetricsServiceResponse()
    (record,) = queue.next_batch(10, 1 << 20, wait_s=0)
    assert record.batch_id == "0f3a"


@pytest.mark.parametrize("batch_id", ["", "x" * 65, "a b", "a/b"])
def test_a_malformed_batch_id_is_invalid_argument(hub, batch_id: str) -> None:
    channel, queue = hub
    metadata = [("x-tallyhub-app-key", KEY), ("x-tallyhub-batch-id", batch_id)]
    with pytest.raises(grpc.RpcError) as error:
        MetricsServiceStub(channel).Export(sample_request(), metadata=metadata, timeout=5)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "x-tallyhub-batch-id" in error.value.details()
    assert queue.depth() == 0


def test_a_full_queue_is_unavailable_with_a_retry_delay(hub, monkeypatch) -> None:
    channel, queue = hub

    def full(*args, **kwargs):
        raise QueueFull("the queue holds 2 GiB")

    monkeypatch.setattr(queue, "append", full)
    with pytest.raises(grpc.RpcError) as error:
        MetricsServiceStub(channel).Export(sample_request(), metadata=[("x-tallyhub-app-key", KEY)], timeout=5)
    assert error.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "queue is full" in error.value.details()
    outcome = classify(error.value)  # what tallyhub's client makes of it
    assert (outcome.retry_after_s, outcome.permanent) == (QUEUE_FULL_RETRY_S, False)


def test_the_standard_health_service_says_serving(hub) -> None:
    channel, _ = hub
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    for service in ("", "opentelemetry.proto.collector.metrics.v1.MetricsService"):
        assert check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as error:
        check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_maximum_connection_age_moves_clients_to_new_connections(tmp_path: Path) -> None:
    """Behind a plain Kubernetes Service the connection, not the call, is balanced: closing it after
    a while lets long-lived clients reach new replicas. Calls keep working across the reconnection."""
    queue = DurableQueue(tmp_path / "queue")
    server, port = start_grpc_server(
        Receiver(KeyRing(lambda: {hash_key(KEY): "shop"}), queue), "127.0.0.1:0", max_connection_age_s=0.5
    )
    states: list[grpc.ChannelConnectivity] = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            channel.subscribe(states.append, try_to_connect=False)
            stub = MetricsServiceStub(channel)
            metadata = (("x-tallyhub-app-key", KEY),)
            stub.Export(sample_request(), metadata=metadata, timeout=5)
            deadline = time.monotonic() + 10
            while states.count(grpc.ChannelConnectivity.READY) < 2 and time.monotonic() < deadline:
                stub.Export(sample_request(), metadata=metadata, timeout=5)
                time.sleep(0.2)
        assert states.count(grpc.ChannelConnectivity.READY) >= 2, states  # connected, closed by age, again
        assert queue.depth() >= 3
    finally:
        server.stop(None)
        queue.close()
