"""The hub's loopback query endpoint, in the shape of ClickHouse's HTTP interface.

The hub process owns the embedded ClickHouse data directory, so while it runs, `tallyhub sql`
and `tallyhub apps` reach the data through it: ``POST /`` with the SQL as the body,
``default_format``, ``readonly`` and ``param_<name>`` in the URL, like ClickHouse's own HTTP
interface. Each request must carry the token that the hub writes, readable by its owner only,
into ``hub.json`` in the data directory. Read-only queries (``readonly=1``) run on a read-only
client of their own, with what embedded ClickHouse lets through ``readonly = 1`` refused
(``storage.backend.check_read_only``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tallyhub.collector_processor import clickhouse_http
from tallyhub.collector_processor.web_server import WebServer
from tallyhub.dashboard.passwords import verify_password
from tallyhub.storage.apps import SqlRunner
from tallyhub.storage.backend import ReadOnlyQueryError
from tallyhub.storage.users import password_hash_of

logger = logging.getLogger("tallyhub.query_api")

TOKEN_HEADER = "X-Tallyhub-Token"
HUB_FILE = "hub.json"


class HubUnavailable(ConnectionError):
    pass


class QueryAddressError(ValueError):
    """A query endpoint address that the hub refuses to listen on."""


def check_query_address(address: str, allow_remote: bool = False) -> None:
    """Refuse a ``host:port`` that is not loopback unless ``allow_remote``: the endpoint runs any SQL,
    writes too, with the hub's own ClickHouse credentials, guarded only by a token in a local file,
    over plain HTTP."""
    host = address.rpartition(":")[0].strip("[]")
    if allow_remote or is_loopback(host):
        return
    raise QueryAddressError(
        f"--query-address {address} is not a loopback address. The query endpoint runs any SQL, writes "
        "included, with the hub's own ClickHouse credentials; only a token in DATA_DIR/hub.json guards it, "
        "sent in clear over plain HTTP. Keep it on 127.0.0.1, or pass --allow-remote-query "
        "(TALLYHUB_ALLOW_REMOTE_QUERY=1) if the network in between is yours to trust."
    )


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` stands for is a loopback one (``localhost`` included)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not host:
        return False  # every interface
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(str(a).partition("%")[0]).is_loopback for a in addresses)


class QueryServer:
    """Serves SQL on a loopback address for the local CLI, using ``runner`` (the hub's: a client of its
    own for each query, read-only for read-only ones), on the hub's web stack (``web_server``)."""

    def __init__(
        self,
        runner: SqlRunner,
        address: str,
        status: Callable[[], dict[str, Any]] | None = None,
        dashboard_link: Callable[[], str] | None = None,
    ) -> None:
        self.token = secrets.token_urlsafe(32)
        gets = {"/status": status, "/dashboard-link": dashboard_link}
        self._server = WebServer(_query_app(runner, self.token, gets, ReaderCheck(runner)), address, "query")
        self.url = self._server.url

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def publish(self, data_dir: Path) -> Path:
        """Write ``hub.json`` (owner-only) so that local tools find this hub.

        The file is made anew, never opened where it is: a new file of our own (``O_EXCL``, so
        no symbolic link or another's file is followed; mode 0600 from its first byte), renamed over
        ``hub.json``, which replaces a stale file or link rather than writing through it."""
        path = data_dir / HUB_FILE
        tmp = data_dir / f".{HUB_FILE}.{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"pid": os.getpid(), "url": self.url, "token": self.token}, f)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path


_USAGE = "GET /status or /dashboard-link, or POST / with SQL\n"


