"""OTLP logs → rows of `endpoints`, `instances` and `openapi`. Pure functions: no I/O, no clock.

The client sends one log record per process start (``event_name`` ``tallyhub.startup``, also in
the ``event.name`` attribute; format in ``tallyhub.instrumentation.introspection``), its body a
JSON string with the app's endpoints, OpenAPI document, versions, host and pid. The resource
carries ``service.name``, ``service.instance.id`` and ``deployment.environment.name`` like the
metrics. Logged requests (``tallyhub.request``) go to ``request_log`` (``convert/request_log``);
other log records are not stored (the receiver reports them as partial success).
The app is the one the hub verified from the key, never an attribute the client sent.

Limits (what a start-up event may hold; beyond them the hub keeps what fits and logs why):

- the OpenAPI document: at most ``MAX_OPENAPI_BYTES`` (5 MiB of UTF-8); a larger one is not
  stored (the endpoints and the instance are);
- endpoints: the first ``MAX_ENDPOINTS`` (5000) distinct (method, route) of an event;
- strings are cut to ``MAX_CHARS`` characters (route 2048, summary 1024, description 16384,
  method 32, host 256); versions: at most 64 entries, names cut to 64, values to 256.

A body that is not a JSON object of that shape (not JSON, ``endpoints`` not a list, an endpoint
without a method or route, a pid that is not a number…) raises ``ValueError``: the processor
sets the queued export aside, and the rest flows.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tallyhub.collector_processor.convert.points import attribute_map
from tallyhub.collector_processor.convert.request_log import is_request_event
from tallyhub.wire import REQUEST_EVENT, STARTUP_EVENT

MAX_OPENAPI_BYTES = 5 * 1024 * 1024
MAX_ENDPOINTS = 5000
MAX_VERSIONS = 64
MAX_CHARS = {
    "method": 32,
    "route": 2048,
    "summary": 1024,
    "description": 16384,
    "host": 256,
    "version_name": 64,
    "version": 256,
}
_MAX_PID = 2**32 - 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass
class EndpointRow:
    """One endpoint as one start-up event lists it (the table keeps one row per app, env, method, route)."""

    app: str
    env: str
    service: str
    method: str
    route: str
    summary: str
    description: str
    seen: dt.datetime

    def values(self) -> list[Any]:
        """In the order of ``storage.writer.ENDPOINT_COLUMNS``."""
        latest = (self.seen, self.service, self.summary, self.description)
        return [self.app, self.env, self.method, self.route, self.seen, self.seen, latest]


@dataclass
class InstanceRow:
    app: str
    env: str
    service: str
    instance: str
    host: str
    pid: int
    versions: dict[str, str]
    started_at: dt.datetime
    received_at: dt.datetime

    def values(self) -> list[Any]:
        return list(self.__dict__.values())


@dataclass
class OpenApiRow:
    app: str
    env: str
    service: str
    instance: str
    started_at: dt.datetime
    received_at: dt.datetime
    document: str

    def values(self) -> list[Any]:
        return list(self.__dict__.values())


@dataclass
class EventRows:
    endpoints: list[EndpointRow] = field(default_factory=list)
    instances: list[InstanceRow] = field(default_factory=list)
    openapi: list[OpenApiRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What was cut or left out because of the limits, for the hub's log."""


def is_startup_event(record: LogRecord) -> bool:
    if record.event_name:
        return record.event_name == STARTUP_EVENT
    return any(kv.key == "event.name" and kv.value.string_value == STARTUP_EVENT for kv in record.attributes)


