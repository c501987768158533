"""tallyhub beside another distro (issue 16, point 5): with `opentelemetry-distro` installed too,
`opentelemetry-instrument` configures traces and logs exactly as that distro does, whichever of the
two the launcher picks; tallyhub adds its middleware only. Alone, tallyhub's defaults stay.
`opentelemetry-distro` is installed from the package index into a directory of its own, seen only
by the processes of this test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

REPORT = """
import json, os
from opentelemetry import trace
from opentelemetry.instrumentation.auto_instrumentation import _load  # noqa: F401
from tallyhub.instrumentation.auto import TallyhubInstrumentor
provider = trace.get_tracer_provider()
processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
print(json.dumps({
    "traces": os.environ.get("OTEL_TRACES_EXPORTER"),
    "logs": os.environ.get("OTEL_LOGS_EXPORTER"),
    "provider": type(provider).__name__,
    "exporters": [type(getattr(p, "span_exporter", None)).__name__ for p in processors],
    "tallyhub": TallyhubInstrumentor()._is_instrumented_by_opentelemetry,
}))
"""

CONFIGURE = """
import json, os
from opentelemetry import trace
from tallyhub.instrumentation.auto import TallyhubConfigurator, TallyhubDistro
TallyhubDistro().configure()
TallyhubConfigurator().configure()
processors = getattr(getattr(trace.get_tracer_provider(), "_active_span_processor", None), "_span_processors", ())
print(json.dumps({
    "traces": os.environ.get("OTEL_TRACES_EXPORTER"),
    "exporters": [type(getattr(p, "span_exporter", None)).__name__ for p in processors],
}))
"""


@pytest.fixture(scope="module")
def distro(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("otel-distro")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            "opentelemetry-distro>=0.50b0,<1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return target


def run(code: str, *, with_distro: Path | None, launcher: bool, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(env, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_METRIC_EXPORT_INTERVAL="600000")
    if with_distro is not None:
        environ["PYTHONPATH"] = str(with_distro)
    command = (
        [str(BIN / "opentelemetry-instrument"), sys.executable, "-c", code]
        if launcher
        else [sys.executable, "-c", code]
    )
    result = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_alone_tallyhubs_defaults_stay() -> None:
    alone = run(REPORT, with_distro=None, launcher=True)
    assert (alone["traces"], alone["logs"], alone["tallyhub"]) == ("none", "none", True)
    assert alone["exporters"] == []


def test_with_opentelemetry_distro_traces_go_where_they_went(distro: Path) -> None:
    launched = run(REPORT, with_distro=distro, launcher=True)
    assert launched["traces"] == "otlp" and launched["exporters"] == ["OTLPSpanExporter"]
    assert launched["tallyhub"] is True  # and tallyhub's middleware is added all the same


def test_tallyhubs_distro_and_configurator_defer_to_the_other(distro: Path) -> None:
    """Whichever the launcher picks first: when it is tallyhub's, it hands over to the other."""
    deferred = run(CONFIGURE, with_distro=distro, launcher=False)
    assert deferred == {"traces": "otlp", "exporters": ["OTLPSpanExporter"]}
    chosen = run(
        CONFIGURE,
        with_distro=distro,
        launcher=False,
        OTEL_PYTHON_DISTRO="tallyhub",
        OTEL_PYTHON_CONFIGURATOR="tallyhub",
    )
    assert chosen == {"traces": "none", "exporters": []}  # the user chose tallyhub's: its defaults
