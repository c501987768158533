"""Sending one encoded batch to the hub over OTLP gRPC, and what the answer means for it.

The batch is already an encoded ``Export*ServiceRequest``: it goes out as raw bytes, with the
app key and the batch's identity as metadata. Per the OTLP specification, an answer is either
success, retryable (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, ABORTED, OUT_OF_RANGE,
DATA_LOSS, and RESOURCE_EXHAUSTED when the server says when to retry), or permanent (anything
else: INVALID_ARGUMENT, UNAUTHENTICATED, an oversized message…). The server's ``RetryInfo``
(``google.rpc.retryinfo-bin``, or in ``grpc-status-details-bin``) says how long to wait.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

import grpc
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from tallyhub.instrumentation.outcome import Outcome
from tallyhub.instrumentation.spool import LOGS, METRICS, Batch
from tallyhub.wire import BATCH_ID_HEADER

_PATHS: dict[str, tuple[str, Any]] = {
    METRICS: ("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", ExportMetricsServiceResponse),
    LOGS: ("/opentelemetry.proto.collector.logs.v1.LogsService/Export", ExportLogsServiceResponse),
}
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_WHAT_TO_DO = {
    grpc.StatusCode.UNAUTHENTICATED: "check the app key (`tallyhub apps create NAME` prints one)",
    grpc.StatusCode.PERMISSION_DENIED: "check the app key",
    grpc.StatusCode.INVALID_ARGUMENT: "the hub could not read the batch; please report this with the hub's log",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "the batch is larger than the hub accepts",
    grpc.StatusCode.UNIMPLEMENTED: "the endpoint is not a tallyhub hub or OTLP receiver; check the address",
}


class GrpcSender:
    """One gRPC channel to the hub, made in the process that uses it (never across a fork)."""

    def __init__(self, endpoint: str, headers: dict[str, str], timeout_s: float) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._metadata = tuple((k.lower(), v) for k, v in headers.items())
        target, secure = channel_target(endpoint)
        # Our backoff paces the retries: gRPC's own reconnect backoff (up to 2 min) must not hold a
        # channel down after the hub is back, and its own retries must not double ours.
        options = [
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.enable_retries", 0),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
        if secure:
            self._channel = grpc.secure_channel(target, _credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        compression = os.environ.get("OTEL_EXPORTER_OTLP_COMPRESSION", "").strip().lower()
        self._compression = grpc.Compression.Gzip if compression == "gzip" else None
        self._calls = {
            kind: self._channel.unary_unary(path, request_serializer=None, response_deserializer=response.FromString)
            for kind, (path, response) in _PATHS.items()
        }

    def send(self, batch: Batch, timeout_s: float | None = None) -> Outcome:
        """One attempt, for at most ``timeout_s`` (else the sender's timeout)."""
        timeout = self.timeout_s if timeout_s is None else max(min(timeout_s, self.timeout_s), 0.001)
        try:
            response = self._calls[batch.kind](
                batch.payload,
                timeout=timeout,
                metadata=(*self._metadata, (BATCH_ID_HEADER, batch.id)),
                compression=self._compression,
            )
        except grpc.RpcError as error:
            return classify(error)
        partial = response.partial_success
        rejected = getattr(partial, "rejected_data_points", 0) or getattr(partial, "rejected_log_records", 0)
        return Outcome(delivered=True, rejected=rejected, error=partial.error_message)

    def close(self) -> None:
        self._channel.close()


def classify(error: grpc.RpcError) -> Outcome:
    """Retry, or give up, on a failed call (see the module's docstring)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else "") or ""
    delay = retry_delay(error)
    if code in _RETRYABLE or (code is grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
        return Outcome(retry_after_s=delay or 0.0, error=f"{code.name}: {details}")
    what = _WHAT_TO_DO.get(code, "see the hub's log")
    return Outcome(error=f"{code.name}: {details} ({what})")


def retry_delay(error: grpc.RpcError) -> float | None:
    """The delay the server asked for, if any."""
    try:
        metadata = dict(error.trailing_metadata() or ())
    except Exception:
        return None
    info = RetryInfo()
    if "google.rpc.retryinfo-bin" in metadata:
        info.ParseFromString(metadata["google.rpc.retryinfo-bin"])
        return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    if "grpc-status-details-bin" in metadata:
        status = Status.FromString(metadata["grpc-status-details-bin"])
        for detail in status.details:
            if detail.Is(RetryInfo.DESCRIPTOR):
                detail.Unpack(info)
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def channel_target(endpoint: str) -> tuple[str, bool]:
    """``host:port`` and whether to use TLS, from an OTLP endpoint: ``https://`` is TLS,
    ``http://`` is not; without a scheme, TLS unless ``OTEL_EXPORTER_OTLP_INSECURE=true``."""
    if "://" not in endpoint:
        insecure = os.environ.get("OTEL_EXPORTER_OTLP_INSECURE", "").strip().lower() == "true"
        return endpoint, not insecure
    parsed = urlparse(endpoint)
    secure = parsed.scheme == "https"
    return parsed.netloc or parsed.path, secure


def _credentials() -> grpc.ChannelCredentials:
    certificate = os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE")
    if certificate:
        with open(certificate, "rb") as f:
            return grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.ssl_channel_credentials()
