"""The request log (opt-in): one OTLP log record per request, masked before it leaves the process.

Off by default, and then nothing here runs on the request path. On (``request_logging=True``, a
``RequestLoggingConfig``, Django's ``TALLYHUB["REQUEST_LOGGING"]`` or ``TALLYHUB_REQUEST_LOGGING=1``),
a request keeps references to what it already has — its headers, the body chunks the app read
and sent (up to ``MAX_BODY_BYTES`` each), the exception's description — and queues them. The
export thread (``flush``, every ``FOLD_INTERVAL_S``) drops excluded and unsampled requests, masks
query parameters, headers and JSON body fields, decodes the bodies it may keep, builds the log
records and hands them to the transport: spooled and retried for up to an hour like the metrics.

Bounded: at most ``max_queued`` requests wait for the export thread; beyond, requests are dropped
from the log and counted (``dropped``), never the metrics. The spool's cap bounds what waits for
the hub.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.context import get_current
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.instrumentation.headers import first, text_headers
from tallyhub.instrumentation.masking import (
    DEFAULT_BODY_PATTERNS,
    DEFAULT_HEADER_PATTERNS,
    DEFAULT_QUERY_PATTERNS,
    compile_patterns,
    mask_headers,
    mask_json_body,
    mask_query,
)
from tallyhub.instrumentation.server_errors import ServerError
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

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import ReadableLogRecord

    from tallyhub.instrumentation.transport import Transport

logger = logging.getLogger("tallyhub")

MAX_LOG_LINES = 100
"""Log lines kept per request (``capture_logs``); each is cut at ``MAX_LOG_LINE`` characters."""
MAX_LOG_LINE = 2048
MAX_BODY_BYTES = 50 * 1024
"""Bytes of a request or response body kept; a longer one is cut there and flagged truncated."""
MAX_QUEUED = 10_000
"""Requests waiting for the export thread at most (bodies included: ~1 GB in the worst case of
50 KB bodies both ways, ~20 MB for typical API traffic); beyond, they are dropped and counted."""
BATCH_SIZE = 500
"""Log records per batch handed to the transport."""
FLUSH_EVERY_S = 5.0
"""A batch goes out when it is full or this long after the previous one."""

DEFAULT_EXCLUDED_PATHS = (
    r"/_?health(z|[-_]?checks?)?/?$",
    r"/_?heart[-_]?beats?/?$",
    r"/_?(ready|readiness|live|liveness)z?/?$",
    r"/ping/?$",
)
"""Health checks and probes: not logged (their requests are still counted in the metrics)."""
DEFAULT_EXCLUDED_USER_AGENTS = (
    r"health[-_ ]?check",
    r"kube-probe",
    r"googlehc",
    r"elb-healthchecker",
    r"microsoft-azure-application-lb",
    r"uptime-?kuma",
    r"pingdom",
    r"uptimerobot",
    r"statuscake",
    r"site24x7",
    r"better ?uptime",
)
_TEXT_TYPES = re.compile(r"^(text/|application/([\w.+-]*\+)?(json|xml|x-www-form-urlencoded|x-ndjson|graphql))", re.I)


@dataclass(frozen=True)
class RequestLoggingConfig:
    """What the request log keeps. Patterns are regular expressions, case-insensitive, matched
    anywhere in a name or path; each list is added to the defaults, never replaces them.

    ``mask_callback`` gets each record (a dict with ``method``, ``path``, ``query``, ``status``,
    ``request_headers``, ``request_body``, … as they will be sent, already masked) and returns it,
    changed as it likes, or None to leave the request out. ``exclude_callback`` gets the same dict
    before masking and returns True to leave the request out. ``sample_rate``: the share of
    requests logged (0 to 1). ``trust_proxies``: take the client's address from
    ``X-Forwarded-For`` / ``Forwarded`` (only behind a proxy that sets them).
    """

    enabled: bool = True
    log_query: bool = True
    log_request_headers: bool = True
    log_request_body: bool = True
    log_response_headers: bool = True
    log_response_body: bool = True
    capture_logs: bool = False
    """Also keep the log lines (stdlib ``logging``) the app wrote while handling the request, as its
    logging configuration lets them through: at most ``MAX_LOG_LINES``, each cut at 2 KB."""
    mask_query_params: Sequence[str] = ()
    mask_headers: Sequence[str] = ()
    mask_body_fields: Sequence[str] = ()
    mask_callback: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    exclude_paths: Sequence[str] = ()
    exclude_user_agents: Sequence[str] = ()
    exclude_callback: Callable[[dict[str, Any]], bool] | None = None
    sample_rate: float = 1.0
    trust_proxies: bool = False
    max_queued: int = MAX_QUEUED

    def __post_init__(self) -> None:
        if not 0 <= self.sample_rate <= 1:
            raise ValueError(f"sample_rate is a share between 0 and 1, got {self.sample_rate}")


_LOG_LINES: ContextVar[list[str] | None] = ContextVar("tallyhub.request_log_lines", default=None)
"""Where the log lines of the request being handled go (``capture_logs``); None: nowhere."""


class _LogLineHandler(logging.Handler):
    """Keeps each log record emitted while a captured request is handled, as one line."""

    def emit(self, record: logging.LogRecord) -> None:
        lines = _LOG_LINES.get()
        if lines is None or len(lines) >= MAX_LOG_LINES or record.name.startswith("tallyhub"):
            return
        with contextlib.suppress(Exception):  # a message whose arguments do not format: the app's handlers say so
            lines.append(f"{record.levelname} {record.name}: {record.getMessage()}"[:MAX_LOG_LINE])


_HANDLER = _LogLineHandler()


def capture_log_lines(log: RequestLog) -> list[str] | None:
    """Start keeping this request's log lines (when ``capture_logs``): the list they go to."""
    if not log.config.capture_logs:
        return None
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    lines: list[str] = []
    _LOG_LINES.set(lines)
    return lines


