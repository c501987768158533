"""Delivery to a real hub receiver over loopback gRPC, with a controllable clock: outages inside
and beyond the retry window, lost acknowledgements, permanent refusals, the server's RetryInfo."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.instrumentation.aggregator import RequestAggregator
from tallyhub.instrumentation.delivery import Delivery
from tallyhub.instrumentation.sender import GrpcSender
from tallyhub.instrumentation.spool import DiskSpool, MemorySpool
from tallyhub.instrumentation.transport import SpoolTransport

from .conftest import KEY, Hub

T0 = 1_790_000_000 * 10**9  # a fixed wall-clock start, in ns
MINUTE = 60 * 10**9
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def delivery(clock: Clock, endpoint: str, key: str = KEY, spool=None) -> Delivery:
    return Delivery(
        spool or MemorySpool(), lambda: GrpcSender(endpoint, {"x-tallyhub-app-key": key}, timeout_s=5), clock=clock
    )


def collect_minutes(clock: Clock, transport: SpoolTransport, minutes: int, per_minute: int, step: int = MINUTE) -> None:
    """``per_minute`` requests in each of ``minutes`` intervals of ``step`` ns, collected at each one's end."""
    aggregator = RequestAggregator(Resource.create({}), InstrumentationScope("tallyhub"), clock)
    for _ in range(minutes):
        for i in range(per_minute):
            aggregator.record("GET", "/items/{id}", 200, 0.01, 0, 10, clock.now / 1e9 + i * 0.1)
        clock.now += step
        transport.send_metrics(aggregator.collect())
        transport.delivery.deliver_due()  # the delivery thread's attempt: fails while the hub is down


