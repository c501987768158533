"""The OTLP gRPC receiver: authenticate, validate, queue durably, then acknowledge.

One code path serves every OTLP signal the hub takes (metrics, and logs for the start-up
event); a ``Signal`` says what differs: the service, the message types, the queue record kind,
which parts the hub stores and how partial success is reported.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError, Message
from google.rpc.error_details_pb2 import RetryInfo
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import HealthServicer
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from tallyhub.collector_processor.convert.events import has_stored_event, rejected_log_records
from tallyhub.collector_processor.convert.metrics import accepted_as_is
from tallyhub.collector_processor.convert.request_log import request_event_count, without_request_events
from tallyhub.collector_processor.convert.requests import rejected_points
from tallyhub.collector_processor.queue import MAX_BATCH_ID, QueueFull
from tallyhub.collector_processor.receive.auth import CONFLICTING_KEYS, KeyRing, key_from_metadata
from tallyhub.collector_processor.stats import Stats
from tallyhub.collector_processor.tls import Tls
from tallyhub.wire import APP_KEY_HEADER, BATCH_ID_HEADER

logger = logging.getLogger("tallyhub.receiver")

METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
KIND_METRICS = 1
KIND_LOGS = 2
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
QUEUE_FULL_RETRY_S = 5.0
"""The retry delay (RetryInfo) a client is told when the queue is at its cap."""
_BATCH_ID = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_BATCH_ID}}}")


@dataclass(frozen=True)
class Signal:
    """What one OTLP export service needs from the shared receiver."""

    service: str
    kind: int
    """The queue record kind of its exports."""
    request_type: type[Message]
    response_type: type[Message]
    storable: Callable[[Any], bool]
    """Whether an export holds anything the hub stores (if not, it is not queued)."""
    rejected: Callable[[Any], tuple[int, str]]
    """How many items the hub does not store, and why."""
    partial_success: Callable[[int, str], Message]
    """The response that reports them."""
    as_is: Callable[[bytes], bool | None] = lambda data: None
    """Without decoding: whether an export is storable, when it certainly parses and nothing in
    it is refused; None to decode it (and ask ``storable`` and ``rejected``)."""


METRICS = Signal(
    service=METRICS_SERVICE,
    kind=KIND_METRICS,
    request_type=ExportMetricsServiceRequest,
    response_type=ExportMetricsServiceResponse,
    storable=lambda request: bool(request.resource_metrics),
    rejected=rejected_points,
    partial_success=lambda n, message: ExportMetricsServiceResponse(
        partial_success=ExportMetricsPartialSuccess(rejected_data_points=n, error_message=message)
    ),
    as_is=accepted_as_is,
)
LOGS = Signal(
    service=LOGS_SERVICE,
    kind=KIND_LOGS,
    request_type=ExportLogsServiceRequest,
    response_type=ExportLogsServiceResponse,
    storable=has_stored_event,
    rejected=rejected_log_records,
    partial_success=lambda n, message: ExportLogsServiceResponse(
        partial_success=ExportLogsPartialSuccess(rejected_log_records=n, error_message=message)
    ),
)
SIGNALS = (METRICS, LOGS)


class Refused(Exception):
    """An export the hub does not take: a gRPC status (OTLP/HTTP maps it to an HTTP status), a
    message saying what to do, and for UNAVAILABLE the delay after which to retry."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


class Queue(Protocol):
    """Where accepted exports go: the ``DurableQueue``, or in a receiver process the link to it."""

    def append(self, kind: int, app: str, payload: bytes, received_ns: int, batch_id: str = "") -> int | None: ...