def logging_config(
    value: bool | RequestLoggingConfig | None, environ: MutableMapping[str, str]
) -> RequestLoggingConfig | None:
    """The request log's configuration from the client's argument, else ``TALLYHUB_REQUEST_LOGGING``;
    None when it is off."""
    if value is None:
        value = environ.get("TALLYHUB_REQUEST_LOGGING", "").strip().lower() in ("1", "true", "yes", "on")
    if value is True:
        value = RequestLoggingConfig()
    if not value or not value.enabled:
        return None
    return value


@dataclass(slots=True)
class Captured:
    """One request as the request path leaves it: references, nothing decoded or masked yet."""

    start_ns: int
    method: str
    scheme: str
    path: str
    query: bytes | str
    client: str
    request_headers: Iterable[tuple[Any, Any]]
    context: Any
    """The OpenTelemetry context the request ran in: its span gives the log record's trace id."""
    request_body: list[bytes] | None = None
    request_body_bytes: int = 0
    response_headers: Iterable[tuple[Any, Any]] = ()
    response_body: list[bytes] | None = None
    response_body_bytes: int = 0
    streaming: bool = False
    route: str = ""
    status: int = 0
    duration_s: float = 0.0
    request_size: int = 0
    response_size: int = 0
    consumer: str = ""
    server_error: ServerError | None = None
    log_lines: list[str] | None = None


