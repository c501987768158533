"""The OTLP gRPC receiver over a real loopback channel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb

from tallyhub.collector_processor.auth import KeyRing, generate_key, hash_key
from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receiver import KIND_METRICS, METRICS_SERVICE, MetricsReceiver, start_grpc_server

KEY = generate_key()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[grpc.Channel, DurableQueue]]:
    queue = DurableQueue(tmp_path / "queue")
    keyring = KeyRing(lambda: {hash_key(KEY): "shop"})
    server, port = start_grpc_server(MetricsReceiver(keyring, queue), "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, queue
    channel.close()
    server.stop(None)
    queue.close()


def sample_request() -> ExportMetricsServiceRequest:
    point = pb.ExponentialHistogramDataPoint(count=1, sum=0.1, scale=3, positive={"offset": -27, "bucket_counts": [1]})
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


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", sample_request().SerializeToString()[:-3]])
def test_malformed_protobuf_is_invalid_argument_and_stores_nothing(hub, garbage: bytes) -> None:
    channel, queue = hub
    export = channel.unary_unary(
        f"/{METRICS_SERVICE}/Export",
        request_serializer=None,
        response_deserializer=ExportMetricsServiceResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as caught:
        export(garbage, metadata=[("x-tallyhub-app-key", KEY)], timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert queue.depth() == 0
    # the hub still serves the next, valid export
    MetricsServiceStub(channel).Export(sample_request(), metadata=[("x-tallyhub-app-key", KEY)], timeout=5)
    assert queue.depth() == 1


def test_metrics_it_cannot_store_get_partial_success(hub) -> None:
    channel, queue = hub
    request = sample_request()
    request.resource_metrics[0].scope_metrics[0].metrics.append(
        pb.Metric(name="jvm.threads", gauge={"data_points": [{"as_int": 3}]})
    )
    response = MetricsServiceStub(channel).Export(request, metadata=[("x-tallyhub-app-key", KEY)], timeout=5)
    assert response.partial_success.rejected_data_points == 1
    assert "jvm.threads" in response.partial_success.error_message
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
