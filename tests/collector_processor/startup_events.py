"""Start-up events as OTLP log exports, built by hand (shared by the receiver, conversion and
processor tests)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2 as pb

from tallyhub.wire import STARTUP_EVENT

# A whole hour, a day ago: recent enough for the 12-month TTL whenever the tests run.
T0 = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=1)
T0_NS = int(T0.timestamp()) * 1_000_000_000
RESOURCE = {"service.name": "shop", "service.instance.id": "i-1", "deployment.environment.name": "prod"}
ENDPOINTS = [
    {"method": "GET", "route": "/items/{item_id}", "summary": "Read an item", "description": "One item, by id."},
    {"method": "POST", "route": "/items", "summary": "Create an item", "description": None},
]
OPENAPI = json.dumps({"openapi": "3.1.0", "info": {"title": "Shop", "version": "1.4.2"}, "paths": {}})
VERSIONS = {"python": "3.11.7", "tallyhub": "0.1.0", "framework": "fastapi 0.165.0", "app": "1.4.2"}


def body(**changes: Any) -> str:
    """The JSON body the client sends (``introspection.startup_document``'s shape), with changes."""
    doc = {"endpoints": ENDPOINTS, "openapi": OPENAPI, "versions": VERSIONS, "host": "web-1", "pid": 4242}
    return json.dumps({**doc, **changes})


def log_record(
    text: str | None = None,
    event_name: str | None = STARTUP_EVENT,
    time_ns: int = T0_NS,
    attributes: dict[str, str] | None = None,
) -> pb.LogRecord:
    """A log record as the client sends it: ``event_name`` and the ``event.name`` attribute."""
    if attributes is None:
        attributes = {"event.name": event_name} if event_name else {}
    return pb.LogRecord(
        time_unix_nano=time_ns,
        observed_time_unix_nano=time_ns,
        severity_number=pb.SeverityNumber.SEVERITY_NUMBER_INFO,
        event_name=event_name or "",
        body=AnyValue(string_value=body() if text is None else text),
        attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attributes.items()],
    )


def export(*records: pb.LogRecord, resource: dict[str, str] | None = None) -> ExportLogsServiceRequest:
    resource = RESOURCE if resource is None else resource
    return ExportLogsServiceRequest(
        resource_logs=[
            pb.ResourceLogs(
                resource={"attributes": [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in resource.items()]},
                scope_logs=[pb.ScopeLogs(scope={"name": "tallyhub"}, log_records=list(records))],
            )
        ]
    )
