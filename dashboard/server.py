"""The dashboard's HTTP server: the hub's web stack (``web_server``) on an address of its own, and the
rule for which addresses it may listen on."""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from tallyhub.collector_processor.query_api import is_loopback
from tallyhub.collector_processor.tls import Tls
from tallyhub.collector_processor.web_server import WebServer

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


class DashboardServer(WebServer):
    def __init__(self, app: Starlette, address: str, tls: Tls | None = None) -> None:
        super().__init__(app, address, "dashboard", tls)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)
