"""Exporting off the request path: a dead hub costs the app nothing but a warning."""

from __future__ import annotations

import logging
import time

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from tallyhub.instrumentation import TallyhubClient
from tallyhub.instrumentation.export_loop import ExportLoop
from tallyhub.instrumentation.starlette import TallyhubMiddleware

from ..conftest import free_port
from .conftest import CapturingExporter, CapturingLogExporter, capturing_client, request_counts


def make_app(client: TallyhubClient) -> TallyhubMiddleware:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    return TallyhubMiddleware(app, client=client)


def test_a_dead_hub_leaves_requests_alone_and_says_so(monkeypatch, caplog) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_TIMEOUT", "1500")
    client = TallyhubClient(endpoint=f"http://127.0.0.1:{free_port()}", app_key="thk_x", export_interval=3600)
    middleware = make_app(client)
    with caplog.at_level(logging.WARNING, logger="tallyhub"), TestClient(middleware) as http:
        for _ in range(20):
            assert http.get("/ping").status_code == 200
        started = time.monotonic()
        assert client.loop.export_once() is True  # handed to the spool: the collection never waits
        assert time.monotonic() - started < 1
        deadline = time.monotonic() + 10
        while "did not take a batch" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)  # the delivery thread tries, fails, keeps the batch
        assert "did not take a batch" in caplog.text and "retried for up to 3600 s" in caplog.text
        assert "metrics" in {batch.kind for batch in client.delivery.spool.batches()}
        assert http.get("/ping").status_code == 200


def test_the_export_thread_folds_the_queued_requests_between_exports() -> None:
    client = capturing_client(export_interval=3600)
    with TestClient(make_app(client)) as http:
        for _ in range(5):
            assert http.get("/ping").status_code == 200
        deadline = time.monotonic() + 10
        while client.aggregator.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not client.aggregator.pending  # folded within FOLD_INTERVAL_S, not kept for the hour
        assert not client.metrics_out.batches
    assert request_counts(*client.metrics_out.batches) == {("GET", "/ping", 200): 5}


def test_the_export_thread_sends_every_interval() -> None:
    client = capturing_client(export_interval=0.2)
    exporter = client.metrics_out
    with TestClient(make_app(client)) as http:
        assert http.get("/ping").status_code == 200
        deadline = time.monotonic() + 10
        while not exporter.batches and time.monotonic() < deadline:
            time.sleep(0.05)
        assert request_counts(*exporter.batches) == {("GET", "/ping", 200): 1}
        assert http.get("/ping").status_code == 200
    # the second request went out with the last export at lifespan shutdown
    assert request_counts(*exporter.batches) == {("GET", "/ping", 200): 2}


def test_the_interval_comes_from_opentelemetry_variables(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "2500")
    assert TallyhubClient(exporter=CapturingExporter()).loop.interval_s == 2.5
    monkeypatch.delenv("OTEL_METRIC_EXPORT_INTERVAL")
    assert TallyhubClient(exporter=CapturingExporter()).loop.interval_s == 60


def test_a_nonsense_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="export interval"):
        ExportLoop(None, None, 0)  # type: ignore[arg-type]


def test_a_forked_child_starts_afresh() -> None:
    """A pre-forking server's worker must not report its parent's requests, and needs its own thread."""
    import json
    import os

    client = capturing_client()
    client.loop.ensure_started()
    client.aggregator.record("GET", "/parent", 200, 0.01, 0, 0, time.time())
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            report = {"running": client.loop.running, "inherited": request_counts(client.aggregator.collect())}
            client.loop.ensure_started()
            report["thread"] = client.loop._thread.is_alive()
            os.write(
                write_end, json.dumps({k: v if not isinstance(v, dict) else len(v) for k, v in report.items()}).encode()
            )
        finally:
            os._exit(0)
    os.close(write_end)
    report = json.loads(os.read(read_end, 4096))
    os.waitpid(pid, 0)
    assert report == {"running": False, "inherited": 0, "thread": True}
    assert request_counts(client.aggregator.collect()) == {("GET", "/parent", 200): 1}  # the parent keeps its own
    client.loop.shutdown()


def test_forking_while_other_threads_record_never_hangs_the_child() -> None:
    import os
    import threading

    client = capturing_client()
    client.start()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            client.record_request("GET", "/x", 200, time.perf_counter(), time.perf_counter(), 0, 0)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        children = []
        for _ in range(20):
            pid = os.fork()
            if pid == 0:  # the child records and collects: it must not wait for a lock it cannot get
                client.record_request("GET", "/child", 200, time.perf_counter(), time.perf_counter(), 0, 0)
                os._exit(0 if request_counts(client.aggregator.collect()) == {("GET", "/child", 200): 1} else 3)
            children.append(pid)
        deadline = time.monotonic() + 20
        for pid in children:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.waitstatus_to_exitcode(status) == 0
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    raise AssertionError("a forked child hung")
                time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    client.loop.shutdown()


def test_shutdown_with_a_dead_hub_is_bounded(monkeypatch) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_TIMEOUT", "30000")
    client = TallyhubClient(endpoint=f"http://127.0.0.1:{free_port()}", export_interval=0.05)
    client.start()
    client.record_request("GET", "/x", 200, time.perf_counter(), time.perf_counter(), 0, 0)
    time.sleep(0.3)  # an export to the dead hub is in flight, retrying
    client.record_request("GET", "/x", 200, time.perf_counter(), time.perf_counter(), 0, 0)
    started = time.monotonic()
    client.shutdown()
    assert time.monotonic() - started < 12  # the final attempt gives up after ~5 s, not the 30 s export timeout


def test_an_exporter_that_cannot_be_made_does_not_reach_the_app(caplog) -> None:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    def broken():
        raise ValueError("OTEL_EXPORTER_OTLP_COMPRESSION: zstd is not supported")

    client = TallyhubClient(exporter=CapturingExporter(), log_exporter=CapturingLogExporter(), export_interval=3600)
    client.loop.transport._make_exporter = broken
    client.loop.transport._make_log_exporter = broken
    with TestClient(TallyhubMiddleware(app, client=client)) as http:
        assert http.get("/ping").status_code == 200
        assert client.loop.export_once() is False
    assert "zstd is not supported" in caplog.text


def test_an_idle_interval_exports_the_uptime_heartbeat() -> None:
    """No request since the last export: the process still says it is up (the hub's last-seen)."""
    client = capturing_client(export_interval=60)
    client.loop.ensure_started()
    assert client.loop.export_once() is True
    client.shutdown()
    names = [m.name for batch in client.metrics_out.batches for m in batch.resource_metrics[0].scope_metrics[0].metrics]
    assert names and set(names) == {"process.uptime", "process.cpu.utilization", "process.memory.usage"}
