"""The start-up event, sent by the OpenTelemetry SDK's own OTLP log exporter to a real hub process."""

from __future__ import annotations

import time

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub import __version__
from tallyhub.instrumentation.aggregator import RequestAggregator
from tallyhub.instrumentation.introspection import Endpoint, startup_document
from tallyhub.wire import STARTUP_EVENT

from .conftest import wait_for


def test_a_startup_event_lands_in_endpoints_instances_and_openapi(hub) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    resource = Resource.create(
        {
            "service.name": "shop",
            "service.instance.id": "i-e2e",
            "deployment.environment.name": "prod",
            "tallyhub.app": "someone-else",  # ignored: the app is the key's
        }
    )
    scope = InstrumentationScope("tallyhub")
    started_ns = time.time_ns() - 3600 * 10**9  # a process that started an hour ago
    document = startup_document(
        [Endpoint("GET", "/items/{item_id}", "Read an item", "One item, by id."), Endpoint("POST", "/items")],
        {"openapi": "3.1.0", "info": {"title": "Shop", "version": "1.4.2"}, "paths": {}},
        "fastapi 0.165.0",
    )
    event = LogRecord(
        timestamp=started_ns,
        observed_timestamp=started_ns,
        severity_number=SeverityNumber.INFO,
        body=document,
        attributes={"event.name": STARTUP_EVENT},
        event_name=STARTUP_EVENT,
    )
    plain = LogRecord(timestamp=time.time_ns(), severity_number=SeverityNumber.INFO, body="an ordinary log line")
    headers = {"x-tallyhub-app-key": key}
    logs = OTLPLogExporter(endpoint=hub.endpoint, insecure=True, headers=headers, timeout=10)
    metrics = OTLPMetricExporter(endpoint=hub.endpoint, insecure=True, headers=headers, timeout=10)
    try:
        # the ordinary line is refused as partial success, which the exporter counts as delivered
        records = [ReadableLogRecord(r, resource=resource, instrumentation_scope=scope) for r in (event, plain)]
        assert logs.export(records) is LogRecordExportResult.SUCCESS
        agg = RequestAggregator(resource, scope)  # the same process serves a request now
        agg.record("GET", "/items/{item_id}", 200, 0.01, 0, 10, wall_time_s=time.time())
        assert metrics.export(agg.export()) is MetricExportResult.SUCCESS  # with the process's CPU and memory
    finally:
        logs.shutdown()
        metrics.shutdown()

    query = (
        "SELECT (SELECT count() FROM endpoints FINAL), (SELECT count() FROM instances), (SELECT count() FROM requests)"
    )
    wait_for(lambda: hub.sql(query) == [["2", "1", "1"]], 30, "the start-up event and the request in ClickHouse")
    assert hub.sql(
        "SELECT app, env, service, method, route, summary, description, first_seen = last_seen "
        "FROM endpoints FINAL ORDER BY route"
    ) == [
        ["my-api", "prod", "shop", "POST", "/items", "", "", "1"],
        ["my-api", "prod", "shop", "GET", "/items/{item_id}", "Read an item", "One item, by id.", "1"],
    ]
    ((app, instance, framework, tallyhub, pid, uptime_s, started_ms),) = hub.sql(
        "SELECT app, instance, versions['framework'], versions['tallyhub'], pid, uptime_s, "
        "toUnixTimestamp64Milli(started_at) FROM instance_uptime"
    )
    assert (app, instance, framework, tallyhub) == ("my-api", "i-e2e", "fastapi 0.165.0", __version__)
    assert int(pid) > 0 and int(started_ms) == started_ns // 1_000_000
    assert 3540 <= int(uptime_s) <= 3600  # started an hour ago, last seen in this minute
    assert hub.sql("SELECT app, JSONExtractString(document, 'info', 'title') FROM openapi FINAL") == [
        ["my-api", "Shop"]
    ]
    process = "SELECT name, kind, unit, length(attributes), instance, value FROM metrics ORDER BY name"
    wait_for(lambda: len(hub.sql(process)) == 2, 30, "the process's CPU and memory in ClickHouse")
    cpu, memory = hub.sql(process)
    assert cpu[:5] == ["process.cpu.utilization", "gauge", "1", "0", "i-e2e"] and 0 <= float(cpu[5]) <= 1
    assert memory[:5] == ["process.memory.usage", "gauge", "By", "0", "i-e2e"] and float(memory[5]) > 10e6
