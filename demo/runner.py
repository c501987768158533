"""`tallyhub demo`: the hub, the bookshop served by uvicorn and traffic against it, in one process,
until SIGTERM or SIGINT.

Everything runs in threads of this process (the hub's own, uvicorn's, the traffic's): stopping it
stops everything, and nothing is left behind. The hub listens on free loopback ports so that the
demo runs beside a real hub.
"""

from __future__ import annotations

import logging
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from tallyhub.collector_processor.hub import Hub, HubSettings
from tallyhub.collector_processor.query_api import HubRunner
from tallyhub.collector_processor.receive.auth import generate_key, hash_key
from tallyhub.demo.bookshop import create_app
from tallyhub.demo.data import CONSUMERS
from tallyhub.demo.traffic import TrafficGenerator, TrafficMix
from tallyhub.storage.apps import SqlRunner, get_app, rotate_key
from tallyhub.storage.apps import create_app as create_hub_app

DEMO_APP = "demo"
EXAMPLE_QUERY = "SELECT route, status, sum(requests) FROM requests GROUP BY ALL ORDER BY ALL"


def run_demo(
    data_dir: Path, rate: float, export_interval: float, echo: Callable[[str], None], dashboard_address: str
) -> None:
    """Run the demo until SIGTERM or SIGINT, then stop the traffic, the app (its last export
    included) and the hub, in that order."""
    stop = _until_signalled()
    settings = HubSettings(
        data_dir=data_dir,
        grpc_address="127.0.0.1:0",
        http_address="",
        query_address="127.0.0.1:0",
        dashboard_address=dashboard_address,
    )
    hub = Hub(settings)
    hub.start()
    try:
        key = demo_app_key(HubRunner(hub.query_server.url, hub.query_server.token))
        if hub.dashboard is not None:
            echo(f"dashboard: {hub.dashboard_link()}")
        how_to_query = [
            f"query it: tallyhub report {DEMO_APP} --data-dir {data_dir} --since 15m",
            f"          tallyhub sql --data-dir {data_dir} '{EXAMPLE_QUERY}'",
        ]
        _serve_bookshop(f"http://127.0.0.1:{hub.grpc_port}", key, rate, export_interval, echo, stop, how_to_query)
    finally:
        hub.stop()


def run_demo_against(
    hub_endpoint: str, key: str, rate: float, export_interval: float, echo: Callable[[str], None]
) -> None:
    """The bookshop and its traffic alone, exporting to a hub that runs elsewhere (the compose file's
    demo service), until SIGTERM or SIGINT."""
    _serve_bookshop(hub_endpoint, key, rate, export_interval, echo, _until_signalled())


def _until_signalled() -> threading.Event:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the traffic's requests: one INFO line each
    # The bookshop's 500s are on purpose, and the hub shows their stack traces: not one in the log each.
    logging.getLogger("uvicorn.error").addFilter(lambda record: not record.getMessage().startswith("Exception in ASGI"))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _serve_bookshop(
    endpoint: str,
    key: str,
    rate: float,
    export_interval: float,
    echo: Callable[[str], None],
    stop: threading.Event,
    more_lines: Sequence[str] = (),
) -> None:
    """Serve the bookshop exporting to ``endpoint`` and send it traffic until ``stop``; then stop the
    traffic and the app (its last export included). ``more_lines`` are shown once it runs."""
    server = AppServer(create_app(endpoint, key, export_interval))
    server.start()
    try:
        traffic = TrafficGenerator(server.url, rate, TrafficMix(random.Random()))
        traffic.start()
        groups = sorted({c.group for c in CONSUMERS})
        echo(f"bookshop API: {server.url} (try {server.url}/docs), exporting to {endpoint} every {export_interval:g} s")
        echo(
            f"traffic: ~{rate:g} requests/s from {len(CONSUMERS)} consumers in {len(groups)} groups "
            f"({', '.join(groups)}); Ctrl-C stops the demo"
        )
        for line in more_lines:
            echo(line)
        stop.wait()
        echo("stopping the demo")
        traffic.stop()
        sent = sum(traffic.statuses.values())
        echo(f"traffic: {sent} requests answered, {traffic.failures} unanswered")
    finally:
        server.stop()


def demo_app_key(runner: SqlRunner) -> str:
    """A new key for the app ``demo``, created if it is missing. The hub keeps only hashes, so a key
    from an earlier run cannot be read back: each run rotates it."""
    key = generate_key()
    if get_app(runner, DEMO_APP) is None:
        create_hub_app(runner, DEMO_APP, hash_key(key))
    else:
        rotate_key(runner, DEMO_APP, hash_key(key))
    return key


class AppServer:
    """uvicorn serving ``app`` in a thread, on a free loopback port (bound here, so no other process
    can take it between choosing and serving)."""

    def __init__(self, app: FastAPI) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        # log_config=None: uvicorn's warnings go to the demo's logging as they are, not reconfigured
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, name="demo-app")

    def start(self, timeout_s: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the bookshop app did not start (see the log above)")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop serving; the app's lifespan shutdown sends its last export to the hub."""
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._socket.close()
