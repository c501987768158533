"""The start-up event is built once per process, in the background, and spooled until the hub has it."""

from __future__ import annotations

import json
import logging
import os
import time

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tallyhub.collector_processor.receive.receiver import KIND_LOGS
from tallyhub.instrumentation.client import TallyhubClient
from tallyhub.instrumentation.introspection import Endpoint, startup_document
from tallyhub.wire import STARTUP_EVENT

from .conftest import KEY, Hub, capturing_client


def test_the_event_is_spooled_until_the_hub_takes_it(hub: Hub, caplog) -> None:
    client = TallyhubClient(endpoint=hub.endpoint, app_key=KEY, app_version="9.9", export_interval=3600)
    with caplog.at_level(logging.WARNING, logger="tallyhub"):
        client.start(lambda resource: startup_document([Endpoint("GET", "/a")], None, "test 1", resource))
        assert client.startup.sent.wait(10)
        assert client.delivery.deliver_due(ignore_backoff=True) is False  # the hub is not up yet
    assert "did not take a batch" in caplog.text
    hub.up()
    deadline = time.monotonic() + 10
    while not client.delivery.deliver_due(ignore_backoff=True):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (queued,) = hub.queue.next_batch(10, 1 << 20, wait_s=0)
    assert queued.kind == KIND_LOGS and queued.app == "shop"
    (record,) = ExportLogsServiceRequest.FromString(queued.payload).resource_logs[0].scope_logs[0].log_records
    assert record.event_name == STARTUP_EVENT
    document = json.loads(record.body.string_value)
    assert document["endpoints"] == [{"method": "GET", "route": "/a", "summary": None, "description": None}]
    assert document["versions"]["app"] == "9.9" and document["pid"] == os.getpid()
    client.shutdown()


def test_once_per_process() -> None:
    client = capturing_client()
    calls = []
    for _ in range(3):
        client.start(lambda resource: calls.append(1) or startup_document([], None, None, resource))
    assert client.startup.sent.wait(10)
    assert calls == [1]


def test_a_failing_description_sends_nothing_and_breaks_nothing(caplog) -> None:
    client = capturing_client()

    def broken(resource):
        raise RuntimeError("the app's routes cannot be listed")

    client.start(broken)
    client.startup.join(5)
    assert client.logs_out.records == []
    assert "describing the app for the start-up event failed" in caplog.text
    assert client.loop.running
