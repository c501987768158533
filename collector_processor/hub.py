"""The hub process: storage, durable queue, OTLP receivers (gRPC, HTTP), processor and query endpoint, wired."""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import grpc
from clickhouse_connect.driver.client import Client

from tallyhub.alerts.notify.channels import NotifySettings
from tallyhub.alerts.rules import Rule
from tallyhub.alerts.service import Alerts, sync_rules_file
from tallyhub.collector_processor.convert.metrics import COMPILED
from tallyhub.collector_processor.query_api import HUB_FILE, QueryServer, check_query_address
from tallyhub.collector_processor.queue import MAX_BYTES as QUEUE_MAX_BYTES
from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.auth import KeyRing, hash_key, parse_app_keys
from tallyhub.collector_processor.receive.http_receiver import OtlpHttpServer
from tallyhub.collector_processor.receive.processes import ReceiverProcesses
from tallyhub.collector_processor.receive.quota import DEFAULT_PER_DAY as DEFAULT_REQUEST_LOG_QUOTA
from tallyhub.collector_processor.receive.quota import RequestLogQuota
from tallyhub.collector_processor.receive.receiver import Receiver, reserve_port, start_grpc_server
from tallyhub.collector_processor.stats import Stats
from tallyhub.collector_processor.store import Processor
from tallyhub.collector_processor.tls import Tls
from tallyhub.dashboard.app import Dashboard, create_app
from tallyhub.dashboard.server import DashboardServer, check_dashboard_address
from tallyhub.dashboard.sessions import Sessions
from tallyhub.storage.apps import AppError, ensure_app_key, key_hashes
from tallyhub.storage.backend import (
    DEFAULT_DATABASE,
    ClientRunner,
    SessionlessRunner,
    TrustedRunner,
    is_embedded,
    open_client,
    redact_url,
)
from tallyhub.storage.cluster import apply_request_log_retention_on_cluster, apply_retention_on_cluster
from tallyhub.storage.migrate import migrate
from tallyhub.storage.request_log_queries import logged_today
from tallyhub.storage.retention import apply_request_log_retention, apply_retention
from tallyhub.storage.users import list_users
from tallyhub.storage.writer import insert_batch

logger = logging.getLogger("tallyhub.hub")


@dataclass
class HubSettings:
    data_dir: Path
    grpc_address: str = "127.0.0.1:4317"
    http_address: str = "127.0.0.1:4318"
    """OTLP/HTTP; empty: off."""
    query_address: str = "127.0.0.1:8124"
    dashboard_address: str = "127.0.0.1:8125"
    """The web dashboard; empty: off. Not loopback: only with dashboard users (``check_dashboard_address``)."""
    allow_remote_query: bool = False
    """Listen for queries on a non-loopback ``query_address`` (refused otherwise: ``check_query_address``)."""
    queue_max_bytes: int = QUEUE_MAX_BYTES
    retention_months: int | None = None
    """Applied to every table at start-up (None: leave the tables' TTL as they are)."""
    request_log_days: int | None = None
    """The request log's own retention, applied at start-up (None: leave it as it is)."""
    request_log_quota: int = DEFAULT_REQUEST_LOG_QUOTA
    """Logged requests an app may store per UTC day (0: no quota); beyond, partial success."""
    storage_url: str | None = field(default=None, repr=False)
    """May hold a password: never shown (see ``redact_url``)."""
    database: str = DEFAULT_DATABASE
    cluster: str | None = None
    """ClickHouse cluster to create the tables on (Replicated + Distributed); None: one server."""
    exactly_once_across_hubs: bool = False
    """One insert per export, deduplicated by ClickHouse on its client's batch id (``store.Processor``)."""
    queue_dir: Path | None = None
    """The durable queue's directory (default: DATA_DIR/queue); each hub replica needs its own."""
    receivers: int = 0
    """Receiver processes beside the hub's own gRPC receiver, sharing its port (``receiver_process``)."""
    tls: Tls | None = None
    """TLS for OTLP gRPC, OTLP/HTTP and the dashboard (None: plain connections)."""
    grpc_max_connection_age_s: float = 0
    """Close gRPC client connections after this long (0: never), so that replicas behind a plain
    Service share long-lived clients (``start_grpc_server``)."""
    app_keys_file: Path | None = None
    """``NAME=KEY`` lines (a deploy's secret) made the apps' working keys at start (``apply_app_keys``)."""
    alert_rules_file: Path | None = None
    """A TOML file of alert rules made the rules from that file at start (``alerts.service.sync_rules_file``)."""
    notify: NotifySettings = field(default_factory=NotifySettings, repr=False)
    """Where alerts are sent from: the webhooks' signing secret, the SMTP server (holds secrets: never shown)."""
    alerts: bool = True
    """Evaluate the alert rules and run the health checks."""
    log_level: str = "INFO"

    @property
    def resolved_storage_url(self) -> str:
        """The storage URL; by default embedded ClickHouse (chDB) under the data directory."""
        return self.storage_url or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"


