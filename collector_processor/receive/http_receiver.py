"""The OTLP/HTTP receiver: ``POST /v1/metrics`` and ``POST /v1/logs`` on the standard port 4318.

The transport of https://opentelemetry.io/docs/specs/otlp/#otlphttp around the same ``Receiver``
as gRPC: binary protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``),
optionally gzipped. JSON is turned into the protobuf request first, so the queue holds protobuf
whatever the client sent. Answers come in the request's content type: the export response (200,
with partial success when some data is not stored), or a ``google.rpc.Status`` with a 4xx/5xx.
Bodies are never read or inflated beyond ``MAX_MESSAGE_BYTES``, and all requests together hold
at most a ``ByteBudget`` of body bytes: what does not fit in time is answered 503 + Retry-After,
which OTLP clients retry.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status

from tallyhub.collector_processor.receive.auth import key_from_metadata
from tallyhub.collector_processor.receive.receiver import LOGS, MAX_MESSAGE_BYTES, METRICS, Receiver, Refused, Signal

logger = logging.getLogger("tallyhub.http_receiver")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
PATHS = {"/v1/metrics": METRICS, "/v1/logs": LOGS}
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
}
"""The HTTP status of each ``Refused`` code (anything else: 500)."""
READ_TIMEOUT_S = 30.0
"""A connection that sends nothing for this long (idle keep-alive, stalled body) is closed."""
MAX_BYTES_IN_FLIGHT = 4 * MAX_MESSAGE_BYTES
"""The default ``ByteBudget``: body bytes, as sent and inflated, held by all requests at once."""
BUDGET_WAIT_S = 1.0
"""How long a request waits for its share of the budget before it is answered 503."""
BUSY_RETRY_S = 1.0
"""The Retry-After of a request refused because the budget is spent."""
MAX_GZIP_MEMBERS = 64
"""Gzip members in one body (real clients send one; each member costs a new inflater)."""
LISTEN_BACKLOG = 1024
"""Connections the kernel holds until they are accepted (socketserver's default, 5, resets bursts)."""
_HEX_IDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_CHUNK = 1 << 16
_INFLATE_STEP = 1 << 20
"""The most a body is inflated by before the budget is asked for it."""
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]+)[ \t]*(?:;[^\r\n]*)?\r?\n")
"""A chunk-size line (RFC 9112 7.1): hex digits, optional extensions; nothing else."""
_MAX_TRAILER_LINES = 100
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

    def reserve(self, n: int, held: int = 0) -> bool:
        """Take ``n`` bytes more for a request that holds ``held``; False if they are not free in time."""
        if n <= 0:
            return True
        with self._changed:
            if not self._changed.wait_for(
                lambda: self._in_use + n <= self.capacity or self._in_use == held, self.wait_s
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
    holding at most ``budget`` (by default ``MAX_BYTES_IN_FLIGHT``) of body bytes at once."""

    def __init__(self, receiver: Receiver, address: str, budget: ByteBudget | None = None) -> None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, int(port)), _Handler)
        except OSError as exc:
            raise OSError(
                f"cannot listen on {address} for OTLP/HTTP ({exc.strerror or exc}): is another hub or collector "
                "running there? (--http-address picks another address; 'off' turns OTLP/HTTP off)"
            ) from exc
        self._server.receiver = receiver
        self.budget = self._server.budget = budget or ByteBudget()
        self.port: int = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host or "0.0.0.0"
        self.url = f"http://{shown}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="tallyhub-otlp-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, grace_s: float = 5.0) -> None:
        """Take no new exports (later requests on open connections get 503), close the listening
        socket, and wait up to ``grace_s`` for the exports in flight to be queued and answered."""
        self._server.begin_stop()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        if not self._server.wait_idle(grace_s):
            logger.warning("OTLP/HTTP stopped with exports still in flight after %.0f s", grace_s)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
    receiver: Receiver
    budget: ByteBudget

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight = 0
        self._stopping = False
        self._idle = threading.Condition()

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


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as OTLP clients expect
    timeout = READ_TIMEOUT_S
    server: _Server

    # -- per request ------------------------------------------------------------------------

    def handle_one_request(self) -> None:
        self._framing: tuple[bool, int] | None = None  # (chunked, Content-Length), once known
        self._body_read = False
        self._expecting = False  # the client waits for "100 Continue" before sending its body
        self._held = 0  # bytes of the server's budget this request holds
        try:
            super().handle_one_request()
        except OSError as exc:  # the client went away or stalled (reading its body, or writing the answer)
            logger.info("OTLP/HTTP connection from %s dropped: %s", self._peer(), exc)
            self.close_connection = True

    def handle_expect_100(self) -> bool:
        """Refuse before the client sends its body when the headers already say why (too large,
        wrong path, type or key); otherwise invite the body."""
        self._expecting = True
        try:
            self._check_headers()
        except (HttpError, Refused) as exc:
            self._fail(exc)
            return False
        self._expecting = False
        return super().handle_expect_100()

    def do_POST(self) -> None:
        try:
            signal, is_json = self._check_headers()
            with self.server.export(), self._holding():
                body = self._read_body()
                if self.headers.get("Content-Encoding", "").strip().lower() in ("gzip", "x-gzip"):
                    body = gunzip(body, MAX_MESSAGE_BYTES, self._reserve)
                data = json_to_protobuf(signal, body) if is_json else body
                response = self.server.receiver.accept(signal, data, self._metadata(), self._peer())
        except (HttpError, Refused) as exc:
            self._fail(exc)
        except OSError:
            raise  # the connection failed: no answer can be sent (see handle_one_request)
        except Exception:
            logger.exception("OTLP/HTTP export from %s failed", self._peer())
            self._fail(HttpError(500, grpc.StatusCode.INTERNAL, "internal error in the hub; see its log"))
        else:
            self._send(200, _encode(response, is_json), is_json)

    def do_OPTIONS(self) -> None:
        """CORS preflight: browsers may send from any origin (no cookies are involved: the app
        key is the only credential, and the answers hold nothing but acknowledgements)."""
        if urlsplit(self.path).path not in PATHS:
            self._fail(HttpError(404, grpc.StatusCode.NOT_FOUND, _not_found(self.path)))
            return
        headers = {
            "Allow": "POST, OPTIONS",
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": _NOT_HEADER_LIST.sub(
                "", self.headers.get("Access-Control-Request-Headers", "content-type")
            )[:1000],
            "Access-Control-Max-Age": "600",
        }
        self._send(204, b"", False, headers)

    def do_GET(self) -> None:
        self._fail(self._wrong_method())

    do_HEAD = do_PUT = do_PATCH = do_DELETE = do_GET

    # -- checks and body --------------------------------------------------------------------

    def _check_headers(self) -> tuple[Signal, bool]:
        """What the headers alone decide: the signal, whether the body is JSON, and every refusal
        that needs no body (path, method, type, encoding, size, app key)."""
        path = urlsplit(self.path).path
        signal = PATHS.get(path)
        if signal is None:
            raise HttpError(404, grpc.StatusCode.NOT_FOUND, _not_found(path))
        if self.command != "POST":
            raise self._wrong_method()
        media_type = _media_type(self.headers.get("Content-Type"))
        if media_type not in (PROTOBUF, JSON):
            raise HttpError(
                415,
                grpc.StatusCode.UNIMPLEMENTED,
                f"unsupported Content-Type {media_type or '(none)'!r}: send {PROTOBUF} or {JSON}",
            )
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip"):
            raise HttpError(
                415, grpc.StatusCode.UNIMPLEMENTED, f"unsupported Content-Encoding {encoding!r}: send gzip or none"
            )
        if self._body_framing()[1] > MAX_MESSAGE_BYTES:
            raise _too_large("the body")
        metadata = self._metadata()
        if self.server.receiver.keyring.app_for(key_from_metadata(metadata)) is None:
            # Refused before the body is read or parsed; ``accept`` says why, and logs it.
            self.server.receiver.accept(signal, b"", metadata, self._peer())
        return signal, media_type == JSON

    def _wrong_method(self) -> HttpError:
        if urlsplit(self.path).path not in PATHS:
            return HttpError(404, grpc.StatusCode.NOT_FOUND, _not_found(self.path))
        return HttpError(405, grpc.StatusCode.UNIMPLEMENTED, f"{self.command} is not supported: POST OTLP exports")

    def _body_framing(self) -> tuple[bool, int]:
        """(chunked, Content-Length) of the request body; a request whose body cannot be framed
        is refused, and its connection closed."""
        if self._framing is None:
            transfer = self.headers.get("Transfer-Encoding", "").strip().lower()
            length = self.headers.get("Content-Length", "0").strip()
            if transfer and transfer != "chunked":
                self.close_connection = True
                raise HttpError(501, grpc.StatusCode.UNIMPLEMENTED, f"unsupported Transfer-Encoding {transfer!r}")
            if not transfer and not (length.isascii() and length.isdigit()):
                self.close_connection = True
                raise HttpError(400, grpc.StatusCode.INVALID_ARGUMENT, f"malformed Content-Length {length[:20]!r}")
            self._framing = (True, 0) if transfer else (False, int(length))
        return self._framing

    @contextmanager
    def _holding(self) -> Iterator[None]:
        """Give back the budget this request took, before it is answered."""
        try:
            yield
        finally:
            self.server.budget.release(self._held)
            self._held = 0

    def _reserve(self, n: int) -> None:
        """Take ``n`` more bytes of the server's budget for this request, or refuse it (503)."""
        if not self.server.budget.reserve(n, self._held):
            self.server.receiver.stats.add("OTLP/HTTP exports refused: too many bytes in flight")
            raise HttpError(
                503,
                grpc.StatusCode.UNAVAILABLE,
                "the hub is receiving too much data at once; retry later",
                BUSY_RETRY_S,
            )
        self._held += n

    def _read_body(self) -> bytes:
        chunked, length = self._body_framing()
        if chunked:
            body = self._read_chunked(MAX_MESSAGE_BYTES)
        else:
            self._reserve(length)
            body = self.rfile.read(length)
            if len(body) < length:
                self.close_connection = True
                raise HttpError(400, grpc.StatusCode.INVALID_ARGUMENT, "the body ended before its Content-Length")
        self._body_read = True
        return body

    def _read_chunked(self, limit: int) -> bytes:
        """A chunked body, each chunk size checked against ``limit`` and the budget before the
        chunk is read; anything but hex sizes and CRLFs where they belong is refused (400)."""
        body = bytearray()
        try:
            while True:
                line = _CHUNK_SIZE.fullmatch(self.rfile.readline(1024))
                if line is None:
                    raise ValueError("malformed chunk size")
                size = int(line[1], 16)
                if size == 0:
                    for _ in range(_MAX_TRAILER_LINES):  # trailer fields, up to the blank line
                        trailer = self.rfile.readline(1024)
                        if not trailer.endswith(b"\n"):
                            raise ValueError("malformed trailer")
                        if trailer in (b"\r\n", b"\n"):
                            return bytes(body)
                    raise ValueError("too many trailer fields")
                if len(body) + size > limit:
                    raise _too_large("the body")
                self._reserve(size)
                chunk = self.rfile.read(size)
                if len(chunk) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise ValueError("short chunk")
                body += chunk
        except ValueError as exc:
            self.close_connection = True
            raise HttpError(400, grpc.StatusCode.INVALID_ARGUMENT, f"malformed chunked body: {exc}") from None

    def _metadata(self) -> list[tuple[str, str]]:
        return [(name.lower(), value) for name, value in self.headers.items()]

    def _peer(self) -> str:
        return f"{self.client_address[0]}:{self.client_address[1]}"

    # -- answers ----------------------------------------------------------------------------

    def _fail(self, exc: HttpError | Refused) -> None:
        error = exc if isinstance(exc, HttpError) else HttpError.refused(exc)
        quiet = isinstance(exc, Refused) or error.status in (404, 405)  # ``accept`` logs its own
        (logger.debug if quiet else logger.warning)(
            "OTLP/HTTP %s %s from %s: %d %s", self.command, self.path, self._peer(), error.status, error.message
        )
        headers = {}
        if error.retry_after_s is not None:
            headers["Retry-After"] = str(math.ceil(error.retry_after_s))
        if error.status == 405:
            headers["Allow"] = "POST, OPTIONS"
        is_json = _media_type(self.headers.get("Content-Type")) == JSON
        status = Status(code=error.code.value[0], message=error.message)
        self._send(error.status, _encode(status, is_json), is_json, headers)

    def _send(self, status: int, body: bytes, is_json: bool, headers: dict[str, str] | None = None) -> None:
        linger = self._settle_body()
        self.send_response(status)
        self.send_header("Content-Type", JSON if is_json else PROTOBUF)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.headers.get("Origin"):
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Expose-Headers", "Retry-After")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if linger:
            self._linger()

    def _settle_body(self) -> bool:
        """Before answering a request refused before its body was read: read and drop a body of
        at most ``MAX_MESSAGE_BYTES`` to keep the connection, else close it. True: linger."""
        if self._body_read:
            return False
        try:
            chunked, length = self._body_framing()
        except HttpError:
            chunked, length = True, 0
        if not chunked and length == 0:
            return False
        if chunked or self._expecting or length > MAX_MESSAGE_BYTES:
            self.close_connection = True
            return True
        while length > 0:
            chunk = self.rfile.read(min(length, _CHUNK))
            if not chunk:
                self.close_connection = True
                break
            length -= len(chunk)
        self._body_read = True
        return False

    def _linger(self, idle_s: float = 1.0, total_s: float = 5.0) -> None:
        """Close after an early answer without resetting the connection under a client still
        sending its body (it would miss the answer): read and drop what comes, for a while."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(idle_s)
            deadline = time.monotonic() + total_s
            while time.monotonic() < deadline and self.rfile.read1(_CHUNK):
                pass
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)


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
