"""The OTLP gRPC receiver: authenticate, validate, queue durably, then acknowledge."""

from __future__ import annotations

import logging
import time
from concurrent import futures

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from tallyhub.collector_processor.auth import APP_KEY_HEADER, KeyRing, key_from_metadata
from tallyhub.collector_processor.otlp_rows import rejected_points
from tallyhub.collector_processor.queue import DurableQueue

logger = logging.getLogger("tallyhub.receiver")

METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
KIND_METRICS = 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class MetricsReceiver:
    """Handles ``MetricsService/Export`` on raw bytes, so that the queue stores what was sent and a
    malformed message gets INVALID_ARGUMENT rather than gRPC's generic deserialization error."""

    def __init__(self, keyring: KeyRing, queue: DurableQueue) -> None:
        self.keyring = keyring
        self.queue = queue

    def export(self, data: bytes, context: grpc.ServicerContext) -> ExportMetricsServiceResponse:
        app = self.keyring.app_for(key_from_metadata(context.invocation_metadata()))
        if app is None:
            logger.warning("refused an export from %s: missing or unknown app key", context.peer())
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"missing or unknown app key: create one with `tallyhub apps create NAME` "
                f"and send it in the {APP_KEY_HEADER} header",
            )
        try:
            request = ExportMetricsServiceRequest.FromString(data)
        except DecodeError as exc:
            logger.warning("refused a malformed export from app %s: %s", app, exc)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed ExportMetricsServiceRequest: {exc}")
        rejected, message = rejected_points(request)
        if request.resource_metrics:
            try:
                self.queue.append(KIND_METRICS, app, data, time.time_ns())
            except OSError as exc:
                logger.error("could not queue an export (disk full or failing?): %s", exc)
                context.abort(grpc.StatusCode.UNAVAILABLE, "the hub cannot store data right now; retry later")
        if rejected:
            return ExportMetricsServiceResponse(
                partial_success=ExportMetricsPartialSuccess(rejected_data_points=rejected, error_message=message)
            )
        return ExportMetricsServiceResponse()


def start_grpc_server(receiver: MetricsReceiver, address: str, workers: int = 8) -> tuple[grpc.Server, int]:
    """Start serving on ``address`` (``host:port``; port 0 picks a free one); returns the server and port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tallyhub-grpc"),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
    )
    handler = grpc.unary_unary_rpc_method_handler(
        receiver.export, response_serializer=ExportMetricsServiceResponse.SerializeToString
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(METRICS_SERVICE, {"Export": handler})])
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address} for OTLP gRPC (is another hub or collector running there?)")
    server.start()
    return server, port
