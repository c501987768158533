"""Real receivers on loopback for the alerts' tests (a pytest plugin: tests/conftest.py loads it): an
HTTP server that records what it is
sent and answers as told, a port that accepts connections and never answers, and SMTP servers
(aiosmtpd: plain, STARTTLS with a login, implicit TLS) with a self-signed certificate."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tallyhub.alerts.notify.message import Notification
from tests.conftest import free_port

AT = datetime(2024, 5, 1, 12, 5, tzinfo=UTC)


def notification(id: str = "n-1", state: str = "firing") -> Notification:
    return Notification(
        id=id,
        rule="high-errors",
        state=state,
        app="shop",
        env="production",
        scope="GET /items/{id}",
        metric="error_rate",
        condition="error_rate > 0.05 over 5m",
        value=0.12,
        threshold=0.05,
        at=AT,
        since=AT - timedelta(minutes=5),
        dashboard_url="https://hub.example.com/alerts/high-errors",
    )


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1: records every POST, answers with the next of ``answers``
    (status, body, headers), then 200 ``ok``."""

    answers: list[tuple[int, bytes, dict[str, str]]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tallyhub"

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.answers.append((status, body, headers or {}))

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Received]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.requests) >= count, timeout_s), (
                f"{len(self.requests)} requests of {count} received"
            )
            return list(self.requests)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver.arrived:
                receiver.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                )
                status, answer, headers = receiver.answers.pop(0) if receiver.answers else (200, b"ok", {})
                receiver.arrived.notify_all()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve()


@pytest.fixture
def other_receiver() -> Iterator[Receiver]:
    yield from serve()


def serve(port: int = 0) -> Iterator[Receiver]:
    """A ``Receiver`` on ``port`` (0: any free one) until the generator is closed."""
    receiver = Receiver()
    receiver.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(receiver))
    receiver.server.daemon_threads = True
    thread = threading.Thread(target=receiver.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(5)


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"


@pytest.fixture
def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/hook"


OPENSSL = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (as tests/e2e/test_tls.py makes them)."""
    directory = tmp_path_factory.mktemp("smtp-tls")
    cert, key = directory / "smtp.pem", directory / "smtp-key.pem"
    subprocess.run(
        [*OPENSSL, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@dataclass
class Inbox:
    """An aiosmtpd handler: keeps every accepted mail."""

    envelopes: list[Envelope] = field(default_factory=list)
    sessions: list[dict[str, bool]] = field(default_factory=list)
    port: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        self.sessions.append({"tls": session.ssl is not None, "authenticated": bool(session.authenticated)})
        return "250 OK"

    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(e.content, policy=default) for e in self.envelopes]  # type: ignore[misc]


USER, PASSWORD = "alerts@example.com", "p:ss word"


def _authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 235 or 535


def _smtp(**kwargs: Any) -> Iterator[Inbox]:
    inbox = Inbox(port=free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port, **kwargs)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def plain_smtp() -> Iterator[Inbox]:
    yield from _smtp()


@pytest.fixture
def starttls_smtp(certificate: tuple[Path, Path]) -> Iterator[Inbox]:
    """STARTTLS required, then a login (``USER``, ``PASSWORD``) required."""
    yield from _smtp(
        tls_context=_server_context(certificate),
        require_starttls=True,
        authenticator=_authenticator,
        auth_required=True,
    )


@pytest.fixture
def tls_smtp(certificate: tuple[Path, Path]) -> Iterator[Inbox]:
    """TLS from the first byte (smtps://)."""
    yield from _smtp(ssl_context=_server_context(certificate))
