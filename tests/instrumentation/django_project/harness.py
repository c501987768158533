"""Driving Django's real WSGI and ASGI handlers (not the test client) with one request each."""

from __future__ import annotations

import asyncio
import io
import threading
from typing import Any
from wsgiref.util import FileWrapper, setup_testing_defaults


def wsgi_request(path: str, *, script_name: str = "", method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
    """One request through a new ``WSGIHandler``, as a WSGI server makes it (PEP 3333: the body is
    iterated, then closed; ``wsgi.file_wrapper`` is offered)."""
    from django.core.handlers.wsgi import WSGIHandler

    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path.encode().decode("latin-1"),  # PEP 3333: bytes as latin-1
        "CONTENT_LENGTH": str(len(body)) if body else "",
        "wsgi.input": io.BytesIO(body),
        "wsgi.file_wrapper": FileWrapper,
    }
    setup_testing_defaults(environ)
    started: list[str] = []
    result = WSGIHandler()(environ, lambda status, headers, exc_info=None: started.append(status))
    try:
        content = b"".join(result)
    finally:
        result.close()
    return int(started[0].split()[0]), content


async def asgi_request(
    path: str,
    *,
    root_path: str = "",
    method: str = "GET",
    body: bytes = b"",
    disconnect: threading.Event | None = None,
) -> tuple[int | None, bytes]:
    """One request through a new ``ASGIHandler``; with ``disconnect``, the client goes away once that
    event is set (the status is then None if no response started)."""
    from django.core.handlers.asgi import ASGIHandler

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    status: int | None = None
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        if disconnect is not None:
            while not disconnect.is_set():
                await asyncio.sleep(0.001)
            return {"type": "http.disconnect"}
        await asyncio.Future()  # the connection stays open until Django stops listening
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await ASGIHandler()(scope, receive, send)
    return status, b"".join(chunks)
