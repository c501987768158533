"""The OTLP/HTTP receiver: ``POST /v1/metrics`` and ``POST /v1/logs`` on the standard port 4318.

The transport of https://opentelemetry.io/docs/specs/otlp/#otlphttp around the same ``Receiver``
as gRPC: binary protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``),
optionally gzipped. JSON is turned into the protobuf request first, so the queue holds protobuf
whatever the client sent. Answers come in the request's content type: the export response (200,
with partial success when some data is not stored), or a ``google.rpc.Status`` with a 4xx/5xx.
Bodies are never read or inflated beyond ``MAX_MESSAGE_BYTES``, and all requests together hold
at most a ``ByteBudget`` of body bytes: what does not fit in time is answered 503 + Retry-After,
which OTLP clients retry. It runs on the hub's web stack (uvicorn's HTTP/1.1, ``web_server``), with
a read deadline for stalled clients and OTLP's error body for malformed framing (``_Protocol``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import h11
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from tallyhub.collector_processor.receive.auth import key_from_metadata
from tallyhub.collector_processor.receive.receiver import LOGS, MAX_MESSAGE_BYTES, METRICS, Receiver, Refused, Signal
from tallyhub.collector_processor.tls import Tls
from tallyhub.collector_processor.web_server import WebServer

logger = logging.getLogger("tallyhub.http_receiver")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
PATHS = {"/v1/metrics": METRICS, "/v1/logs": LOGS}
HEALTH_PATHS = ("/healthz", "/readyz")
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
}
"""The HTTP status of each ``Refused`` code (anything else: 500)."""
READ_TIMEOUT_S = 30.0
"""A connection that sends nothing for this long (idle keep-alive, stalled headers or body) is closed."""
MAX_BYTES_IN_FLIGHT = 4 * MAX_MESSAGE_BYTES
"""The default ``ByteBudget``: body bytes, as sent and inflated, held by all requests at once."""
BUDGET_WAIT_S = 1.0
"""How long a request waits for its share of the budget before it is answered 503."""
BUSY_RETRY_S = 1.0
"""The Retry-After of a request refused because the budget is spent."""
MAX_GZIP_MEMBERS = 64
"""Gzip members in one body (real clients send one; each member costs a new inflater)."""
LISTEN_BACKLOG = 1024
"""Connections the kernel holds until they are accepted (socketserver's default, 5, reset bursts)."""
MAX_HEADER_BYTES = 64 * 1024
"""The request line and headers of one request (h11 refuses more: 400)."""
_HEX_IDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_CHUNK = 1 << 16
_INFLATE_STEP = 1 << 20
"""The most a body is inflated by before the budget is asked for it."""
_NOT_HEADER_LIST = re.compile(r"[^A-Za-z0-9!#$%&'*+.^_`|~, -]")


class HttpError(Exception):
    """A request answered with an error status and a ``google.rpc.Status`` body."""

    def __init__(self, status: int, code: grpc.StatusCode, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s

    @classmethod
    def refused(cls, refused: Refused) -> HttpError:
        return cls(HTTP_STATUS.get(refused.code, 500), refused.code, refused.message, refused.retry_after_s)


def _too_large(what: str) -> HttpError:
    limit = f"{MAX_MESSAGE_BYTES >> 20} MiB"
    return HttpError(413, grpc.StatusCode.RESOURCE_EXHAUSTED, f"{what} is over {limit}: send smaller exports")


class ByteBudget:
    """Bytes of request bodies held in memory by all requests together, at most ``capacity``, so
    that many clients sending large bodies at once cannot exhaust memory. A request reserves bytes
    before it reads (or inflates) them, waiting up to ``wait_s`` for others to release theirs.

    A request that holds everything in use may go over ``capacity`` alone: a body larger than the
    whole budget then waits for the others instead of being refused for ever."""

    def __init__(self, capacity: int = MAX_BYTES_IN_FLIGHT, wait_s: float = BUDGET_WAIT_S) -> None:
        self.capacity = capacity
        self.wait_s = wait_s
        self._in_use = 0
        self._changed = threading.Condition()

    @property
    def in_use(self) -> int:
        with self._changed:
            return self._in_use

    def reserve(self, n: int, held: int = 0, wait_s: float | None = None) -> bool:
        """Take ``n`` bytes more for a request that holds ``held``; False if they are not free within
        ``wait_s`` (by default the budget's)."""
        if n <= 0:
            return True
        with self._changed:
            if not self._changed.wait_for(
                lambda: self._in_use + n <= self.capacity or self._in_use == held,
                self.wait_s if wait_s is None else wait_s,
            ):
                return False
            self._in_use += n
            return True

    def release(self, n: int) -> None:
        with self._changed:
            self._in_use -= n
            self._changed.notify_all()


class OtlpHttpServer:
    """Serves OTLP/HTTP on ``address`` (``host:port``; port 0 picks a free one) for ``receiver``,
    holding at most ``budget`` (by default ``MAX_BYTES_IN_FLIGHT``) of body bytes at once, on the
    hub's web stack (uvicorn, with ``_Protocol``'s read deadline and framing errors)."""

    def __init__(
        self,
        receiver: Receiver,
        address: str,
        budget: ByteBudget | None = None,
        readiness: Callable[[], list[str]] = list,
        tls: Tls | None = None,
    ) -> None:
        self.budget = budget or ByteBudget()
        self.app = OtlpHttpApp(receiver, self.budget, readiness)
        try:
            self._server = WebServer(
                self.app,
                address,
                "otlp-http",
                tls,
                http=_Protocol,
                backlog=LISTEN_BACKLOG,
                timeout_keep_alive=READ_TIMEOUT_S,
                h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            )
        except OSError as exc:
            raise OSError(
                f"cannot listen on {address} for OTLP/HTTP ({exc.strerror or exc}): is another hub or collector "
                "running there? (--http-address picks another address; 'off' turns OTLP/HTTP off)"
            ) from exc
        self.port = self._server.port
        self.url = self._server.url

    def start(self) -> None:
        self._server.start()

    def stop(self, grace_s: float = 5.0) -> None:
        """Take no new exports (requests from now on get 503), wait up to ``grace_s`` for the
        exports in flight to be queued and answered, then close the listening socket and the
        connections."""
        self.app.begin_stop()
        if not self.app.wait_idle(grace_s):
            logger.warning("OTLP/HTTP stopped with exports still in flight after %.0f s", grace_s)
        self._server.stop()


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11), with two things OTLP clients and hostile ones need:

    - a read deadline: a connection whose client, in the middle of its headers or body, sends
      nothing for ``READ_TIMEOUT_S`` is closed (uvicorn's own timeout covers only idle keep-alive
      connections, so a stalled client would hold its connection and budget for ever);
    - a request whose framing is malformed (headers, Content-Length, chunk sizes: h11 refuses
      anything but hex digits and CRLFs where they belong) is answered 400 with a
      ``google.rpc.Status``, as OTLP answers every error, and its connection closed."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(READ_TIMEOUT_S, self._deadline_passed)

    def _deadline_passed(self) -> None:
        """Close a connection whose client sent nothing, or stopped in the middle of a request (its
        headers or its body); one whose request is whole and being answered is left alone."""
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            peer = _peer(self.client)
            logger.info("OTLP/HTTP connection from %s closed: nothing sent for %.0f s", peer, READ_TIMEOUT_S)
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        if self.conn.our_state is not h11.SEND_RESPONSE:  # an answer went out already: just close
            self.transport.close()
            return
        message = "malformed HTTP request: its headers, Content-Length or chunked framing are not HTTP/1.1"
        logger.warning("OTLP/HTTP from %s: 400 %s", _peer(self.client), message)
        body = Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=message).SerializeToString()
        headers = [(b"content-type", PROTOBUF.encode()), (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers), h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()


class _Disconnected(Exception):
    """The client went away before its request was read."""


class OtlpHttpApp:
    """The ASGI app: ``POST /v1/metrics`` and ``/v1/logs``, ``OPTIONS`` for browsers, the health
    checks (``GET /healthz``, ``/readyz``), errors for the rest. The receiver's work (inflating,
    parsing, queueing with its fsync) runs in worker threads, off the event loop that reads the
    other requests.

    ``readiness()`` lists what keeps the hub from being ready (empty: ready)."""

    def __init__(self, receiver: Receiver, budget: ByteBudget, readiness: Callable[[], list[str]] = list) -> None:
        self.receiver = receiver
        self.budget = budget
        self.readiness = readiness
        self._in_flight = 0
        self._stopping = False
        self._idle = threading.Condition()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await _Exchange(self, scope, receive, send).run()

    @contextmanager
    def export(self) -> Iterator[None]:
        """Count an export in flight, or refuse it once the server is stopping."""
        with self._idle:
            if self._stopping:
                raise HttpError(503, grpc.StatusCode.UNAVAILABLE, "the hub is shutting down; retry later", 5.0)
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def begin_stop(self) -> None:
        with self._idle:
            self._stopping = True

    def wait_idle(self, timeout_s: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout_s)


class _Exchange:
    """One request and its answer."""

    def __init__(self, app: OtlpHttpApp, scope: Scope, receive: Receive, send: Send) -> None:
        self.app = app
        self.receive = receive
        self._send_event = send
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.metadata = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
        self.headers = dict(self.metadata)  # names are lower case; of a repeated header, the last
        self.peer = _peer(scope.get("client"))
        self.held = 0  # bytes of the budget this request holds
        self.body_read = False

    async def run(self) -> None:
        try:
            if self.method in ("GET", "HEAD") and self.path in HEALTH_PATHS:
                await self._health()
                return
            if self.method == "OPTIONS":
                await self._preflight()
                return
            signal, is_json = self._check_headers()
            with self.app.export():
                try:
                    body = await self._read_body()
                    response = await asyncio.to_thread(self._accept, signal, is_json, body)
                finally:
                    self.app.budget.release(self.held)
                    self.held = 0
        except (HttpError, Refused) as exc:
            await self._fail(exc)
        except _Disconnected:
            logger.info("OTLP/HTTP connection from %s dropped in the middle of a request", self.peer)
        except Exception:
            logger.exception("OTLP/HTTP export from %s failed", self.peer)
            await self._fail(HttpError(500, grpc.StatusCode.INTERNAL, "internal error in the hub; see its log"))
        else:
            await self._send(200, _encode(response, is_json), is_json)

    # -- checks and body --------------------------------------------------------------------

    def _check_headers(self) -> tuple[Signal, bool]:
        """What the headers alone decide: the signal, whether the body is JSON, and every refusal
        that needs no body (path, method, type, encoding, size, app key)."""
        signal = PATHS.get(self.path)
        if signal is None:
            raise HttpError(404, grpc.StatusCode.NOT_FOUND, _not_found(self.path))
        if self.method != "POST":
            raise HttpError(405, grpc.StatusCode.UNIMPLEMENTED, f"{self.method} is not supported: POST OTLP exports")
        media_type = _media_type(self.headers.get("content-type"))
        if media_type not in (PROTOBUF, JSON):
            raise HttpError(
                415,
                grpc.StatusCode.UNIMPLEMENTED,
                f"unsupported Content-Type {media_type or '(none)'!r}: send {PROTOBUF} or {JSON}",
            )
        encoding = self.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip"):
            raise HttpError(
                415, grpc.StatusCode.UNIMPLEMENTED, f"unsupported Content-Encoding {encoding!r}: send gzip or none"
            )
        if self._length() > MAX_MESSAGE_BYTES:
            raise _too_large("the body")
        if self.app.receiver.keyring.app_for(key_from_metadata(self.metadata)) is None:
            # Refused before the body is read or parsed; ``accept`` says why, and logs it.
            self.app.receiver.accept(signal, b"", self.metadata, self.peer)
        return signal, media_type == JSON

    def _length(self) -> int:
        """The Content-Length (h11 checked it is one number); 0 for a chunked body."""
        return int(self.headers.get("content-length", "0"))

    async def _reserve(self, n: int) -> None:
        """Take ``n`` more bytes of the budget, waiting for them in a worker thread if they are not
        free now (the event loop goes on reading the requests that will free them)."""
        if not self.app.budget.reserve(n, self.held, wait_s=0):
            await asyncio.to_thread(self._reserve_or_refuse, n)
        else:
            self.held += n

    def _reserve_or_refuse(self, n: int) -> None:
        """Take ``n`` more bytes of the budget, waiting up to its ``wait_s``, or refuse (503)."""
        if not self.app.budget.reserve(n, self.held):
            self.app.receiver.stats.add("OTLP/HTTP exports refused: too many bytes in flight")
            raise HttpError(
                503,
                grpc.StatusCode.UNAVAILABLE,
                "the hub is receiving too much data at once; retry later",
                BUSY_RETRY_S,
            )
        self.held += n

    async def _read_body(self) -> bytes:
        """The body, each piece taken from the budget before it is kept (a Content-Length body's
        whole length at once); a chunked body is refused (413) once it passes the limit."""
        chunked = "content-length" not in self.headers
        if not chunked:
            await self._reserve(self._length())
        body = bytearray()
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected()
            piece = message.get("body", b"")
            if chunked:
                if len(body) + len(piece) > MAX_MESSAGE_BYTES:
                    raise _too_large("the body")
                await self._reserve(len(piece))
            body += piece
            if not message.get("more_body", False):
                self.body_read = True
                return bytes(body)

    def _accept(self, signal: Signal, is_json: bool, body: bytes) -> Message:
        """Inflate, parse and queue: in a worker thread."""
        if self.headers.get("content-encoding", "").strip().lower() in ("gzip", "x-gzip"):
            body = gunzip(body, MAX_MESSAGE_BYTES, self._reserve_or_refuse)
        data = json_to_protobuf(signal, body) if is_json else body
        return self.app.receiver.accept(signal, data, self.metadata, self.peer)

    # -- answers ----------------------------------------------------------------------------

    async def _health(self) -> None:
        """``/healthz``: the process answers (liveness: a restart would not help otherwise).
        ``/readyz``: it also stores what it takes (readiness): 503 with the reasons when the queue is
        full or stopping, or ClickHouse or the data directory fails."""
        problems = await asyncio.to_thread(self.app.readiness) if self.path == "/readyz" else []
        if self.app._stopping:
            problems.append("the hub is shutting down")
        body = json.dumps({"status": "unavailable" if problems else "ok", "problems": problems}).encode()
        await self._send(503 if problems else 200, body, True)

    async def _preflight(self) -> None:
        """CORS preflight: browsers may send from any origin (no cookies are involved: the app
        key is the only credential, and the answers hold nothing but acknowledgements)."""
        if self.path not in PATHS:
            raise HttpError(404, grpc.StatusCode.NOT_FOUND, _not_found(self.path))
        headers = {
            "allow": "POST, OPTIONS",
            "access-control-allow-methods": "POST",
            "access-control-allow-headers": _NOT_HEADER_LIST.sub(
                "", self.headers.get("access-control-request-headers", "content-type")
            )[:1000],
            "access-control-max-age": "600",
        }
        await self._send(204, b"", False, headers)

    async def _fail(self, exc: HttpError | Refused) -> None:
        error = exc if isinstance(exc, HttpError) else HttpError.refused(exc)
        quiet = isinstance(exc, Refused) or error.status in (404, 405)  # ``accept`` logs its own
        (logger.debug if quiet else logger.warning)(
            "OTLP/HTTP %s %s from %s: %d %s", self.method, self.path, self.peer, error.status, error.message
        )
        headers = {}
        if error.retry_after_s is not None:
            headers["retry-after"] = str(math.ceil(error.retry_after_s))
        if error.status == 405:
            headers["allow"] = "POST, OPTIONS"
        is_json = _media_type(self.headers.get("content-type")) == JSON
        status = Status(code=error.code.value[0], message=error.message)
        await self._send(error.status, _encode(status, is_json), is_json, headers)

    async def _send(self, status: int, body: bytes, is_json: bool, headers: dict[str, str] | None = None) -> None:
        """The answer. Of a request refused before its body was read, uvicorn reads and drops the
        body and keeps the connection; one whose client waits for "100 Continue" is closed (that
        client sends no body)."""
        fields = {"content-type": JSON if is_json else PROTOBUF, "content-length": str(len(body)), **(headers or {})}
        if self.headers.get("origin"):
            fields["access-control-allow-origin"] = "*"
            fields["access-control-expose-headers"] = "Retry-After"
        if not self.body_read and self.headers.get("expect", "").lower() == "100-continue":
            fields["connection"] = "close"
        raw = [(name.encode(), value.encode()) for name, value in fields.items()]
        await self._send_event({"type": "http.response.start", "status": status, "headers": raw})
        await self._send_event({"type": "http.response.body", "body": body})


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _not_found(path: str) -> str:
    return f"no OTLP endpoint at {path}: POST metrics to /v1/metrics and logs to /v1/logs"


def _encode(message: Message, is_json: bool) -> bytes:
    if is_json:
        return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()
    return message.SerializeToString()


def gunzip(data: bytes, limit: int, reserve: Callable[[int], None]) -> bytes:
    """Inflate a gzip body of up to ``MAX_GZIP_MEMBERS`` members (else 400), never beyond ``limit``
    bytes (then 413); ``reserve`` is told each step's output (at most ``_INFLATE_STEP``) and may
    refuse it by raising.

    The input is fed in windows of ``_CHUNK`` bytes: zlib copies what follows the end of a member
    (``unused_data``) or the output limit (``unconsumed_tail``), so feeding it the whole rest of
    the body would cost time quadratic in the number of members."""
    out = bytearray()
    view = memoryview(data)
    offset = members = 0
    try:
        while offset < len(view):
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise HttpError(
                    400,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the gzip body has more than {MAX_GZIP_MEMBERS} members: send one gzip stream",
                )
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while not inflater.eof:
                window = view[offset : offset + _CHUNK]
                piece = inflater.decompress(window, min(limit + 1 - len(out), _INFLATE_STEP))
                consumed = len(window) - len(inflater.unconsumed_tail) - len(inflater.unused_data)
                if not (piece or consumed or inflater.eof):
                    raise zlib.error("the gzip stream ends early")
                offset += consumed
                reserve(len(piece))
                out += piece
                if len(out) > limit:
                    raise _too_large("the inflated body")
    except zlib.error as exc:
        raise HttpError(400, grpc.StatusCode.INVALID_ARGUMENT, f"malformed gzip body: {exc}") from None
    return bytes(out)


def json_to_protobuf(signal: Signal, body: bytes) -> bytes:
    """An OTLP/JSON body as the binary request: the protobuf JSON mapping, with OTLP's
    exceptions (hex trace and span ids; unknown fields ignored)."""
    request = signal.request_type()
    try:
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError("the body must be a JSON object")
        json_format.ParseDict(_hex_ids_to_base64(document), request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        name = signal.request_type.DESCRIPTOR.name
        raise HttpError(400, grpc.StatusCode.INVALID_ARGUMENT, f"malformed {name} (OTLP/JSON): {exc}") from None
    return request.SerializeToString()


def _hex_ids_to_base64(value: Any) -> Any:
    """OTLP/JSON writes trace and span ids in hex where the protobuf JSON mapping has base64."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _HEX_IDS and isinstance(item, str):
                try:
                    value[key] = base64.b64encode(bytes.fromhex(item)).decode()
                except ValueError:
                    raise ValueError(f"{key} must be hex, not {item[:64]!r}") from None
            else:
                _hex_ids_to_base64(item)
    elif isinstance(value, list):
        for item in value:
            _hex_ids_to_base64(item)
    return value
