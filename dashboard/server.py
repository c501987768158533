"""The dashboard's HTTP server: uvicorn in a thread of the hub's process (the hub owns the embedded
ClickHouse, so the dashboard reads through it), on an address of its own."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette

from tallyhub.collector_processor.query_api import is_loopback

logger = logging.getLogger("tallyhub.dashboard")


class DashboardAddressError(ValueError):
    """A dashboard address the hub refuses to listen on (a non-loopback one without users)."""


def check_dashboard_address(address: str, has_users: bool) -> None:
    """Anyone who reaches a loopback address is on this machine and gets in by the printed link;
    on any other address, only dashboard users who sign in with a password."""
    host = address.rpartition(":")[0].strip("[]")
    if is_loopback(host) or has_users:
        return
    raise DashboardAddressError(
        f"--dashboard-address {address} is not a loopback address, and no dashboard user exists: anyone who "
        "reaches it could read every app's data. Add one first with `tallyhub users add NAME` (then sign in "
        "with that name and password), or keep the dashboard on 127.0.0.1."
    )


class DashboardServer:
    def __init__(self, app: Starlette, address: str) -> None:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, int(port)))
        self.host = host
        self.port = self._socket.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}"
        # log_config=None: the hub's logging stays as it is (uvicorn's default would reconfigure it)
        config = uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="tallyhub-dashboard", daemon=True
        )

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def start(self, wait_s: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + wait_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start on {self.url}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
