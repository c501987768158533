"""An app's unhandled exception passes one frame of tallyhub's on its way to the server, which logs
the traceback and formats every frame of it (issue 16, point 2: Python 3.11 formats each frame
with caret anchors, 20-45 µs a frame). Counted on the exception as the server receives it."""

from __future__ import annotations

import asyncio
import io
import traceback
from pathlib import Path

import pytest

import tallyhub.instrumentation
from tallyhub.instrumentation.asgi import ASGIMiddleware
from tallyhub.instrumentation.wsgi import WSGIMiddleware

from .conftest import capturing_client

CLIENT_DIR = str(Path(tallyhub.instrumentation.__file__).parent)


def tallyhub_frames(exc: BaseException) -> list[str]:
    return [
        f"{f.name} ({Path(f.filename).name})"
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename.startswith(CLIENT_DIR)
    ]


class Boom(Exception):
    pass


async def failing_asgi(scope, receive, send) -> None:
    raise Boom("the handler failed")


def failing_wsgi(environ, start_response):
    raise Boom("the handler failed")


def test_an_asgi_apps_exception_passes_one_frame_of_the_middleware() -> None:
    middleware = ASGIMiddleware(failing_asgi, client=capturing_client())
    scope = {"type": "http", "method": "GET", "path": "/items/1", "headers": [], "root_path": ""}

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        pass

    with pytest.raises(Boom) as caught:
        asyncio.run(middleware(scope, receive, send))
    assert tallyhub_frames(caught.value) == ["__call__ (asgi.py)"]


def test_a_wsgi_apps_exception_passes_one_frame_of_the_middleware() -> None:
    middleware = WSGIMiddleware(failing_wsgi, client=capturing_client())
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/items/1", "wsgi.input": io.BytesIO(b"")}
    with pytest.raises(Boom) as caught:
        middleware(environ, lambda status, headers, exc_info=None: None)
    assert tallyhub_frames(caught.value) == ["__call__ (wsgi.py)"]
