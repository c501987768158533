"""TLS on every listener of a real hub (OTLP gRPC, in its own process and in receiver processes;
OTLP/HTTP; the dashboard), with a self-signed certificate made here by openssl: clients that trust
it export, plain clients are refused, and a wrong certificate/key pair stops the start."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tallyhub.collector_processor.receive.auth import generate_key

from .conftest import Hub, free_port, wait_for
from .test_receivers import EXPORT, export, stored

OPENSSL = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]


def certificate(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    subprocess.run(
        [*OPENSSL, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("receivers", ["0", "1"])
def test_clients_that_trust_the_certificate_export_over_tls(tmp_path: Path, receivers: str) -> None:
    cert, key = certificate(tmp_path, "hub")
    keys = tmp_path / "app-keys"
    app_key = generate_key()
    keys.write_text(f"shop={app_key}\n")
    hub = Hub(tmp_path / "data", "--tls-cert-file", str(cert), "--tls-key-file", str(key))
    hub.args += (
        "--app-keys-file",
        str(keys),
        "--receivers",
        receivers,
        "--dashboard-address",
        f"127.0.0.1:{free_port()}",
    )
    hub.start()
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{hub.grpc_port}", credentials) as channel:
            call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            call(export("/tls", 2), metadata=[("x-tallyhub-app-key", app_key)], timeout=10)
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as plain:
            with pytest.raises(grpc.RpcError) as refused:
                plain.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)(
                    export("/plain", 1), metadata=[("x-tallyhub-app-key", app_key)], timeout=5
                )
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        https = f"https://127.0.0.1:{hub.http_port}"
        trusting = ssl.create_default_context(cafile=str(cert))
        headers = {"content-type": "application/x-protobuf", "x-tallyhub-app-key": app_key}
        assert (
            httpx.post(f"{https}/v1/metrics", content=export("/tls", 3), headers=headers, verify=trusting).status_code
            == 200
        )
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{hub.http_port}/healthz", timeout=5)  # plain HTTP on a TLS port
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{https}/healthz", timeout=5)  # a client that does not trust the certificate
        link = hub.cli("dashboard").stdout.strip().removeprefix("dashboard: ")
        assert link.startswith("https://127.0.0.1:")
        assert httpx.get(link, verify=trusting, follow_redirects=True).status_code == 200
        wait_for(lambda: stored(hub) == {"/tls": 5}, 30, "both exports stored")
    finally:
        assert hub.stop() == 0


def test_a_certificate_without_its_key_stops_the_start(tmp_path: Path) -> None:
    cert, _ = certificate(tmp_path, "one")
    _, other_key = certificate(tmp_path, "two")
    addresses = ["--grpc-address", f"127.0.0.1:{free_port()}", "--query-address", f"127.0.0.1:{free_port()}"]
    addresses += ["--http-address", "off", "--dashboard-address", "off"]
    for args, message in (
        (["--tls-cert-file", str(cert)], "TLS needs both --tls-cert-file and --tls-key-file"),
        (["--tls-cert-file", str(cert), "--tls-key-file", str(other_key)], "cannot serve TLS with"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "tallyhub", "serve", "--data-dir", str(tmp_path / "data"), *args, *addresses],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
