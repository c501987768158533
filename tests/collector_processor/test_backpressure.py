"""ClickHouse away for a while (faults injected at the writer): the queue absorbs, pushes back
with UNAVAILABLE + RetryInfo when full, and everything lands exactly once when it returns."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import grpc
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.auth import KeyRing, generate_key, hash_key
from tallyhub.collector_processor.receive.receiver import Receiver, start_grpc_server
from tallyhub.collector_processor.store import Processor
from tallyhub.instrumentation.aggregator import RequestAggregator
from tallyhub.instrumentation.sender import classify
from tallyhub.storage.writer import insert_batch

KEY = generate_key()
EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


class Writer:
    """The real insert into chDB, failing while ``down`` (ClickHouse unavailable)."""

    def __init__(self, ch) -> None:
        self.ch = ch
        self.down = threading.Event()
        self.failures = 0

    def __call__(self, tables, token) -> None:
        if self.down.is_set():
            self.failures += 1
            raise ConnectionError("ClickHouse is unavailable (injected)")
        insert_batch(self.ch, tables, token)


def export(requests: int) -> bytes:
    agg = RequestAggregator(Resource.create({}), InstrumentationScope("test"))
    for _ in range(requests):
        agg.record("GET", "/items/{id}", 200, 0.01, 0, 10, wall_time_s=time.time())
    return encode_metrics(agg.collect()).SerializeToString()


def test_an_outage_is_absorbed_then_pushed_back_then_recovered_without_loss(ch, tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "queue", segment_bytes=4096, max_bytes=16 * 1024)
    writer = Writer(ch)
    processor = Processor(queue, writer, tmp_path / "rejected", max_records=20)
    server, port = start_grpc_server(Receiver(KeyRing(lambda: {hash_key(KEY): "shop"}), queue), "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
    writer.down.set()
    processor.start()
    pushed_back = []
    sent = 0
    try:
        for i in range(80):  # each export is retried until the hub acknowledges it, as clients do
            payload, batch_id = export(i % 5 + 1), uuid.uuid4().hex
            while True:
                try:
                    call(payload, metadata=[("x-tallyhub-app-key", KEY), ("x-tallyhub-batch-id", batch_id)], timeout=10)
                    break
                except grpc.RpcError as error:
                    outcome = classify(error)
                    assert error.code() is grpc.StatusCode.UNAVAILABLE and outcome.retry_after_s == 5.0
                    pushed_back.append(i)
                    writer.down.clear()  # ClickHouse comes back; the hub catches up
                    time.sleep(0.2)
            sent += i % 5 + 1
        assert pushed_back, "the queue never filled"
        assert writer.failures > 0  # inserts were tried and failed while it was down
        deadline = time.monotonic() + 30
        while queue.depth() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queue.depth() == 0
    finally:
        processor.stop()
        channel.close()
        server.stop(None)
        queue.close()
    assert ch.query("SELECT sum(requests) FROM requests").result_rows == [(sent,)]
