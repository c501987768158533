"""What an app pays at import: each adapter imports its own framework only, and nothing of gRPC,
protobuf, the OTLP exporters or the SDK's metric and log models until the first export (issue 16,
point 3). Checked in a fresh interpreter, by what is in ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

NEVER_AT_IMPORT = (
    "grpc",
    "google.protobuf",
    "opentelemetry.exporter",
    "opentelemetry.proto",
    "opentelemetry.sdk.metrics",
    "opentelemetry.sdk._logs",
)
FRAMEWORKS = {"starlette", "fastapi", "flask", "django", "litestar"}


def loaded_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nimport json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize(
    ("module", "framework"),
    [
        ("tallyhub.instrumentation.flask", "flask"),
        ("tallyhub.instrumentation.starlette", "starlette"),
        ("tallyhub.instrumentation.litestar", "litestar"),
        ("tallyhub.instrumentation.django", "django"),
        ("tallyhub.instrumentation", None),
    ],
)
def test_an_adapter_imports_its_framework_and_no_exporter(module: str, framework: str | None) -> None:
    loaded = loaded_after(f"import {module}")
    heavy = sorted(m for m in loaded if m.startswith(NEVER_AT_IMPORT))
    assert heavy == []
    assert {m.split(".")[0] for m in loaded} & FRAMEWORKS <= {framework}


def test_the_first_export_imports_the_sender() -> None:
    code = """
from tallyhub.instrumentation import TallyhubClient
client = TallyhubClient(endpoint="http://127.0.0.1:9", export_interval=60, retry_window=1)
assert "grpc" not in sys.modules
client.record_request("GET", "/a", 200, 0.0, 0.01, 0, 0)
client.loop.export_once()
client.shutdown()
"""
    loaded = loaded_after(code)
    assert "grpc" in loaded and "opentelemetry.sdk.metrics.export" in loaded