def deliver_until(d: Delivery, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Attempts until ``done()`` (a channel reconnects within ~2 s of the hub's return)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "not delivered"
        d.deliver_due(ignore_backoff=True)
        time.sleep(0.05)


@pytest.mark.parametrize(
    "outage_minutes, lost_batches", [(59, 0), (61, 1)], ids=["59 minutes: all arrive", "61 minutes: 1 dropped"]
)
def test_an_outage_is_bridged_up_to_the_retry_window(hub: Hub, outage_minutes: int, lost_batches: int, caplog) -> None:
    clock = Clock()
    d = delivery(clock, hub.endpoint)
    collect_minutes(clock, SpoolTransport(d), minutes=outage_minutes, per_minute=10)  # the hub is down throughout
    assert d.delivered == 0 and len(list(d.spool.batches())) == outage_minutes
    hub.up()
    # Batches were collected at the end of minutes 1 .. outage_minutes; the hub is back 15 s after
    # the last: the batch of minute 1 is then 60:15 old after a 61-minute outage, over the window.
    clock.now = T0 + outage_minutes * MINUTE + 15 * 10**9
    with caplog.at_level(logging.WARNING, logger="tallyhub"):
        deliver_until(d, lambda: not list(d.spool.batches()))
    assert hub.requests() == 10 * (outage_minutes - lost_batches)  # exact: nothing twice, nothing else lost
    assert d.delivered == outage_minutes - lost_batches
    if lost_batches:
        ((reason, (batches, points)),) = d.dropped.items()
        assert (batches, points) == (lost_batches, 3 * lost_batches)  # 3 metrics, 1 series each
        assert "retry window" in reason
        assert f"dropped {lost_batches} batch(es), {3 * lost_batches} data points" in caplog.text
    else:
        assert d.dropped == {}


class LosingProxy:
    """Forwards exports to the hub, then tells the client it failed (the acknowledgement is lost),
    ``losses`` times."""

    def __init__(self, upstream: str, losses: int) -> None:
        self.losses = losses
        self.forwarded = 0
        self.channel = grpc.insecure_channel(upstream)
        call = self.channel.unary_unary(METRICS_EXPORT, request_serializer=None, response_deserializer=None)

        def export(data: bytes, context: grpc.ServicerContext) -> bytes:
            response = call(data, metadata=context.invocation_metadata(), timeout=5)
            self.forwarded += 1
            if self.losses:
                self.losses -= 1
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset (injected)")
            return response

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.metrics.v1.MetricsService",
            {"Export": grpc.unary_unary_rpc_method_handler(export)},
        )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers([handler])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def close(self) -> None:
        self.server.stop(None)
        self.channel.close()


def test_a_lost_acknowledgement_is_not_counted_twice(hub: Hub) -> None:
    hub.up()
    proxy = LosingProxy(f"127.0.0.1:{hub.port}", losses=2)
    try:
        clock = Clock()
        d = delivery(clock, f"http://127.0.0.1:{proxy.port}")
        collect_minutes(clock, SpoolTransport(d), minutes=1, per_minute=7)  # stored; acknowledgement lost
        assert d.delivered == 0 and proxy.forwarded == 1
        deliver_until(d, lambda: d.delivered == 1)
        assert proxy.forwarded == 3  # the hub got the same batch three times
        assert hub.requests() == 7
    finally:
        proxy.close()


def test_a_wrong_key_is_refused_for_good_and_logged_with_what_to_do(hub: Hub, caplog) -> None:
    hub.up()
    clock = Clock()
    d = delivery(clock, hub.endpoint, key="thk_wrong")
    with caplog.at_level(logging.ERROR, logger="tallyhub"):
        collect_minutes(clock, SpoolTransport(d), minutes=3, per_minute=1, step=MINUTE // 4)
    assert list(d.spool.batches()) == []  # not retried forever
    assert d.dropped == {"refused by the hub": [3, 9]}
    assert "UNAUTHENTICATED" in caplog.text and "check the app key" in caplog.text
    assert caplog.text.count("refused a batch for good") == 1  # once a minute, not per batch
    assert hub.requests() == 0


def test_the_servers_retry_info_is_honoured(tmp_path: Path) -> None:
    delays = {"with": 7.5, "without": None}
    calls: list[str] = []

    def export(data: bytes, context: grpc.ServicerContext) -> bytes:
        case = "with" if len(calls) == 0 else "without"
        calls.append(case)
        if delays[case] is not None:
            info = RetryInfo(retry_delay=Duration(seconds=7, nanos=500_000_000))
            context.set_trailing_metadata([("google.rpc.retryinfo-bin", info.SerializeToString())])
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.metrics.v1.MetricsService",
                {"Export": grpc.unary_unary_rpc_method_handler(export)},
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        clock = Clock()
        d = delivery(clock, f"http://127.0.0.1:{port}")
        collect_minutes(clock, SpoolTransport(d), minutes=1, per_minute=1)
        assert d.next_attempt_ns == clock.now + 7_500_000_000  # RESOURCE_EXHAUSTED + RetryInfo: retry then
        assert len(list(d.spool.batches())) == 1
        clock.now = d.next_attempt_ns
        assert d.deliver_due()  # without RetryInfo it is permanent (an oversized message, say)
        assert list(d.spool.batches()) == [] and d.dropped == {"refused by the hub": [1, 3]}
    finally:
        server.stop(None)


def test_a_disk_spool_shared_by_two_workers_delivers_each_batch_once(hub: Hub, tmp_path: Path) -> None:
    clock = Clock()
    spool_dir = tmp_path / "spool"
    first, second = delivery(clock, hub.endpoint, spool=DiskSpool(spool_dir)), None
    collect_minutes(clock, SpoolTransport(first), minutes=3, per_minute=5)  # worker 1, hub down
    second = delivery(clock, hub.endpoint, spool=DiskSpool(spool_dir))
    collect_minutes(clock, SpoolTransport(second), minutes=2, per_minute=5)  # worker 2, same directory
    assert len(list(spool_dir.glob("*.batch"))) == 5
    hub.up()
    deliver_until(second, lambda: not list(spool_dir.glob("*.batch")))  # the second sends the first's too
    first.deliver_due(ignore_backoff=True)  # finds nothing left
    assert (first.delivered, second.delivered) == (0, 5)
    assert hub.requests() == 25