def _query_app(
    runner: SqlRunner,
    token: str,
    gets: Mapping[str, Callable[[], Any] | None],
    readers: Callable[[str, str], bool] | None = None,
) -> Starlette:
    """``readers(user, password)``: whether that is a named read-only user (a dashboard user); their
    queries run read-only, whatever they ask. The token (``hub.json``) is the CLI's, and may write."""

    def text(status: int, body: bytes | str, headers: Mapping[str, str] | None = None) -> Response:
        return Response(body, status_code=status, media_type="text/plain; charset=utf-8", headers=headers)

    def failed(status: int, message: str, code: int | None = None) -> Response:
        body, headers = clickhouse_http.error(message, code)
        return text(status, body, headers)

    async def endpoint(request: Request) -> Response:
        path, params = request.url.path, request.query_params
        if path == "/ping":  # ClickHouse's liveness check: no credentials
            return text(200, "Ok.\n")
        reader = None
        if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""), token):
            given = clickhouse_http.credentials(request.headers, params)
            if given is None or readers is None or not await run_in_threadpool(readers, *given):
                who = given.user if given else "default"
                return failed(
                    403,
                    f"{who}: Authentication failed: password is incorrect, or there is no user with such name "
                    "(the hub's query endpoint takes its dashboard users, read-only, or the token of `tallyhub sql`)",
                    clickhouse_http.AUTHENTICATION_FAILED,
                )
            reader = given.user
        if request.method == "GET" and path in gets and reader is None:
            # GET /status: the hub's own counters (`tallyhub status`); GET /dashboard-link: a new
            # sign-in link to the dashboard (`tallyhub dashboard`).
            get = gets[path]
            if get is None:
                return text(404, _USAGE)
            return text(200, json.dumps(await run_in_threadpool(get)))
        if path != "/":
            return text(404, _USAGE)
        sql, fmt = clickhouse_http.query_of(params, await request.body())
        if not sql.strip():
            return text(200, "Ok.\n")  # as ClickHouse answers GET / without a query
        parameters = {k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")}
        readonly = reader is not None or params.get("readonly", "0") != "0"
        try:
            body = await run_in_threadpool(runner.raw, sql, parameters, fmt=fmt, readonly=readonly)
        except ReadOnlyQueryError as exc:
            return failed(500, str(exc), clickhouse_http.READONLY)
        except Exception as exc:  # the query's own error goes back to whoever sent it
            return failed(500, str(exc))
        return Response(body, headers=clickhouse_http.response_headers(fmt, params.get("query_id")))

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])


class ReaderCheck:
    """Whether a user and password are a dashboard user's, remembered for ``ttl_s`` (the password
    hash is scrypt, ~50 ms a check: a client sends its credentials with every query)."""

    def __init__(self, runner: SqlRunner, ttl_s: float = 60.0) -> None:
        self.runner = runner
        self.ttl_s = ttl_s
        self._known: dict[tuple[str, str], float] = {}

    def __call__(self, user: str, password: str) -> bool:
        key = (user, hashlib.sha256(password.encode()).hexdigest())
        now = time.monotonic()
        if self._known.get(key, 0.0) > now:
            return True
        stored = password_hash_of(self.runner, user)
        if stored is None or not verify_password(password, stored):
            return False
        if len(self._known) > 1000:
            self._known.clear()
        self._known[key] = now + self.ttl_s
        return True


class HubRunner:
    """A ``SqlRunner`` that sends SQL to a running hub's query endpoint."""

    def __init__(self, url: str, token: str, timeout_s: float = 300.0, pid: int | None = None) -> None:
        self.url = url
        self.token = token
        self.timeout_s = timeout_s
        self.pid = pid

    @classmethod
    def find(cls, data_dir: Path) -> HubRunner | None:
        """The hub that owns ``data_dir``, if one is running."""
        try:
            info = json.loads((data_dir / HUB_FILE).read_text())
        except (OSError, ValueError):
            return None
        runner = cls(info["url"], info["token"], pid=info.get("pid"))
        try:
            runner.raw("SELECT 1")
        except HubUnavailable:
            return None  # a stale hub.json, left by a hub that was killed
        return runner

    def status(self) -> dict[str, Any]:
        """The running hub's counters."""
        return self._get("/status")

    def dashboard_link(self) -> str:
        """A new link that signs in to the running hub's dashboard ("" when it has none)."""
        return self._get("/dashboard-link")

    def _get(self, path: str) -> Any:
        return json.loads(self._fetch(urllib.request.Request(f"{self.url}{path}", headers={TOKEN_HEADER: self.token})))

    def raw(
        self, sql: str, parameters: Mapping[str, Any] | None = None, fmt: str = "TabSeparated", readonly: bool = False
    ) -> bytes:
        query = {"default_format": fmt, "readonly": int(readonly)}
        query.update({f"param_{k}": v for k, v in (parameters or {}).items()})
        request = urllib.request.Request(
            f"{self.url}/?{urlencode(query)}", data=sql.encode(), headers={TOKEN_HEADER: self.token}, method="POST"
        )
        return self._fetch(request)

    def _fetch(self, request: urllib.request.Request) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(exc.read().decode(errors="replace").strip()) from None
        except (urllib.error.URLError, ConnectionError) as exc:
            raise HubUnavailable(f"the hub at {self.url} does not answer: {exc}") from exc