class RequestLog:
    """The queue of captured requests and the export thread's work on it (``flush``)."""

    def __init__(self, config: RequestLoggingConfig, resource: Resource, scope: InstrumentationScope) -> None:
        self.config = config
        self.resource = resource
        self.scope = scope
        self._queue: deque[Captured] = deque()
        self._ready: list[ReadableLogRecord] = []
        self._last_sent = time.monotonic()
        self.dropped = 0
        """Requests left out of the log because the queue was full."""
        self.sent = 0
        self._query_secret = compile_patterns(DEFAULT_QUERY_PATTERNS, config.mask_query_params)
        self._header_secret = compile_patterns(DEFAULT_HEADER_PATTERNS, config.mask_headers)
        self._body_secret = compile_patterns(DEFAULT_BODY_PATTERNS, config.mask_body_fields)
        self._excluded_path = compile_patterns(DEFAULT_EXCLUDED_PATHS, config.exclude_paths)
        self._excluded_agent = compile_patterns(DEFAULT_EXCLUDED_USER_AGENTS, config.exclude_user_agents)

    def add(self, captured: Captured) -> None:
        """Queue one finished request (the request path: an append, or a count when full)."""
        if len(self._queue) < self.config.max_queued:
            self._queue.append(captured)
        else:
            self.dropped += 1

    def after_fork(self) -> None:
        self._queue = deque()
        self._ready = []

    def flush(self, transport: Transport, force: bool = False) -> None:
        """Turn what is queued into log records; hand them over in batches of ``BATCH_SIZE`` (and,
        when ``force`` or ``FLUSH_EVERY_S`` after the last batch, what is left). Never raises."""
        queue = self._queue
        for _ in range(len(queue)):
            captured = queue.popleft()
            try:
                record = self._record(captured)
            except Exception:
                logger.exception("tallyhub: a request could not be logged (left out of the request log)")
                continue
            if record is not None:
                self._ready.append(record)
        due = force or time.monotonic() - self._last_sent >= FLUSH_EVERY_S
        while self._ready and (len(self._ready) >= BATCH_SIZE or due):
            batch, self._ready = self._ready[:BATCH_SIZE], self._ready[BATCH_SIZE:]
            try:
                transport.send_logs(batch)
                self.sent += len(batch)
            except Exception:
                logger.exception("tallyhub: handing over %d logged requests failed; they are lost", len(batch))
            self._last_sent = time.monotonic()

    def _record(self, c: Captured) -> ReadableLogRecord | None:
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.sdk._logs import ReadableLogRecord

        config = self.config
        request_headers = text_headers(c.request_headers)
        user_agent = first(request_headers, "user-agent")
        if self._excluded_path.search(c.path) or (user_agent and self._excluded_agent.search(user_agent)):
            return None
        if config.sample_rate < 1 and random.random() >= config.sample_rate:
            return None
        query = c.query.decode("latin-1") if isinstance(c.query, bytes) else c.query
        fields: dict[str, Any] = {
            "method": c.method,
            "scheme": _forwarded_scheme(request_headers) or c.scheme,
            "host": first(request_headers, "host"),
            "path": c.path,
            "query": query if config.log_query else "",
            "route": c.route,
            "status": c.status,
            "duration_s": c.duration_s,
            "request_size": c.request_size,
            "response_size": c.response_size,
            "consumer": c.consumer,
            "client_ip": (_forwarded_for(request_headers) if config.trust_proxies else "") or c.client,
            "user_agent": user_agent,
            "request_headers": request_headers if config.log_request_headers else [],
            "response_headers": text_headers(c.response_headers) if config.log_response_headers else [],
        }
        fields["log_lines"] = c.log_lines or []
        if config.exclude_callback is not None and config.exclude_callback(fields):
            return None
        fields["query"] = mask_query(fields["query"], self._query_secret)
        fields["request_headers"] = mask_headers(fields["request_headers"], self._header_secret)
        fields["response_headers"] = mask_headers(fields["response_headers"], self._header_secret)
        fields["request_body"], fields["request_body_truncated"] = self._body(
            c.request_body if config.log_request_body else None, c.request_body_bytes, request_headers
        )
        response_body = c.response_body if config.log_response_body and not c.streaming else None
        fields["response_body"], fields["response_body_truncated"] = self._body(
            response_body, c.response_body_bytes, fields["response_headers"]
        )
        if config.mask_callback is not None:
            masked = config.mask_callback(fields)
            if masked is None:
                return None
            fields = masked
        attributes = _attributes(fields, c.server_error)
        severity = (
            SeverityNumber.ERROR if c.status >= 500 else SeverityNumber.WARN if c.status >= 400 else SeverityNumber.INFO
        )
        return ReadableLogRecord(
            log_record=LogRecord(
                timestamp=c.start_ns,
                observed_timestamp=time.time_ns(),
                context=c.context,  # the trace and span ids, when the app traces
                severity_number=severity,
                body=f"{c.method} {c.path} {c.status}",
                attributes=attributes,
                event_name=REQUEST_EVENT,
            ),
            resource=self.resource,
            instrumentation_scope=self.scope,
        )

    def _body(self, chunks: list[bytes] | None, size: int, headers: list[tuple[str, str]]) -> tuple[str, bool]:
        """The body as text, masked: JSON, text and forms; binary bodies (and bodies not kept) are ''."""
        if not chunks:
            return "", False
        content_type = first(headers, "content-type")
        if not _TEXT_TYPES.match(content_type):
            return "", False
        data = b"".join(chunks)[:MAX_BODY_BYTES]
        truncated = size > MAX_BODY_BYTES
        charset = re.search(r"charset=([\w.-]+)", content_type, re.I)
        try:
            text = data.decode(charset.group(1) if charset else "utf-8", errors="replace")
        except LookupError:
            text = data.decode("utf-8", errors="replace")
        if "json" in content_type.lower() and not truncated:
            text = mask_json_body(text, self._body_secret)
        elif "x-www-form-urlencoded" in content_type.lower():
            text = mask_query(text, self._body_secret)
        elif truncated and "json" in content_type.lower():
            return "", True  # a cut JSON body cannot be parsed to mask its fields: not sent
        return text, truncated