class Receiver:
    """Takes OTLP exports as raw bytes, whatever the transport: authenticate, decode, queue
    durably, answer. The gRPC handlers below and the OTLP/HTTP server both call ``accept``."""

    def __init__(
        self,
        keyring: KeyRing,
        queue: Queue,
        stats: Stats | None = None,
        request_log_quota: Callable[[str, int], tuple[int, str]] | None = None,
    ) -> None:
        self.keyring = keyring
        self.queue = queue
        self.stats = stats or Stats()
        self.request_log_quota = request_log_quota
        """(app, logged requests) → how many the app may store today, and why not the others (``quota.py``)."""

    def accept(self, signal: Signal, data: bytes, metadata: Any, peer: str = "") -> Message:
        """The response to an export, or ``Refused``. ``metadata``: (name, value) pairs with
        lower-case names (gRPC metadata, or HTTP headers)."""
        self.stats.add("exports received")
        try:
            response = self._accept(signal, data, metadata, peer)
        except Refused as refused:
            self.stats.add(f"exports refused: {refused.code.name}")
            raise
        self.stats.add("exports acknowledged")
        return response

    def _accept(self, signal: Signal, data: bytes, metadata: Any, peer: str) -> Message:
        key = key_from_metadata(metadata)
        if key == CONFLICTING_KEYS:
            logger.warning("refused an export from %s: it carries two different app keys", peer)
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                f"two different app keys ({APP_KEY_HEADER} and authorization: Bearer, or one repeated): send one",
            )
        app = self.keyring.app_for(key)
        if app is None:
            logger.warning("refused an export from %s: missing or unknown app key", peer)
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED,
                f"missing or unknown app key: create one with `tallyhub apps create NAME` "
                f"and send it in the {APP_KEY_HEADER} header",
            )
        storable = signal.as_is(data)
        rejected, message = 0, ""
        if storable is None:
            name = signal.request_type.DESCRIPTOR.name
            try:
                request = signal.request_type.FromString(data)
            except DecodeError as exc:
                logger.warning("refused a malformed %s from app %s: %s", name, app, exc)
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {name}: {exc}") from None
            storable = signal.storable(request)
            rejected, message = signal.rejected(request)
            if signal is LOGS and self.request_log_quota is not None:
                logged = request_event_count(request)
                allowed, refusal = self._quota(app, logged) if logged else (0, "")
                if refusal:  # the logged requests beyond the quota refused, the rest of the export stored
                    request = without_request_events(request, keep=allowed)
                    data, storable = request.SerializeToString(), signal.storable(request)
                    rejected, message = rejected + logged - allowed, "; ".join(filter(None, (message, refusal)))
                    self.stats.add("logged requests over the quota (partial success)", logged - allowed)
        batch_id = batch_id_from_metadata(metadata)
        if batch_id is not None and not _BATCH_ID.fullmatch(batch_id):
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{BATCH_ID_HEADER} must be 1-{MAX_BATCH_ID} characters of A-Z a-z 0-9 _ . : -",
            )
        if storable:
            try:
                if self.queue.append(signal.kind, app, data, time.time_ns(), batch_id or "") is None:
                    self.stats.add("exports sent again (stored once)")
                    logger.info("app %s sent batch %s again (its acknowledgement was lost): stored once", app, batch_id)
            except QueueFull as exc:
                logger.warning("refused an export of app %s: %s (is ClickHouse down or slow?)", app, exc)
                raise Refused(
                    grpc.StatusCode.UNAVAILABLE, "the hub's queue is full; retry later", QUEUE_FULL_RETRY_S
                ) from None
            except OSError as exc:
                logger.error("could not queue an export (disk full or failing?): %s", exc)
                raise Refused(
                    grpc.StatusCode.UNAVAILABLE, "the hub cannot store data right now; retry later", 5.0
                ) from None
        if rejected:
            self.stats.add("data points refused (partial success)", rejected)
            return signal.partial_success(rejected, message)
        return signal.response_type()

    def _quota(self, app: str, logged: int) -> tuple[int, str]:
        """The request log quota's answer; if it cannot be had, the records are taken (a quota must
        never make an export fail: the client would retry it, or drop it with its metrics)."""
        assert self.request_log_quota is not None
        try:
            return self.request_log_quota(app, logged)
        except Exception:
            logger.exception("checking the request log quota of app %s failed; its logged requests are taken", app)
            return logged, ""

    def export(self, signal: Signal, data: bytes, context: grpc.ServicerContext) -> Message:
        """The gRPC ``Export`` handler."""
        try:
            return self.accept(signal, data, context.invocation_metadata(), context.peer())
        except Refused as refused:
            if refused.retry_after_s is not None:
                info = RetryInfo(retry_delay=Duration(seconds=int(refused.retry_after_s)))
                context.set_trailing_metadata([("google.rpc.retryinfo-bin", info.SerializeToString())])
            context.abort(refused.code, refused.message)

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """One generic handler per signal, for ``grpc.Server.add_generic_rpc_handlers``."""
        return [
            grpc.method_handlers_generic_handler(
                signal.service,
                {
                    "Export": grpc.unary_unary_rpc_method_handler(
                        lambda data, context, signal=signal: self.export(signal, data, context),
                        response_serializer=signal.response_type.SerializeToString,
                    )
                },
            )
            for signal in SIGNALS
        ]


