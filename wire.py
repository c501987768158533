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
