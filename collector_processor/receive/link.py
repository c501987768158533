"""The link between receiver processes and the hub's process: a private Unix socket.

A receiver process (``receiver_process``) takes OTLP exports on the hub's gRPC port (shared
through ``SO_REUSEPORT``): it authenticates, checks and answers them on a core of its own. What
must stay in one place stays in the hub's process: the durable queue (one order, one fsync'd log,
one deduplication of batch ids) and the app keys (read from ClickHouse). So the receiver asks the
hub to queue each export (``QueueLink.append``: it returns once the hub has it on disk, and only
then is the client acknowledged), to tell it the app keys (``QueueLink.keys``) and whether an app's
logged requests fit its daily quota (``QueueLink.request_log_quota``), and sends its
counters for ``tallyhub status`` (``QueueLink.send_stats``).

Frames: 4-byte body length, 1-byte operation, body. The socket lives in a directory only the hub's
user may enter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from tallyhub.collector_processor.queue import DurableQueue, QueueFull
from tallyhub.collector_processor.stats import Stats

logger = logging.getLogger("tallyhub.receivers")

_FRAME = struct.Struct("<IB")
_APPEND = struct.Struct("<BQHH")  # kind, received_ns, app length, batch id length
_ANSWER = struct.Struct("<Bq")  # outcome, sequence number
OP_APPEND, OP_KEYS, OP_STATS, OP_QUOTA, OP_ANSWER = b"A"[0], b"K"[0], b"S"[0], b"Q"[0], b"R"[0]
QUEUED, SENT_AGAIN, FULL, DISK_ERROR = range(4)


class LinkClosed(ConnectionError):
    """The other side of the link went away."""


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buffer = bytearray(n)
    view = memoryview(buffer)
    got = 0
    while got < n:
        read = sock.recv_into(view[got:], n - got)
        if not read:
            raise LinkClosed("the link was closed")
        got += read
    return bytes(buffer)


def _send(sock: socket.socket, op: int, *parts: bytes) -> None:
    sock.sendall(_FRAME.pack(sum(len(p) for p in parts), op) + b"".join(parts[:1]))
    for part in parts[1:]:
        sock.sendall(part)


def _receive(sock: socket.socket) -> tuple[int, bytes]:
    length, op = _FRAME.unpack(_recv_exactly(sock, _FRAME.size))
    return op, _recv_exactly(sock, length)


class QueueLink:
    """The receiver process's side: a connection per thread (the gRPC handlers run in several)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._sent: dict[str, int] = {}

    def _socket(self) -> socket.socket:
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.path)
            self._local.sock = sock
        return sock

    def _call(self, op: int, *parts: bytes) -> bytes:
        sock = self._socket()
        try:
            _send(sock, op, *parts)
            answer_op, body = _receive(sock)
        except OSError:
            self._local.sock = None
            sock.close()
            raise
        if answer_op != OP_ANSWER:
            raise LinkClosed(f"unexpected answer {answer_op} on the link")
        return body

    def append(self, kind: int, app: str, payload: bytes, received_ns: int, batch_id: str = "") -> int | None:
        """``DurableQueue.append`` in the hub's process (QueueFull and OSError as there)."""
        app_bytes, id_bytes = app.encode(), batch_id.encode()
        head = _APPEND.pack(kind, received_ns, len(app_bytes), len(id_bytes)) + app_bytes + id_bytes
        try:
            body = self._call(OP_APPEND, head, payload)
        except OSError as exc:
            raise OSError(f"the hub's process did not take the export: {exc}") from None
        outcome, seq = _ANSWER.unpack_from(body)
        message = body[_ANSWER.size :].decode()
        if outcome == QUEUED:
            return seq
        if outcome == SENT_AGAIN:
            return None
        if outcome == FULL:
            raise QueueFull(message)
        raise OSError(message)

    def keys(self) -> dict[str, str]:
        """The app keys' hashes → apps, as the hub's process last read them."""
        return json.loads(self._call(OP_KEYS))

    def request_log_quota(self, app: str, logged: int) -> tuple[int, str]:
        """The hub's request log quota (``quota.py``): how many of ``logged`` more requests ``app``
        may store today, and why not the others."""
        allowed, message = json.loads(self._call(OP_QUOTA, json.dumps([app, logged]).encode()))
        return int(allowed), str(message)

    def send_stats(self, stats: Stats) -> None:
        """What the counters gained since the last call, added to the hub's."""
        counts = stats.counts()
        gained = {name: n - self._sent.get(name, 0) for name, n in counts.items() if n != self._sent.get(name, 0)}
        if gained:
            self._call(OP_STATS, json.dumps(gained).encode())
            self._sent = counts


class QueueServer:
    """The hub's side: queues what receiver processes send, tells them the keys, adds their counters."""

    def __init__(
        self,
        path: Path,
        queue: DurableQueue,
        keys: Callable[[], dict[str, str]],
        stats: Stats,
        request_log_quota: Callable[[str, int], tuple[int, str]] = lambda app, logged: (logged, ""),
    ) -> None:
        self.path = path
        self.queue = queue
        self._keys = keys
        self.stats = stats
        self._quota = request_log_quota
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tallyhub-link", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(5)
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="tallyhub-link-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while not self._stopped.is_set():
                try:
                    op, body = _receive(conn)
                except (OSError, LinkClosed):
                    return
                try:
                    answer = self._answer(op, body)
                except Exception:  # a bug: the receiver sees the link close and refuses with UNAVAILABLE
                    logger.exception("the link to a receiver process failed (a bug: please report)")
                    return
                if answer is not None:
                    try:
                        _send(conn, OP_ANSWER, answer)
                    except OSError:
                        return

    def _answer(self, op: int, body: bytes) -> bytes | None:
        if op == OP_APPEND:
            kind, received_ns, app_length, id_length = _APPEND.unpack_from(body)
            start = _APPEND.size
            app = body[start : start + app_length].decode()
            batch_id = body[start + app_length : start + app_length + id_length].decode()
            payload = body[start + app_length + id_length :]
            try:
                seq = self.queue.append(kind, app, payload, received_ns, batch_id)
            except QueueFull as exc:
                return _ANSWER.pack(FULL, 0) + str(exc).encode()
            except OSError as exc:
                return _ANSWER.pack(DISK_ERROR, 0) + str(exc).encode()
            return _ANSWER.pack(SENT_AGAIN, 0) if seq is None else _ANSWER.pack(QUEUED, seq)
        if op == OP_KEYS:
            return json.dumps(self._keys()).encode()
        if op == OP_QUOTA:
            app, logged = json.loads(body)
            return json.dumps(self._quota(str(app), int(logged))).encode()
        if op == OP_STATS:
            for name, n in json.loads(body).items():
                self.stats.add(name, int(n))
            return b""
        raise ValueError(f"unknown operation {op} on the receivers' link")