def batch_id_from_metadata(metadata: Any) -> str | None:
    for name, value in metadata or ():
        if name == BATCH_ID_HEADER and isinstance(value, str):
            return value.strip()
    return None


class ListenError(OSError):
    """The hub cannot listen where it was told to."""


MAX_CONNECTION_AGE_GRACE_MS = 30_000
"""How long calls in flight on a connection past its maximum age may take before it is closed."""


def start_grpc_server(
    receiver: Receiver,
    address: str,
    workers: int = 8,
    shared: bool = False,
    max_connection_age_s: float = 0,
    tls: Tls | None = None,
) -> tuple[grpc.Server, int]:
    """Start serving on ``address`` (``host:port``; port 0 picks a free one); returns the server and port.

    ``shared``: the port is shared with the hub's receiver processes (``SO_REUSEPORT``). Otherwise
    the port is the hub's alone: gRPC would share it by default, and a second hub started on the
    same address would silently take half of the clients.

    ``max_connection_age_s``: close each client connection after that long (gRPC's
    ``max_connection_age``; the client reconnects at once, in-flight calls get 30 s more): behind a
    plain Kubernetes Service, whose balancing is per connection, new replicas then get their share
    of long-lived clients. 0: connections live as long as their clients keep them.
    """
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.so_reuseport", int(shared))]
    if max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
        ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tallyhub-grpc"),
        options=options,
    )
    server.add_generic_rpc_handlers(receiver.handlers())
    add_health_service(server)
    try:
        port = server.add_secure_port(address, tls.grpc_credentials()) if tls else server.add_insecure_port(address)
    except RuntimeError:  # grpcio's "Failed to bind"
        port = 0
    if port == 0:
        raise ListenError(f"cannot listen on {address} for OTLP gRPC (is another hub or collector running there?)")
    server.start()
    return server, port


def add_health_service(server: grpc.Server) -> None:
    """The standard ``grpc.health.v1.Health`` service, for load balancers and Kubernetes' gRPC
    probes: SERVING for the server ("") and both OTLP services while the server runs (its
    ``stop`` ends the answers: a stopping hub takes no exports)."""
    health = HealthServicer()
    for service in ("", METRICS.service, LOGS.service):
        health.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)


def reserve_port(address: str) -> int:
    """The port that receiver processes will share on ``address``, checked free (raises OSError if
    something listens there: once shared, the bind itself would not tell); a free one for port 0."""
    host, _, port = address.rpartition(":")
    places = socket.getaddrinfo(host.strip("[]") or None, int(port or 0), type=socket.SOCK_STREAM)
    for family, kind, proto, _, where in places:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, never past a listener
            try:
                probe.bind(where)
            except OSError as exc:
                raise ListenError(
                    f"cannot listen on {address} for OTLP gRPC (is another hub or collector running there?): {exc}"
                ) from None
            return probe.getsockname()[1]
    raise ListenError(f"cannot listen on {address} for OTLP gRPC: no such address")