def _attributes(fields: dict[str, Any], server_error: ServerError | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        REQUEST_ID: str(uuid.uuid4()),
        METHOD: fields["method"],
        URL_SCHEME: fields["scheme"],
        URL_PATH: fields["path"],
        STATUS: fields["status"],
        DURATION: fields["duration_s"],
        REQUEST_BODY_SIZE: fields["request_size"],
        RESPONSE_BODY_SIZE: fields["response_size"],
    }
    optional = {
        SERVER_ADDRESS: fields["host"],
        URL_QUERY: fields["query"],
        ROUTE: fields["route"],
        CONSUMER_ID: fields["consumer"],
        CLIENT_ADDRESS: fields["client_ip"],
        USER_AGENT: fields["user_agent"],
        REQUEST_BODY: fields["request_body"],
        RESPONSE_BODY: fields["response_body"],
    }
    attributes.update((key, value) for key, value in optional.items() if value)
    if fields["request_body_truncated"]:
        attributes[REQUEST_BODY_TRUNCATED] = True
    if fields["response_body_truncated"]:
        attributes[RESPONSE_BODY_TRUNCATED] = True
    for prefix, headers in (
        (REQUEST_HEADER_PREFIX, fields["request_headers"]),
        (RESPONSE_HEADER_PREFIX, fields["response_headers"]),
    ):
        grouped: dict[str, list[str]] = {}
        for name, value in headers:
            grouped.setdefault(prefix + name, []).append(value)
        attributes.update(grouped)
    if fields.get("log_lines"):
        attributes[REQUEST_LOG_LINES] = list(fields["log_lines"])
    if server_error is not None:
        attributes[EXCEPTION_TYPE] = server_error.type
        attributes[EXCEPTION_MESSAGE] = server_error.message
        attributes[EXCEPTION_STACKTRACE] = server_error.stacktrace
    return attributes


def _forwarded_for(headers: list[tuple[str, str]]) -> str:
    """The client's address as the nearest proxy saw it: ``Forwarded: for=…``, else the first
    ``X-Forwarded-For`` entry."""
    forwarded = first(headers, "forwarded")
    match = re.search(r'for="?\[?([^;,"\]]+)', forwarded, re.I)
    if match:
        return match.group(1).strip()
    return first(headers, "x-forwarded-for").split(",")[0].strip()


def _forwarded_scheme(headers: list[tuple[str, str]]) -> str:
    """https behind a TLS-terminating proxy: ``Forwarded: proto=…`` or ``X-Forwarded-Proto``."""
    match = re.search(r"proto=\"?(https?)", first(headers, "forwarded"), re.I)
    if match:
        return match.group(1).lower()
    proto = first(headers, "x-forwarded-proto").split(",")[0].strip().lower()
    return proto if proto in ("http", "https") else ""


def asgi_capture(log: RequestLog, scope: MutableMapping[str, Any]) -> Captured:
    """An ASGI request's capture: the ASGI middleware keeps its body chunks and response as they
    pass (``keep_response``), by reference."""
    client = scope.get("client")
    return Captured(
        start_ns=time.time_ns(),
        method=scope["method"],
        scheme=scope.get("scheme", "http"),
        path=scope["path"],
        query=scope.get("query_string", b""),
        client=client[0] if client else "",
        request_headers=scope.get("headers", ()),
        context=get_current(),
        request_body=[] if log.config.log_request_body else None,
        response_body=[] if log.config.log_response_body else None,
        log_lines=capture_log_lines(log),
    )


