"""Logged requests (OTLP log records) → request_log rows: pure conversion."""

from __future__ import annotations

import uuid

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

from tallyhub.collector_processor.convert.request_log import (
    MAX_BODY_CHARS,
    request_event_count,
    request_log_rows,
    without_request_events,
)
from tallyhub.storage.writer import REQUEST_LOG_COLUMNS

NOW_NS = 1_780_000_000 * 10**9


def value(v: object) -> AnyValue:
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=s) for s in v]))
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


def export(*records: dict, event: str = "tallyhub.request", time_ns: int = NOW_NS - 10**9) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    for k, v in {"service.name": "shop", "service.instance.id": "i-1", "deployment.environment.name": "prod"}.items():
        resource_logs.resource.attributes.append(KeyValue(key=k, value=value(v)))
    scope_logs = resource_logs.scope_logs.add()
    for attributes in records:
        record = scope_logs.log_records.add(time_unix_nano=time_ns, event_name=event)
        for k, v in attributes.items():
            record.attributes.append(KeyValue(key=k, value=value(v)))
    return request


def test_a_logged_request_becomes_one_row_of_the_keys_app() -> None:
    rid = str(uuid.uuid4())
    request = export(
        {
            "tallyhub.request.id": rid,
            "http.request.method": "POST",
            "url.path": "/orders",
            "url.query": "page=2",
            "http.response.status_code": 201,
            "http.server.request.duration": 0.0125,
            "http.request.header.content-type": ["application/json"],
            "http.request.header.accept": ["a", "b"],
            "tallyhub.request.body": '{"n": 1}',
            "tallyhub.request.log_lines": ["INFO shop: created"],
            "tallyhub.app": "someone-else",
        }
    )
    [row] = request_log_rows(request, "my-api", NOW_NS)
    assert (row.app, row.env, row.service, row.instance) == ("my-api", "prod", "shop", "i-1")
    assert (str(row.request_id), row.method, row.url_path, row.url_query, row.status) == (
        rid,
        "POST",
        "/orders",
        "page=2",
        201,
    )
    assert row.duration_ms == 12.5
    assert row.request_headers == {"content-type": "application/json", "accept": "a, b"}
    assert row.request_body == '{"n": 1}' and row.log_lines == ["INFO shop: created"]
    assert len(row.values()) == len(REQUEST_LOG_COLUMNS)


def test_odd_records_are_bounded_and_a_missing_id_is_the_same_for_the_same_record() -> None:
    request = export({"tallyhub.request.body": "x" * (MAX_BODY_CHARS + 5), "http.response.status_code": "oops"},
                     time_ns=NOW_NS + 3600 * 10**9)  # fmt: skip
    [row] = request_log_rows(request, "my-api", NOW_NS)
    assert len(row.request_body) == MAX_BODY_CHARS and row.request_body_truncated
    assert row.status == 0 and row.time.timestamp() == NOW_NS / 1e9  # a clock an hour ahead: received time
    assert request_log_rows(request, "my-api", NOW_NS)[0].request_id == row.request_id


def test_only_request_events_and_a_quota_keeps_the_first_ones() -> None:
    request = export({"url.path": "/a"}, {"url.path": "/b"}, {"url.path": "/c"})
    startup = export({"x": 1}, event="tallyhub.startup")
    request.resource_logs.extend(startup.resource_logs)
    assert request_event_count(request) == 3
    kept = without_request_events(request, keep=1)
    assert [r.url_path for r in request_log_rows(kept, "my-api", NOW_NS)] == ["/a"]
    assert request_event_count(kept) == 1 and len(kept.resource_logs) == 2  # the start-up event stays
