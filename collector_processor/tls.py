"""TLS for the hub's listeners (OTLP gRPC, OTLP/HTTP, the dashboard): one certificate and key, PEM
files, as the OpenTelemetry Collector's receivers take them (``cert_file``, ``key_file``)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc


class TlsError(ValueError):
    """A certificate or key the hub cannot serve with."""


@dataclass(frozen=True)
class Tls:
    cert_file: Path
    key_file: Path

    @classmethod
    def from_files(cls, cert_file: Path | None, key_file: Path | None) -> Tls | None:
        """Both files or neither (None: plain connections); checked now, so that a wrong pair stops
        the start with its reason rather than failing every client's handshake later."""
        if cert_file is None and key_file is None:
            return None
        if cert_file is None or key_file is None:
            raise TlsError("TLS needs both --tls-cert-file and --tls-key-file (or neither)")
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"cannot serve TLS with {cert_file} and {key_file}: {exc}") from None
        return cls(cert_file, key_file)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key_file.read_bytes(), self.cert_file.read_bytes())])

    def uvicorn_settings(self) -> dict[str, Any]:
        return {"ssl_certfile": str(self.cert_file), "ssl_keyfile": str(self.key_file)}