class AppKeysError(ValueError):
    """An app-keys file that cannot be read or used."""


def apply_app_keys(runner: ClientRunner, path: Path) -> None:
    """Make the keys of an app-keys file the apps' working keys (creating the apps that are new).
    An unreadable or malformed file stops the start: exports would otherwise be refused silently."""
    try:
        keys = parse_app_keys(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise AppKeysError(f"cannot read the app keys file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise AppKeysError(str(exc)) from None
    for name, key in keys.items():
        try:
            outcome = ensure_app_key(runner, name, hash_key(key))
        except AppError as exc:
            raise AppKeysError(f"{path}: {exc}") from None
        logger.info("app %s: key from %s %s", name, path, outcome)


class Hub:
    def __init__(self, settings: HubSettings) -> None:
        self.settings = settings

    def start(self) -> None:
        """Start every part; if one cannot start (a port taken, a bad app-keys file), stop those that
        did before raising: a thread left querying the embedded engine while the interpreter exits
        can crash or hang the process instead of letting it exit with the error."""
        with ExitStack() as undo:
            self._start(undo)
            undo.pop_all()

    def _start(self, undo: ExitStack) -> None:
        s = self.settings
        check_query_address(s.query_address, s.allow_remote_query)
        prepare_data_dir(s.data_dir)
        url = s.resolved_storage_url
        self._sessionless = SessionlessRunner(url, s.database, s.cluster)  # queries, and /readyz's probe
        # One client per role: the clickhouse-connect chDB client serializes calls on a handle.
        self._writer = _open_waiting(url, s.database, s.cluster)
        undo.callback(self._writer.close)
        applied = migrate(self._writer, s.cluster)
        if applied:
            logger.info("schema migrations applied: %s", ", ".join(applied))
        if s.retention_months is not None and s.cluster:
            apply_retention_on_cluster(self._writer, s.retention_months, s.cluster)
        elif s.retention_months is not None:
            apply_retention(self._writer, s.retention_months)
        if s.request_log_days is not None and s.cluster:
            apply_request_log_retention_on_cluster(self._writer, s.request_log_days, s.cluster)
        elif s.request_log_days is not None:
            apply_request_log_retention(self._writer, s.request_log_days)
        self._dashboard_clients: tuple[Client, ...] = ()
        self._alert_clients: tuple[Client, ...] = ()
        if s.dashboard_address:
            # the dashboard's own clients: its SQL is tallyhub's, its reads on a read-only client
            self._dashboard_clients = self._client_pair(undo)
            check_dashboard_address(s.dashboard_address, bool(list_users(ClientRunner(*self._dashboard_clients))))
        self._auth = open_client(url, s.database, cluster=s.cluster)
        undo.callback(self._auth.close)
        if s.app_keys_file is not None:
            apply_app_keys(ClientRunner(self._auth), s.app_keys_file)
        self.stats = Stats()
        self.queue = DurableQueue(s.queue_dir or s.data_dir / "queue", max_bytes=s.queue_max_bytes)
        undo.callback(self.queue.close)
        # Reloaded every 2 s: a revoked or rotated-away key is refused within seconds.
        self.keyring = KeyRing(lambda: key_hashes(ClientRunner(self._auth)))
        self.keyring.start()
        undo.callback(self.keyring.stop)
        self.processor = Processor(
            self.queue,
            lambda tables, token: insert_batch(self._writer, tables, token),
            s.data_dir / "rejected",
            state_file=s.data_dir / "cumulative.json",
            stats=self.stats,
            per_export=s.exactly_once_across_hubs,
        )
        self.processor.start()
        undo.callback(self.processor.stop)
        self.quota = RequestLogQuota(s.request_log_quota, lambda app: logged_today(ClientRunner(self._auth), app))
        receiver = Receiver(self.keyring, self.queue, self.stats, request_log_quota=self.quota.take)
        self.grpc_server: grpc.Server | None = None
        if s.receivers:  # gRPC in receiver processes only: this process's cores go to converting and inserting
            self.grpc_port = reserve_port(s.grpc_address)
        else:
            self.grpc_server, self.grpc_port = start_grpc_server(
                receiver, s.grpc_address, max_connection_age_s=s.grpc_max_connection_age_s, tls=s.tls
            )
            undo.callback(self.grpc_server.stop, None)
        self.receivers = ReceiverProcesses(
            s.receivers,
            f"{s.grpc_address.rpartition(':')[0]}:{self.grpc_port}",
            self.queue,
            lambda: key_hashes(ClientRunner(self._auth)),
            self.stats,
            s.log_level,
            s.grpc_max_connection_age_s,
            s.tls,
            self.quota.take,
        )
        undo.callback(self.receivers.stop)
        self.receivers.start()
        self.http_server: OtlpHttpServer | None = None
        if s.http_address:
            self.http_server = OtlpHttpServer(receiver, s.http_address, readiness=self.readiness, tls=s.tls)
            self.http_server.start()
            undo.callback(self.http_server.stop)
        # Each query on a client of its own: nothing a query leaves in its session (readonly) reaches the next.
        self.sessions = Sessions()
        self.dashboard: DashboardServer | None = None
        if s.dashboard_address:
            runner = TrustedRunner(*self._dashboard_clients)  # the dashboard's SQL is tallyhub's own
            self.dashboard = DashboardServer(
                create_app(Dashboard(runner, self.sessions, over_quota_today=self.quota.refused_today)),
                s.dashboard_address,
                s.tls,
            )
            self.dashboard.start()
            undo.callback(self.dashboard.stop)
        self.alerts: Alerts | None = None
        if s.alerts:
            self._alert_clients = self._client_pair(undo)
            alerts_runner = TrustedRunner(*self._alert_clients)  # tallyhub's own SQL, values as parameters
            if s.alert_rules_file is not None:
                sync_rules_file(alerts_runner, s.alert_rules_file)
            self.alerts = Alerts(alerts_runner, s.notify, self.rule_link)
            self.alerts.start()
            undo.callback(self.alerts.stop)
        self.query_server = QueryServer(self._sessionless, s.query_address, self.status, self.dashboard_link)
        self.query_server.start()
        undo.callback(self.query_server.stop)
        self.query_server.publish(s.data_dir)
        logger.info(
            "hub ready: OTLP gRPC on %s:%d, OTLP/HTTP %s, queries on %s, dashboard %s, storage %s, "
            "data directory %s, %d queued exports to process",
            s.grpc_address.rpartition(":")[0],
            self.grpc_port,
            f"on {self.http_server.url}" if self.http_server else "off",
            self.query_server.url,
            f"on {self.dashboard.url}" if self.dashboard else "off",
            redact_url(url) + (f" (cluster {s.cluster})" if s.cluster else ""),
            s.data_dir,
            self.queue.depth(),
        )

    def _client_pair(self, undo: ExitStack) -> tuple[Client, Client]:
        """A client and a read-only one, closed by ``undo`` if the start fails."""
        s = self.settings
        pair = (
            open_client(s.resolved_storage_url, s.database, cluster=s.cluster),
            open_client(s.resolved_storage_url, s.database, cluster=s.cluster, readonly=True),
        )
        for client in pair:
            undo.callback(client.close)
        return pair

    def status(self) -> dict[str, Any]:
        """What `tallyhub status` shows: counters since start, the queue now, and what the processor is
        retrying right now ("processor error": ClickHouse away, the data directory failing; "" when
        all is well)."""
        return {
            "uptime s": round((time.time_ns() - self.stats.started_ns) / 1e9, 1),
            "counters": self.stats.counts(),
            "queue": self.queue.status(),
            "cumulative series tracked": len(self.processor.deltas),
            "processor error": self.processor.last_error,
            "receiver processes": self.receivers.alive(),
            "converter": "compiled" if COMPILED else "python",
            "alerts": self.alerts.status() if self.alerts is not None else {"rules": "off"},
        }

    def readiness(self) -> list[str]:
        """What keeps the hub from storing what it takes, for ``/readyz`` (empty: ready): ClickHouse
        not answering, the last insert or the data directory failing, the queue full."""
        problems = []
        try:
            self._sessionless.raw("SELECT 1")
        except Exception as exc:
            problems.append(f"ClickHouse does not answer: {type(exc).__name__}: {str(exc)[:300]}")
        if self.processor.last_error:
            problems.append(f"storing fails: {self.processor.last_error[:300]}")
        queue = self.queue.status()
        if int(queue["queued bytes"]) >= int(queue["cap bytes"]):
            problems.append("the queue is full: exports are refused until ClickHouse catches up")
        return problems

    def dashboard_link(self) -> str:
        """Where to open the dashboard: on loopback, a link that signs in once (as Jupyter's does);
        elsewhere its sign-in page. Empty when the dashboard is off."""
        if self.dashboard is None:
            return ""
        if self.dashboard.loopback:
            return f"{self.dashboard.url}/?token={self.sessions.sign_in_token()}"
        return f"{self.dashboard.url}/login"

    def rule_link(self, rule: Rule) -> str:
        """The dashboard's page of an alert rule, for its notifications ("" when the dashboard is off)."""
        if self.dashboard is None:
            return ""
        return f"{self.dashboard.url}/apps/{quote(rule.app)}/alerts?{urlencode({'rule': rule.name})}"

    def stop(self) -> None:
        """Refuse new exports, let those in flight be queued, finish the batch in hand, close."""
        logger.info("hub stopping")
        if self.alerts is not None:
            self.alerts.stop()
        grpc_stopped = self.grpc_server.stop(grace=5) if self.grpc_server is not None else None
        self.receivers.stop()  # their exports in flight are queued through the link first
        if self.http_server is not None:
            self.http_server.stop(grace_s=5)
        if grpc_stopped is not None:
            grpc_stopped.wait()
        self.processor.stop()
        self.query_server.stop()
        if self.dashboard is not None:
            self.dashboard.stop()
        for client in (*self._dashboard_clients, *self._alert_clients):
            client.close()
        (self.settings.data_dir / HUB_FILE).unlink(missing_ok=True)
        self.queue.close()
        self.keyring.stop()
        for client in (self._writer, self._auth):
            client.close()
        logger.info("hub stopped; %d exports left queued for the next start", self.queue.depth())


def prepare_data_dir(path: Path) -> None:
    """Create the data directory for its owner only (0700): it holds the queue, the embedded
    ClickHouse and ``hub.json`` with the query endpoint's token. One that exists is left as it is,
    with a warning if other users may enter it."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            logger.warning(
                "the data directory %s is open to other users (mode %04o): it holds the queue, the data and "
                "the query endpoint's token file; chmod 700 it",
                path,
                mode,
            )
        return
    os.chmod(path, 0o700)  # exactly 0700 whatever the umask (which could have left the owner out)


def _open_waiting(url: str, database: str, cluster: str | None = None, wait_s: float = 30.0) -> Client:
    """Open storage, waiting a while if a short-lived command (`tallyhub sql`) holds the embedded
    data directory at this moment."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return open_client(url, database, create=True, cluster=cluster)
        except Exception as exc:
            if not is_embedded(url) or time.monotonic() > deadline:
                raise
            logger.warning("storage busy (%s); retrying for up to %.0f s", exc, deadline - time.monotonic())
            time.sleep(1.0)


def serve(settings: HubSettings) -> None:
    """Run the hub until SIGTERM or SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    hub = Hub(settings)
    hub.start()
    if hub.dashboard is not None:
        print(f"dashboard: {hub.dashboard_link()}", flush=True)
    try:
        stop.wait()
    finally:
        hub.stop()
