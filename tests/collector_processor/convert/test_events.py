"""Start-up events (OTLP logs) → endpoints, instances and openapi rows: pure conversion."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValueList
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.collector_processor.convert.events import (
    MAX_ENDPOINTS,
    MAX_OPENAPI_BYTES,
    EndpointRow,
    InstanceRow,
    OpenApiRow,
    event_rows,
    has_stored_event,
    latest_documents,
    rejected_log_records,
)
from tallyhub.instrumentation import introspection
from tallyhub.storage.writer import ENDPOINT_COLUMNS, INSTANCE_COLUMNS, OPENAPI_COLUMNS
from tallyhub.wire import STARTUP_EVENT
from tests.collector_processor.startup_events import OPENAPI, T0, T0_NS, VERSIONS, body, export, log_record

RECEIVED_NS = T0_NS + 2_500_000_000
RECEIVED = T0 + dt.timedelta(seconds=2.5)


def test_a_startup_event_becomes_endpoint_instance_and_openapi_rows_of_the_keys_app() -> None:
    request = export(
        log_record(),
        resource={
            "service.name": "shop",
            "service.instance.id": "i-1",
            "deployment.environment.name": "prod",
            "tallyhub.app": "someone-else",
        },
    )
    rows = event_rows(request, "my-api", RECEIVED_NS)
    assert rows.endpoints == [
        EndpointRow("my-api", "prod", "shop", "GET", "/items/{item_id}", "Read an item", "One item, by id.", T0),
        EndpointRow("my-api", "prod", "shop", "POST", "/items", "Create an item", "", T0),
    ]
    assert rows.instances == [InstanceRow("my-api", "prod", "shop", "i-1", "web-1", 4242, VERSIONS, T0, RECEIVED)]
    assert rows.openapi == [OpenApiRow("my-api", "prod", "shop", "i-1", T0, RECEIVED, OPENAPI)]
    assert rows.warnings == []


def test_rows_match_the_writers_columns() -> None:
    rows = event_rows(export(log_record()), "my-api", RECEIVED_NS)
    endpoint = rows.endpoints[0].values()
    assert len(endpoint) == len(ENDPOINT_COLUMNS)
    assert endpoint[ENDPOINT_COLUMNS.index("latest")] == (T0, "shop", "Read an item", "One item, by id.")
    assert [f.name for f in dataclasses.fields(InstanceRow)] == list(INSTANCE_COLUMNS)
    assert [f.name for f in dataclasses.fields(OpenApiRow)] == list(OPENAPI_COLUMNS)


def test_the_clients_own_document_and_sdk_encoding_are_understood() -> None:
    document = introspection.startup_document(
        [introspection.Endpoint("GET", "/items/{item_id}", "Read an item")], {"openapi": "3.1.0"}, "fastapi 0.1"
    )
    record = LogRecord(
        timestamp=T0_NS,
        body=document,
        attributes={"event.name": STARTUP_EVENT},
        event_name=STARTUP_EVENT,
    )
    request = encode_logs(
        [ReadableLogRecord(record, Resource.create({"service.name": "shop"}), InstrumentationScope("t"))]
    )
    rows = event_rows(request, "my-api", RECEIVED_NS)
    assert [(e.method, e.route, e.summary) for e in rows.endpoints] == [("GET", "/items/{item_id}", "Read an item")]
    (instance,) = rows.instances
    assert instance.versions["framework"] == "fastapi 0.1" and instance.pid > 0 and instance.host
    assert [json.loads(o.document) for o in rows.openapi] == [{"openapi": "3.1.0"}]


def test_other_log_records_are_ignored_and_counted_as_rejected() -> None:
    request = export(
        log_record(event_name=None, text="GET /items 200"),
        log_record(event_name="browser.page_view"),
        log_record(),
    )
    assert has_stored_event(request)
    rejected, message = rejected_log_records(request)
    assert rejected == 2
    assert "(no event name), browser.page_view" in message and "tallyhub.startup" in message
    rows = event_rows(request, "my-api", RECEIVED_NS)
    assert len(rows.instances) == 1 and len(rows.endpoints) == 2

    only_logs = export(log_record(event_name=None, text="hello"))
    assert not has_stored_event(only_logs)
    assert rejected_log_records(only_logs)[0] == 1
    assert event_rows(only_logs, "my-api", RECEIVED_NS).instances == []


def test_the_event_name_attribute_alone_is_enough() -> None:
    record = log_record()
    record.event_name = ""
    assert event_rows(export(record), "my-api", RECEIVED_NS).instances[0].instance == "i-1"
    assert rejected_log_records(export(record))[0] == 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "Expecting value"),
        ("[1, 2]", "JSON object"),
        (body(endpoints={"GET": "/items"}), "endpoints must be a list"),
        (body(endpoints=["GET /items"]), "endpoints[0] must be an object"),
        (body(endpoints=[{"method": "GET"}]), "route must be a non-empty string"),
        (body(endpoints=[{"method": "GET", "route": "/a", "summary": 3}]), "summary must be a string"),
        (body(openapi={"openapi": "3.1.0"}), "openapi must be a JSON string"),
        (body(versions=["3.11"]), "versions must be an object"),
        (body(pid="4242"), "pid must be a process id"),
        (body(pid=-1), "pid must be a process id"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_a_malformed_body_raises_value_error(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=r"log record 0: malformed tallyhub\.startup body") as caught:
        event_rows(export(log_record(text=text)), "my-api", RECEIVED_NS)
    assert reason in str(caught.value)


def test_a_body_that_is_not_a_string_is_malformed() -> None:
    record = log_record()
    record.body.CopyFrom(AnyValue(kvlist_value=KeyValueList()))
    with pytest.raises(ValueError, match="JSON string, not kvlist_value"):
        event_rows(export(record), "my-api", RECEIVED_NS)


def test_a_missing_or_future_time_is_the_receipt_time() -> None:
    for time_ns in (0, RECEIVED_NS + 3600 * 10**9):
        rows = event_rows(export(log_record(time_ns=time_ns)), "my-api", RECEIVED_NS)
        assert rows.instances[0].started_at == RECEIVED
        assert rows.endpoints[0].seen == RECEIVED


def test_limits_keep_what_fits_and_say_what_was_left_out() -> None:
    many = [{"method": "GET", "route": f"/r{i}"} for i in range(MAX_ENDPOINTS + 10)]
    huge = "x" * (MAX_OPENAPI_BYTES + 1)
    long_text = body(
        endpoints=[*many[:1], many[0], *many[1:]],
        openapi=huge,
        host="h" * 1000,
        versions={f"v{i}": "9" * 1000 for i in range(100)},
    )
    rows = event_rows(export(log_record(text=long_text)), "my-api", RECEIVED_NS)
    assert [e.route for e in rows.endpoints] == [f"/r{i}" for i in range(MAX_ENDPOINTS)]  # duplicates once
    assert rows.openapi == []
    (instance,) = rows.instances
    assert len(instance.host) == 256
    assert len(instance.versions) == 64 and {len(v) for v in instance.versions.values()} == {256}
    assert len(rows.warnings) == 2
    assert f"only the first {MAX_ENDPOINTS}" in rows.warnings[0]
    assert "OpenAPI document of" in rows.warnings[1]


def test_strings_are_clipped_and_made_valid_utf8() -> None:
    text = body(endpoints=[{"method": "GET", "route": "/a", "summary": "s" * 5000, "description": "bad \ud800 x"}])
    (endpoint,) = event_rows(export(log_record(text=text)), "my-api", RECEIVED_NS).endpoints
    assert len(endpoint.summary) == 1024
    assert endpoint.description == "bad ? x"


def test_latest_documents_keeps_one_per_app_and_env() -> None:
    def doc(app: str, env: str, minutes: int) -> OpenApiRow:
        at = T0 + dt.timedelta(minutes=minutes)
        return OpenApiRow(app, env, "shop", f"i-{minutes}", at, at, f"{app}/{env}@{minutes}")

    rows = [doc("a", "prod", 2), doc("a", "prod", 5), doc("a", "prod", 1), doc("a", "dev", 0), doc("b", "prod", 3)]
    assert sorted(r.document for r in latest_documents(rows)) == ["a/dev@0", "a/prod@5", "b/prod@3"]