def _records(request: ExportLogsServiceRequest) -> Iterator[tuple[dict[str, Any], LogRecord]]:
    for resource_logs in request.resource_logs:
        resource = attribute_map(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                yield resource, record


def has_stored_event(request: ExportLogsServiceRequest) -> bool:
    """Whether an export holds a log record the hub stores (a start-up event, a logged request)."""
    return any(_is_stored(record) for _, record in _records(request))


def _is_stored(record: LogRecord) -> bool:
    return is_startup_event(record) or is_request_event(record)


def rejected_log_records(request: ExportLogsServiceRequest) -> tuple[int, str]:
    """How many log records of an export this hub does not store, and why (for partial success)."""
    names = [record.event_name for _, record in _records(request) if not _is_stored(record)]
    if not names:
        return 0, ""
    shown = ", ".join(sorted({name or "(no event name)" for name in names})[:5])
    return len(names), (
        f"{len(names)} log records not stored ({shown}): this hub stores only {STARTUP_EVENT} and "
        f"{REQUEST_EVENT} events, not general logs"
    )


def event_rows(request: ExportLogsServiceRequest, app: str, received_ns: int) -> EventRows:
    """The rows of the start-up events of an export, for the app the hub authenticated.

    ``received_ns`` is when the hub queued the export: it is ``received_at``, and stands in for
    the event's time when the client sent none or one in the future (a clock ahead).
    """
    out = EventRows()
    received_at = _datetime(received_ns)
    for index, (resource, record) in enumerate(_records(request)):
        if not is_startup_event(record):
            continue
        try:
            body = _body(record)
        except ValueError as exc:
            raise ValueError(f"log record {index}: malformed {STARTUP_EVENT} body: {exc}") from exc
        env = str(resource.get("deployment.environment.name", resource.get("deployment.environment", "")))
        service = str(resource.get("service.name", ""))
        instance = str(resource.get("service.instance.id", ""))
        event_ns = record.time_unix_nano or record.observed_time_unix_nano
        started_at = _datetime(event_ns if 0 < event_ns <= received_ns else received_ns)
        where = f"{STARTUP_EVENT} of app {app} ({service or 'unknown service'}, instance {instance or '?'})"

        endpoints = body["endpoints"]
        if len(endpoints) > MAX_ENDPOINTS:
            out.warnings.append(f"{where}: {len(endpoints)} endpoints, only the first {MAX_ENDPOINTS} are stored")
            endpoints = endpoints[:MAX_ENDPOINTS]
        for method, route, summary, description in endpoints:
            out.endpoints.append(EndpointRow(app, env, service, method, route, summary, description, started_at))

        out.instances.append(
            InstanceRow(
                app, env, service, instance, body["host"], body["pid"], body["versions"], started_at, received_at
            )
        )

        document = body["openapi"]
        if document is not None:
            size = len(document.encode())
            if size > MAX_OPENAPI_BYTES:
                out.warnings.append(
                    f"{where}: OpenAPI document of {size} bytes not stored (limit {MAX_OPENAPI_BYTES} bytes)"
                )
            else:
                out.openapi.append(OpenApiRow(app, env, service, instance, started_at, received_at, document))
    return out


def latest_documents(rows: Iterable[OpenApiRow]) -> list[OpenApiRow]:
    """The latest OpenAPI document per app and env (what the table keeps), so that a batch in
    which many instances start at once inserts each document once."""
    latest: dict[tuple[str, str], OpenApiRow] = {}
    for row in rows:
        kept = latest.get((row.app, row.env))
        if kept is None or row.started_at >= kept.started_at:
            latest[row.app, row.env] = row
    return list(latest.values())


# -- the body ---------------------------------------------------------------------------------


def _body(record: LogRecord) -> dict[str, Any]:
    """The parsed, checked and clipped body: endpoints as (method, route, summary, description)."""
    if record.body.WhichOneof("value") != "string_value":
        raise ValueError(f"the body must be a JSON string, not {record.body.WhichOneof('value') or 'empty'}")
    try:
        doc = json.loads(record.body.string_value)
    except RecursionError as exc:
        raise ValueError("the body is nested too deeply") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"the body must be a JSON object, not {type(doc).__name__}")
    endpoints = doc.get("endpoints", [])
    if not isinstance(endpoints, list):
        raise ValueError(f"endpoints must be a list, not {type(endpoints).__name__}")
    seen: dict[tuple[str, str], tuple[str, str, str, str]] = {}
    for i, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, dict):
            raise ValueError(f"endpoints[{i}] must be an object, not {type(endpoint).__name__}")
        method = _text(endpoint, "method", required=True, where=f"endpoints[{i}]")
        route = _text(endpoint, "route", required=True, where=f"endpoints[{i}]")
        if (method, route) not in seen:
            summary = _text(endpoint, "summary", where=f"endpoints[{i}]")
            description = _text(endpoint, "description", where=f"endpoints[{i}]")
            seen[method, route] = (method, route, summary, description)
    openapi = doc.get("openapi")
    if openapi is not None and not isinstance(openapi, str):
        raise ValueError(f"openapi must be a JSON string or null, not {type(openapi).__name__}")
    openapi = _utf8(openapi) if openapi is not None else None
    versions = doc.get("versions") or {}
    if not isinstance(versions, dict) or not all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in versions.values()
    ):
        raise ValueError("versions must be an object of names to version strings")
    pid = doc.get("pid") or 0
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 <= pid <= _MAX_PID:
        raise ValueError(f"pid must be a process id, not {pid!r}")
    return {
        "endpoints": list(seen.values()),
        "openapi": openapi,
        "versions": {
            _clip(name, "version_name"): _clip(str(value), "version")
            for name, value in list(versions.items())[:MAX_VERSIONS]
        },
        "host": _text(doc, "host", where="the body"),
        "pid": pid,
    }


def _text(obj: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"{where}: {key} must be a {'non-empty ' if required else ''}string, not {value!r:.40}")
    return _clip(value, key)


def _clip(text: str, what: str) -> str:
    return _utf8(text[: MAX_CHARS[what]])


def _utf8(text: str) -> str:
    """JSON may carry lone surrogates (``"\\ud800"``), which no UTF-8 column takes: replace them."""
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode()


def _datetime(ns: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)
