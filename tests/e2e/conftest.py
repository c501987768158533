"""Real processes: the hub (`python -m tallyhub serve`) and uvicorn-served apps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Hub:
    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = args
        """More `tallyhub serve` options."""
        self.grpc_port = free_port()
        self.http_port = free_port()  # OTLP/HTTP: never the shared default 4318
        self.log = data_dir.parent / "hub.log"
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        # The query port is free_port()'s pick, closed again before the hub binds it: another test's
        # process (or an outgoing connection) may take it in between. Then a new one, not a failure.
        for _ in range(3):
            if "Address already in use" not in self._launch():
                break
        assert self.process is not None and self.process.poll() is None, self.log.read_text()

    def _launch(self) -> str:
        """Start the hub and wait until it is ready or has exited; what it logged meanwhile."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        process = self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tallyhub",
                "serve",
                "--grpc-address",
                f"127.0.0.1:{self.grpc_port}",
                "--http-address",
                f"127.0.0.1:{self.http_port}",
                "--query-address",
                f"127.0.0.1:{free_port()}",
                *self.args,
            ],
            env={**os.environ, "TALLYHUB_DATA_DIR": str(self.data_dir)},
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: "hub ready" in self.log.read_text()[offset:] or process.poll() is not None, 60, "the hub")
        return "" if process.poll() is None else self.log.read_text()[offset:]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(30)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "tallyhub", *args],
            env={**os.environ, "TALLYHUB_DATA_DIR": str(self.data_dir)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def sql(self, query: str) -> list[list[str]]:
        out = self.cli("sql", "--format", "TabSeparated", query).stdout
        return [line.split("\t") for line in out.splitlines()]

    def sql_rows(self, query: str) -> list[dict[str, Any]]:
        """The rows as ClickHouse's JSONEachRow gives them: text exactly as stored (newlines included)."""
        out = self.cli("sql", "--format", "JSONEachRow", query).stdout
        return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub = Hub(tmp_path / "data")
    hub.start()
    yield hub
    if hub.process.poll() is None:
        hub.process.kill()
        hub.process.wait()


UVICORN = [sys.executable, "-m", "uvicorn", "tests.e2e.fastapi_app:app", "--port", "{port}"]
BIN = Path(sys.executable).parent  # console scripts of this environment (gunicorn, opentelemetry-instrument)


class App:
    """A server process (by default uvicorn serving tests/e2e/fastapi_app.py); ``{port}`` in the
    command is replaced by a free port."""

    def __init__(self, log: Path, env: dict[str, str], command: list[str] | None = None) -> None:
        self.port = free_port()
        self.log = log
        self.process = subprocess.Popen(
            [part.replace("{port}", str(self.port)) for part in command or UVICORN],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(self._up, 30, "the app")

    def _up(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()
        try:
            return httpx.get(f"{self.url}/items/0").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator:
    apps: list[App] = []

    def start(endpoint: str, key: str, command: list[str] | None = None, **env: str) -> App:
        app = App(
            tmp_path / f"app{len(apps)}.log",
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_EXPORTER_OTLP_HEADERS": f"x-tallyhub-app-key={key}",
                "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                **env,
            },
            command,
        )
        apps.append(app)
        return app

    yield start
    for app in apps:
        if app.process.poll() is None:
            app.process.kill()
            app.process.wait()
