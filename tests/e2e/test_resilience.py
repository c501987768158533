"""The client never loses a batch: the hub killed and restarted under traffic, and an app killed
while the hub is down — real hub, real uvicorn, real signals."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path

import grpc
import httpx
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.instrumentation.aggregator import RequestAggregator

from .conftest import wait_for

EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def stored_requests(hub) -> int:
    ((total,),) = hub.sql("SELECT sum(requests) FROM requests")
    return int(total or 0)


def test_kill_9_and_restarts_of_the_hub_under_traffic_lose_nothing(hub, start_app) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    app = start_app(hub.endpoint, key, OTEL_METRIC_EXPORT_INTERVAL="500")
    sent = 1  # the start-up probe of /items/0
    stop = threading.Event()
    failures: list[BaseException] = []

    def traffic() -> None:
        nonlocal sent
        with httpx.Client(base_url=app.url) as client:
            while not stop.is_set():
                try:
                    assert client.get(f"/items/{sent}").status_code == 200
                except BaseException as exc:  # the app must answer throughout
                    failures.append(exc)
                    return
                sent += 1
                time.sleep(0.005)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        for _ in range(3):
            time.sleep(1.5)  # exports go out and are acknowledged
            assert hub.stop(signal.SIGKILL) == -signal.SIGKILL
            time.sleep(1.5)  # exports fail and stay spooled
            hub.start()
        time.sleep(1)
    finally:
        stop.set()
        sender.join()
    assert not failures, failures
    # everything arrives, once: the backoff is short after brief outages
    wait_for(lambda: stored_requests(hub) >= sent, 60, f"{sent} requests in ClickHouse")
    time.sleep(2)  # and nothing more: no batch is counted twice
    assert stored_requests(hub) == sent
    log = app.log.read_text()
    assert "did not take a batch" in log and "dropped" not in log


def test_an_app_killed_while_the_hub_is_down_sends_its_spool_after_restart(hub, start_app, tmp_path: Path) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    hub.stop()
    spool = tmp_path / "spool"
    env = {"OTEL_METRIC_EXPORT_INTERVAL": "300", "TALLYHUB_SPOOL_DIR": str(spool)}
    app = start_app(hub.endpoint, key, **env)
    with httpx.Client(base_url=app.url) as client:
        for i in range(25):
            assert client.get(f"/items/{i}").status_code == 200
    # every request is collected and spooled (on disk) before the kill
    wait_for(lambda: "did not take a batch" in app.log.read_text(), 30, "a failed delivery")
    time.sleep(1)
    assert list(spool.glob("*.metrics.batch")), list(spool.iterdir())
    app.process.send_signal(signal.SIGKILL)
    assert app.process.wait(10) == -signal.SIGKILL
    hub.start()
    start_app(hub.endpoint, key, **env)  # the next start of the app finds the spool and sends it
    expected = 25 + 2  # and the start-up probe of each run
    wait_for(lambda: stored_requests(hub) >= expected, 60, f"{expected} requests in ClickHouse")
    time.sleep(1)
    assert stored_requests(hub) == expected
    wait_for(lambda: not list(spool.glob("*.batch")), 10, "an empty spool")
    assert len(hub.sql("SELECT DISTINCT instance FROM requests")) == 2


def test_kill_9_during_sustained_ingest_stores_every_acknowledged_point_once(hub) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    sent = 0
    acknowledged = 0
    stop = threading.Event()

    def ingest() -> None:
        """Exports as fast as the hub takes them, each retried until acknowledged (as clients do)."""
        nonlocal sent, acknowledged
        channel = grpc.insecure_channel(f"127.0.0.1:{hub.grpc_port}")
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        i = 0
        while not stop.is_set():
            i += 1
            agg = RequestAggregator(Resource.create({}), InstrumentationScope("load"))
            for _ in range(i % 7 + 1):
                agg.record("GET", f"/r{i % 5}", 200, 0.01, 0, 0, wall_time_s=time.time())
            payload, batch_id = encode_metrics(agg.collect()).SerializeToString(), uuid.uuid4().hex
            sent += i % 7 + 1
            while True:
                try:
                    call(payload, metadata=[("x-tallyhub-app-key", key), ("x-tallyhub-batch-id", batch_id)], timeout=5)
                    acknowledged += i % 7 + 1
                    break
                except grpc.RpcError:
                    time.sleep(0.1)  # the hub is down or restarting
        channel.close()

    loader = threading.Thread(target=ingest)
    loader.start()
    try:
        for _ in range(3):
            time.sleep(1.5)
            assert hub.stop(signal.SIGKILL) == -signal.SIGKILL
            hub.start()
        time.sleep(1)
    finally:
        stop.set()
        loader.join(30)
    assert acknowledged == sent > 0
    wait_for(lambda: stored_requests(hub) >= sent, 60, f"{sent} requests in ClickHouse")
    time.sleep(1)
    assert stored_requests(hub) == sent
