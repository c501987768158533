"""OTLP log records of the request log (event ``tallyhub.request``) → rows of ``request_log``.

Pure functions: no I/O, no clock. The client masks before it sends (``instrumentation/request_log``);
the hub keeps what it is given, cut to the limits below, for the app it verified from the key (an
``app`` attribute a client sends is ignored, as everywhere). Attribute names are those of
``tallyhub.wire``: the semantic conventions' where they exist, so another SDK's log records that
carry them (with ``event_name`` ``tallyhub.request``) are stored the same way.

A record without a request id (another SDK's) gets one derived from its bytes: sent again after a
lost acknowledgement, it is the same row, which ClickHouse's deduplication drops.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tallyhub.collector_processor.convert.points import attribute_map
from tallyhub.wire import (
    CLIENT_ADDRESS,
    CONSUMER_ID,
    DURATION,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
    METHOD,
    REQUEST_BODY,
    REQUEST_BODY_SIZE,
    REQUEST_BODY_TRUNCATED,
    REQUEST_EVENT,
    REQUEST_HEADER_PREFIX,
    REQUEST_ID,
    REQUEST_LOG_LINES,
    RESPONSE_BODY,
    RESPONSE_BODY_SIZE,
    RESPONSE_BODY_TRUNCATED,
    RESPONSE_HEADER_PREFIX,
    ROUTE,
    SERVER_ADDRESS,
    STATUS,
    URL_PATH,
    URL_QUERY,
    URL_SCHEME,
    USER_AGENT,
)

MAX_BODY_CHARS = 51_200
"""A body as stored (the client keeps 50 KB; a longer one is cut here and flagged truncated)."""
MAX_HEADERS = 100
MAX_HEADER_CHARS = 8192
MAX_CHARS = {"url_path": 8192, "url_query": 8192, "route": 2048, "host": 512, "user_agent": 1024}
MAX_STACKTRACE_CHARS = 65_536
MAX_MESSAGE_CHARS = 2048
MAX_LOG_LINES = 100
MAX_LOG_LINE_CHARS = 2048
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_NAMESPACE = uuid.UUID("5f0a4f5e-8a1c-4b6e-9b2a-7a1d3c0e4f21")  # request ids derived from a record's bytes


@dataclass
class RequestLogRow:
    time: dt.datetime
    app: str
    env: str
    service: str
    instance: str
    request_id: uuid.UUID
    trace_id: str
    method: str
    scheme: str
    host: str
    url_path: str
    url_query: str
    route: str
    status: int
    duration_ms: float
    request_size: int
    response_size: int
    consumer: str
    client_ip: str
    user_agent: str
    request_headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    request_body: str = ""
    request_body_truncated: bool = False
    response_body: str = ""
    response_body_truncated: bool = False
    exception_type: str = ""
    exception_message: str = ""
    stacktrace: str = ""
    log_lines: list[str] = field(default_factory=list)
    received_at: dt.datetime = _EPOCH

    def values(self) -> list[Any]:
        """In the table's column order (``storage/migrations/0015_request_log.sql``)."""
        return list(self.__dict__.values())


def is_request_event(record: LogRecord) -> bool:
    if record.event_name:
        return record.event_name == REQUEST_EVENT
    return any(kv.key == "event.name" and kv.value.string_value == REQUEST_EVENT for kv in record.attributes)


def request_event_count(request: ExportLogsServiceRequest) -> int:
    return sum(1 for _, record in _records(request) if is_request_event(record))


def without_request_events(request: ExportLogsServiceRequest, keep: int = 0) -> ExportLogsServiceRequest:
    """A copy of ``request`` with only its first ``keep`` logged requests (what a quota allows), the
    other records as they were."""
    kept = ExportLogsServiceRequest()
    kept.CopyFrom(request)
    for resource_logs in kept.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            records = []
            for record in scope_logs.log_records:
                if is_request_event(record):
                    if keep <= 0:
                        continue
                    keep -= 1
                records.append(record)
            del scope_logs.log_records[:]
            scope_logs.log_records.extend(records)
    return kept


