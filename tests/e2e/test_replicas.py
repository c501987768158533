"""Two hubs over one ClickHouse, each with its own queue: an export retried against the second
(its acknowledgement from the first lost) is stored once with --exactly-once-across-hubs. On chDB
the two run in sequence over one data directory (the embedded engine takes one process)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import grpc
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.instrumentation.aggregator import RequestAggregator

from .conftest import Hub, wait_for

EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def export(route: str, count: int) -> bytes:
    agg = RequestAggregator(Resource.create({"service.name": "shop"}), InstrumentationScope("test"))
    for _ in range(count):
        agg.record("GET", route, 200, 0.01, 0, 0, wall_time_s=time.time())
    return encode_metrics(agg.collect()).SerializeToString()


def send(hub: Hub, key: str, payload: bytes, batch_id: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        call(payload, metadata=[("x-tallyhub-app-key", key), ("x-tallyhub-batch-id", batch_id)], timeout=10)


def stored(hub: Hub) -> Counter:
    return Counter({r: int(n) for r, n in hub.sql("SELECT route, sum(requests) FROM requests GROUP BY route")})


def test_an_export_retried_against_a_second_hub_is_stored_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    retried = export("/retried", 4)
    first = Hub(data, "--queue-dir", str(tmp_path / "queue-a"), "--exactly-once-across-hubs")
    first.start()
    try:
        key = first.cli("apps", "create", "shop").stdout.strip()
        send(first, key, retried, "batch-1")
        wait_for(lambda: stored(first) == Counter({"/retried": 4}), 30, "the export on the first hub")
    finally:
        first.stop()
    second = Hub(data, "--queue-dir", str(tmp_path / "queue-b"), "--exactly-once-across-hubs")
    second.start()
    try:
        send(second, key, retried, "batch-1")  # the client's retry: the first hub's ack was lost
        send(second, key, export("/after", 1), "batch-2")
        wait_for(lambda: stored(second)["/after"] == 1, 30, "the next export on the second hub")
        assert stored(second) == Counter({"/retried": 4, "/after": 1})
        assert second.sql("SELECT sum(requests) FROM requests_daily_by_endpoint WHERE route = '/retried'") == [["4"]]
    finally:
        second.stop()
