"""The hub's web stack: an ASGI app (Starlette's, or OTLP/HTTP's own) served by uvicorn in a thread of
the hub's process, on an address of its own. OTLP/HTTP, the dashboard and the query endpoint run on
it (the hub owns the embedded ClickHouse, so whatever reads it goes through the hub's process)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from tallyhub.collector_processor.tls import Tls


class WebServer:
    """``app`` on ``address`` (``host:port``, IPv6 in brackets; port 0 picks a free one), bound at
    once (an address in use raises ``OSError`` here), over TLS with ``tls``; ``settings`` go to
    ``uvicorn.Config``."""

    def __init__(self, app: ASGIApp, address: str, name: str, tls: Tls | None = None, **settings: Any) -> None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.name = name
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, int(port)))
        self.host = host
        self.port = self._socket.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if tls else 'http'}://{shown}:{self.port}"
        if tls is not None:
            settings.update(tls.uvicorn_settings())
        # log_config=None: the hub's logging stays as it is (uvicorn's default would reconfigure it)
        settings = {"timeout_keep_alive": 30, **settings}
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="off", **settings)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name=f"tallyhub-{name}", daemon=True
        )

    def start(self, wait_s: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + wait_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.name} did not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
