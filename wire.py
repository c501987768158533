"""The contract between tallyhub's client and its hub: metric, attribute, event and header names.

Both sides import these names from here, so that a name is spelled once. Where OpenTelemetry's
semantic conventions name a thing (https://opentelemetry.io/docs/specs/semconv/http/http-metrics/),
the convention's name is used; the rest are tallyhub's own, under ``tallyhub.``. Other SDKs'
names the hub also accepts (older conventions) stay with the hub's converters.
"""

from __future__ import annotations

# Metrics: the semantic conventions' HTTP server metrics, and tallyhub's error counters.
DURATION = "http.server.request.duration"
REQUEST_SIZE = "http.server.request.body.size"
RESPONSE_SIZE = "http.server.response.body.size"
VALIDATION_ERRORS = "tallyhub.validation_errors"
SERVER_ERRORS = "tallyhub.server_errors"
UPTIME = "process.uptime"
"""The semantic conventions' process metric, sent alone by an instance in an interval without
requests: the hub's sign that the instance is still up."""
CPU_UTILIZATION = "process.cpu.utilization"
"""The semantic conventions' process metric, a gauge in every export (unit ``1``, no attributes):
the process's CPU time since the previous export / (the wall time between them * the CPUs
available to the process)."""
MEMORY_USAGE = "process.memory.usage"
"""The semantic conventions' process metric (the resident set size, unit ``By``, no attributes), in
every export where the platform tells it (Linux). An UpDownCounter in the conventions, sent as a
gauge: the hub keeps a gauge's value as sent (it turns sums into deltas), so each point is the
level at its time."""

# Attributes of a request series.
METHOD = "http.request.method"
ROUTE = "http.route"
STATUS = "http.response.status_code"
ERROR_TYPE = "error.type"
CONSUMER_ID = "tallyhub.consumer.id"
CONSUMER_NAME = "tallyhub.consumer.name"
CONSUMER_GROUP = "tallyhub.consumer.group"
OVERFLOW = "otel.metric.overflow"
"""``true`` on the one series that counts what went beyond the client's cardinality limit."""

# Attributes of an error point.
VALIDATION_LOCATION = "tallyhub.validation_error.location"
VALIDATION_MESSAGE = "tallyhub.validation_error.message"
VALIDATION_TYPE = "tallyhub.validation_error.type"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"
EXCEPTION_STACKTRACE = "exception.stacktrace"
ERROR_FINGERPRINT = "tallyhub.error.fingerprint"

# Events (OTLP log records) and request headers.
STARTUP_EVENT = "tallyhub.startup"
APP_KEY_HEADER = "x-tallyhub-app-key"
BATCH_ID_HEADER = "x-tallyhub-batch-id"
"""A client's identity for an export it may send more than once (tallyhub's client retries
until acknowledged): the hub stores each identity once per app. Optional: other OTLP clients
do not send it."""

# The request log (opt-in): one OTLP log record per request, ``event_name`` REQUEST_EVENT. Its
# timestamp is the request's start, its trace id the request's span's (when the app traces). The
# semantic conventions' names where they exist: METHOD, ROUTE, STATUS, DURATION (seconds),
# CONSUMER_ID, EXCEPTION_* above, and:
REQUEST_EVENT = "tallyhub.request"
REQUEST_ID = "tallyhub.request.id"
"""A UUID per logged request, made by the client: an export sent again is stored once."""
URL_PATH = "url.path"
URL_QUERY = "url.query"
"""Masked before it leaves the app (``request_log.masking``)."""
URL_SCHEME = "url.scheme"
SERVER_ADDRESS = "server.address"
CLIENT_ADDRESS = "client.address"
USER_AGENT = "user_agent.original"
REQUEST_BODY_SIZE = "http.request.body.size"
RESPONSE_BODY_SIZE = "http.response.body.size"
REQUEST_HEADER_PREFIX = "http.request.header."
"""One attribute per header (``http.request.header.content-type``), a list of its values; masked."""
RESPONSE_HEADER_PREFIX = "http.response.header."
REQUEST_BODY = "tallyhub.request.body"
"""The body as text (JSON, text, form), at most 50 KB; masked; absent when binary or not kept."""
RESPONSE_BODY = "tallyhub.response.body"
REQUEST_BODY_TRUNCATED = "tallyhub.request.body.truncated"
RESPONSE_BODY_TRUNCATED = "tallyhub.response.body.truncated"
REQUEST_LOG_LINES = "tallyhub.request.log_lines"
"""The log lines the app wrote while handling the request (``capture_logs``), a list of strings."""