def request_log_rows(request: ExportLogsServiceRequest, app: str, received_ns: int) -> list[RequestLogRow]:
    """The rows of the request-log records of an export, for the app the hub authenticated.
    ``received_ns`` stands in for a record's time when it has none, or one in the future."""
    rows = []
    received_at = _datetime(received_ns)
    for resource, record in _records(request):
        if not is_request_event(record):
            continue
        attributes = attribute_map(a for a in record.attributes if not _is_header(a.key) and a.key != REQUEST_LOG_LINES)
        ns = record.time_unix_nano or record.observed_time_unix_nano
        time = _datetime(ns) if 0 < ns <= received_ns + 60 * 10**9 else received_at
        body_in, cut_in = _body(attributes, REQUEST_BODY, REQUEST_BODY_TRUNCATED)
        body_out, cut_out = _body(attributes, RESPONSE_BODY, RESPONSE_BODY_TRUNCATED)
        rows.append(
            RequestLogRow(
                time=time,
                app=app,
                env=str(resource.get("deployment.environment.name", resource.get("deployment.environment", ""))),
                service=str(resource.get("service.name", "")),
                instance=str(resource.get("service.instance.id", "")),
                request_id=_request_id(attributes.get(REQUEST_ID), record),
                trace_id=record.trace_id.hex() if any(record.trace_id) else "",
                method=_text(attributes.get(METHOD), 32),
                scheme=_text(attributes.get(URL_SCHEME), 16),
                host=_text(attributes.get(SERVER_ADDRESS), MAX_CHARS["host"]),
                url_path=_text(attributes.get(URL_PATH), MAX_CHARS["url_path"]),
                url_query=_text(attributes.get(URL_QUERY), MAX_CHARS["url_query"]),
                route=_text(attributes.get(ROUTE), MAX_CHARS["route"]),
                status=_int(attributes.get(STATUS), 0, 999),
                duration_ms=_duration_ms(attributes.get(DURATION)),
                request_size=_int(attributes.get(REQUEST_BODY_SIZE), 0, 2**63 - 1),
                response_size=_int(attributes.get(RESPONSE_BODY_SIZE), 0, 2**63 - 1),
                consumer=_text(attributes.get(CONSUMER_ID), 256),
                client_ip=_text(attributes.get(CLIENT_ADDRESS), 64),
                user_agent=_text(attributes.get(USER_AGENT), MAX_CHARS["user_agent"]),
                request_headers=_headers(record, REQUEST_HEADER_PREFIX),
                response_headers=_headers(record, RESPONSE_HEADER_PREFIX),
                request_body=body_in,
                request_body_truncated=cut_in,
                response_body=body_out,
                response_body_truncated=cut_out,
                exception_type=_text(attributes.get(EXCEPTION_TYPE), 512),
                exception_message=_text(attributes.get(EXCEPTION_MESSAGE), MAX_MESSAGE_CHARS),
                stacktrace=_text(attributes.get(EXCEPTION_STACKTRACE), MAX_STACKTRACE_CHARS),
                log_lines=_log_lines(record),
                received_at=received_at.replace(microsecond=0),
            )
        )
    return rows


def _records(request: ExportLogsServiceRequest) -> Iterator[tuple[dict[str, Any], LogRecord]]:
    for resource_logs in request.resource_logs:
        resource = attribute_map(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                yield resource, record


def _is_header(key: str) -> bool:
    return key.startswith((REQUEST_HEADER_PREFIX, RESPONSE_HEADER_PREFIX))


def _headers(record: LogRecord, prefix: str) -> dict[str, str]:
    """``http.request.header.<name>`` attributes (each a list of values, as the conventions
    have them, or a plain string) as one map of lowercase names to their values joined by ``, ``."""
    headers: dict[str, str] = {}
    for kv in record.attributes:
        if not kv.key.startswith(prefix) or len(headers) >= MAX_HEADERS:
            continue
        name = kv.key[len(prefix) :].lower()[:256]
        headers[name] = _header_value(kv.value)[:MAX_HEADER_CHARS]
    return headers


def _header_value(value: AnyValue) -> str:
    if value.WhichOneof("value") == "array_value":
        return ", ".join(v.string_value for v in value.array_value.values)
    return value.string_value


def _log_lines(record: LogRecord) -> list[str]:
    for kv in record.attributes:
        if kv.key == REQUEST_LOG_LINES and kv.value.WhichOneof("value") == "array_value":
            return [v.string_value[:MAX_LOG_LINE_CHARS] for v in kv.value.array_value.values[:MAX_LOG_LINES]]
    return []


def _body(attributes: dict[str, Any], key: str, truncated_key: str) -> tuple[str, bool]:
    body = attributes.get(key)
    if not isinstance(body, str):
        return "", False
    truncated = attributes.get(truncated_key) is True
    if len(body) > MAX_BODY_CHARS:
        return body[:MAX_BODY_CHARS], True
    return body, truncated


def _request_id(value: Any, record: LogRecord) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    return uuid.uuid5(_NAMESPACE, record.SerializeToString(deterministic=True).hex())


def _text(value: Any, limit: int) -> str:
    return "" if value is None else str(value)[:limit]


def _int(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(min(max(value, low), high))


def _duration_ms(value: Any) -> float:
    """The conventions' duration in seconds, as milliseconds; 0 for what is not a sane one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 86_400 * 365:
        return 0.0
    return float(value) * 1000


def _datetime(ns: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)