def keep_response(captured: Captured, message: MutableMapping[str, Any], sent: int) -> None:
    """What the request log keeps of a response message, ``sent`` bytes of body before it: the
    headers; the body's first ``MAX_BODY_BYTES``, unless it is a stream (never buffered)."""
    if message["type"] == "http.response.start":
        captured.response_headers = message.get("headers", ())
    elif captured.response_body is not None:
        if not sent and message.get("more_body", False):
            captured.streaming, captured.response_body = True, None
        elif sent < MAX_BODY_BYTES and message.get("body"):
            captured.response_body.append(message["body"])


def _keep(chunks: list[bytes], kept: int, body: bytes) -> int:
    """Keep ``body`` while the chunks hold less than ``MAX_BODY_BYTES``; the bytes seen so far."""
    if body and kept < MAX_BODY_BYTES:
        chunks.append(body)
    return kept + len(body)


class CapturingInput:
    """A WSGI ``wsgi.input`` that keeps (up to ``MAX_BODY_BYTES``) what the app reads of it."""

    def __init__(self, stream: Any, chunks: list[bytes]) -> None:
        self._stream = stream
        self._chunks = chunks
        self.kept = 0

    def _keep(self, data: bytes) -> bytes:
        self.kept = _keep(self._chunks, self.kept, data)
        return data

    def read(self, *args: Any) -> bytes:
        return self._keep(self._stream.read(*args))

    def readline(self, *args: Any) -> bytes:
        return self._keep(self._stream.readline(*args))

    def readinto(self, buffer: Any) -> int | None:
        size = self._stream.readinto(buffer)
        if size:
            self._keep(bytes(memoryview(buffer)[:size]))
        return size

    def readlines(self, *args: Any) -> list[bytes]:
        return [self._keep(line) for line in self._stream.readlines(*args)]

    def __iter__(self) -> Any:
        for line in self._stream:
            yield self._keep(line)

    def __getattr__(self, name: str) -> Any:  # close(), seekable()… as the server's stream has them
        return getattr(self._stream, name)


def wsgi_headers(environ: MutableMapping[str, Any]) -> list[tuple[str, str]]:
    """A WSGI request's headers from its environ (``HTTP_X_API_KEY`` → ``x-api-key``)."""
    headers = [(key[5:].replace("_", "-").lower(), value) for key, value in environ.items() if key.startswith("HTTP_")]
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers.append((key.replace("_", "-").lower(), environ[key]))
    return headers


def wsgi_capture(log: RequestLog, environ: MutableMapping[str, Any]) -> Captured:
    """A WSGI request's capture; its ``wsgi.input`` replaced by one that keeps what the app reads."""
    captured = Captured(
        start_ns=time.time_ns(),
        method=environ.get("REQUEST_METHOD", "GET"),
        scheme=environ.get("wsgi.url_scheme", "http"),
        path=environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
        query=environ.get("QUERY_STRING", ""),
        client=environ.get("REMOTE_ADDR", ""),
        request_headers=wsgi_headers(environ),
        context=get_current(),
        request_body=[] if log.config.log_request_body else None,
        response_body=[] if log.config.log_response_body else None,
        log_lines=capture_log_lines(log),
    )
    if captured.request_body is not None and environ.get("wsgi.input") is not None:
        environ["wsgi.input"] = CapturingInput(environ["wsgi.input"], captured.request_body)
    return captured


def finish(
    log: RequestLog,
    captured: Captured,
    route: str,
    status: int,
    duration_s: float,
    request_size: int,
    response_size: int,
    consumer: Any,
    server_error: ServerError | None,
) -> None:
    """Complete a capture with what the measurement found, and queue it."""
    captured.route, captured.status, captured.duration_s = route, status, duration_s
    captured.request_size, captured.response_size = request_size, response_size
    captured.consumer = getattr(consumer, "identifier", "") if consumer is not None else ""
    captured.server_error = server_error
    # the sizes measured (what the app read and sent) tell whether the kept bodies were cut
    captured.request_body_bytes = max(captured.request_body_bytes, request_size)
    captured.response_body_bytes = max(captured.response_body_bytes, response_size)
    if captured.log_lines is not None:
        _LOG_LINES.set(None)  # what this thread or task logs from now on is not this request's
    log.add(captured)
