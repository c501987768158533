"""The start-up event is sent once per process, in the background, until the hub has it."""

from __future__ import annotations

import json
import os

from opentelemetry.sdk._logs.export import LogRecordExportResult

from tallyhub.instrumentation.introspection import STARTUP_EVENT, Endpoint, startup_document

from .conftest import CapturingLogExporter, capturing_client


class FlakyLogExporter(CapturingLogExporter):
    """Refuses the first ``failures`` exports (a hub that is not up yet)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    def export(self, batch):
        self.attempts += 1
        if self.attempts <= self.failures:
            return LogRecordExportResult.FAILURE
        return super().export(batch)


def test_the_event_is_retried_until_the_hub_takes_it(caplog) -> None:
    client = capturing_client(app_version="9.9")
    exporter = FlakyLogExporter(failures=3)
    client.startup._make_exporter = lambda: exporter
    client.startup.first_backoff_s = 0.01
    client.start(lambda resource: startup_document([Endpoint("GET", "/a")], None, "test 1", resource))
    assert client.startup.delivered.wait(10)
    assert exporter.attempts == 4
    (record,) = exporter.records
    assert record.log_record.event_name == STARTUP_EVENT
    assert record.log_record.attributes["event.name"] == STARTUP_EVENT
    assert record.resource.attributes["service.version"] == "9.9"
    document = json.loads(record.log_record.body)
    assert document["endpoints"] == [{"method": "GET", "route": "/a", "summary": None, "description": None}]
    assert document["versions"]["app"] == "9.9" and document["pid"] == os.getpid()
    assert "did not take the start-up event" in caplog.text  # said once, not at every retry
    assert caplog.text.count("did not take the start-up event") == 1


def test_once_per_process() -> None:
    client = capturing_client()
    calls = []
    for _ in range(3):
        client.start(lambda resource: calls.append(1) or startup_document([], None, None, resource))
    assert client.startup.delivered.wait(10)
    assert calls == [1]


def test_a_failing_description_sends_nothing_and_breaks_nothing(caplog) -> None:
    client = capturing_client()

    def broken(resource):
        raise RuntimeError("the app's routes cannot be listed")

    client.start(broken)
    client.startup._thread.join(5)
    assert client.logs_out.records == []
    assert "describing the app for the start-up event failed" in caplog.text
    assert client.loop.running
