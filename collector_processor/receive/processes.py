"""The hub's receiver processes (``tallyhub serve --receivers N``): started, watched, restarted, stopped.

Each is a ``receiver_process`` on the hub's gRPC port, linked to the hub's process by a Unix
socket in a directory of its own (mode 0700, under the system's temporary directory: a socket's
path must be short). A receiver that dies is started again; its clients reconnect (to another
receiver, or the hub's own) and send again what was not acknowledged.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.link import QueueServer
from tallyhub.collector_processor.stats import Stats
from tallyhub.collector_processor.tls import Tls

logger = logging.getLogger("tallyhub.receivers")

READY_TIMEOUT_S = 60.0
RESTART_DELAY_S = 2.0


class ReceiverProcesses:
    def __init__(
        self,
        count: int,
        grpc_address: str,
        queue: DurableQueue,
        keys: Callable[[], dict[str, str]],
        stats: Stats,
        log_level: str = "INFO",
        max_connection_age_s: float = 0,
        tls: Tls | None = None,
        request_log_quota: Callable[[str, int], tuple[int, str]] = lambda app, logged: (logged, ""),
    ) -> None:
        self.count = count
        self._request_log_quota = request_log_quota
        self.grpc_address = grpc_address
        self._queue, self._keys, self._stats, self._log_level = queue, keys, stats, log_level
        self._max_connection_age_s = max_connection_age_s
        self._tls = tls
        self._processes: list[subprocess.Popen[bytes]] = []
        self._stopped = threading.Event()
        self._server: QueueServer | None = None
        self._directory: Path | None = None
        self._watcher = threading.Thread(target=self._watch, name="tallyhub-receivers", daemon=True)

    def start(self) -> None:
        """Start them and wait until each listens (raises RuntimeError if one cannot)."""
        if not self.count:
            return
        self._directory = Path(tempfile.mkdtemp(prefix="tallyhub-link-"))  # 0700
        self._server = QueueServer(
            self._directory / "link.sock", self._queue, self._keys, self._stats, self._request_log_quota
        )
        self._server.start()
        for _ in range(self.count):
            self._processes.append(self._spawn())  # one at a time: ``stop`` then stops those started
        self._watcher.start()
        logger.info("%d receiver processes on %s", self.count, self.grpc_address)

    def _tls_arguments(self) -> list[str]:
        if self._tls is None:
            return []
        return ["--tls-cert-file", str(self._tls.cert_file), "--tls-key-file", str(self._tls.key_file)]

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert self._server is not None
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tallyhub.collector_processor.receive.process",
                "--link",
                str(self._server.path),
                "--grpc-address",
                self.grpc_address,
                "--log-level",
                self._log_level,
                "--max-connection-age-s",
                str(self._max_connection_age_s),
                *self._tls_arguments(),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        ready = threading.Event()

        def wait_ready() -> None:  # its first line, "ready", once it listens
            if process.stdout is not None:
                process.stdout.readline()
            ready.set()

        threading.Thread(target=wait_ready, daemon=True).start()
        if not ready.wait(READY_TIMEOUT_S) or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"a receiver process did not start on {self.grpc_address} (exit {process.poll()})")
        return process

    def alive(self) -> int:
        return sum(process.poll() is None for process in self._processes)

    def _watch(self) -> None:
        while not self._stopped.wait(RESTART_DELAY_S):
            for i, process in enumerate(self._processes):
                if process.poll() is None or self._stopped.is_set():
                    continue
                logger.error("receiver process %d exited with %s: starting it again", process.pid, process.returncode)
                self._stats.add("receiver processes restarted")
                try:
                    self._processes[i] = self._spawn()
                except (OSError, RuntimeError) as exc:
                    logger.error("could not start a receiver process again (%s); retrying", exc)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop them (each finishes its exports in flight), then close the link."""
        self._stopped.set()
        for process in self._processes:
            if process.stdin is not None:
                process.stdin.close()  # its signal to stop
        for process in self._processes:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("receiver process %d did not stop in %.0f s: killed", process.pid, timeout_s)
                process.kill()
                process.wait()
        if self._server is not None:
            self._server.stop()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
