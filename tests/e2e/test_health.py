"""A real hub's health checks, as Docker's HEALTHCHECK and Kubernetes' probes call them: HTTP
`/healthz` and `/readyz` on the OTLP/HTTP port, `grpc.health.v1` on the gRPC port (answered by
the receiver processes too, which share it)."""

from __future__ import annotations

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .conftest import Hub


def grpc_status(hub: Hub) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def test_a_running_hub_is_live_and_ready_on_both_ports(tmp_path) -> None:
    for args in ((), ("--receivers", "1")):
        hub = Hub(tmp_path / f"data{len(args)}", *args)
        hub.start()
        try:
            assert httpx.get(f"{hub.http_endpoint}/healthz").json() == {"status": "ok", "problems": []}
            assert httpx.get(f"{hub.http_endpoint}/readyz").status_code == 200
            assert {grpc_status(hub) for _ in range(8)} == {health_pb2.HealthCheckResponse.SERVING}
        finally:
            assert hub.stop() == 0
