"""The thread that collects the aggregates every interval and exports them, off the request path."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

from tallyhub.instrumentation.aggregator import RequestAggregator

logger = logging.getLogger("tallyhub")


class ExportLoop:
    """Collects and exports every ``interval_s`` seconds on a daemon thread.

    Started lazily in the process that serves requests (a pre-forking server's master never
    starts it); a forked child starts afresh with nothing of its parent's, and makes its own
    exporter (a gRPC channel must not cross a fork).
    """

    def __init__(
        self,
        aggregator: RequestAggregator,
        make_exporter: Callable[[], MetricExporter],
        interval_s: float,
        timeout_s: float,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"the export interval must be positive, got {interval_s} s")
        self.aggregator = aggregator
        self._make_exporter = make_exporter
        self.exporter: MetricExporter | None = None
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.running = False  # read on every request: a plain attribute, no system call
        self._pid: int | None = None
        self._stop = threading.Event()
        self._export_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def after_fork(self) -> None:
        """In a forked child (a pre-forking server's worker): start afresh, taking no lock (one
        another thread held at the fork would never be released here)."""
        self.running = False
        self._pid = None
        self._export_lock = threading.Lock()
        self.exporter = None
        self.aggregator.reinit_after_fork()

    def ensure_started(self) -> None:
        """Start the export thread in this process. The exporter is made by that thread, off the
        request path (making a gRPC channel reads certificates, resolves names)."""
        with self._export_lock:
            if self._pid == os.getpid():
                self.running = True
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name="tallyhub-export", daemon=True)
            self._thread.start()
            atexit.register(self.shutdown)
            self._pid = os.getpid()
            self.running = True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.export_once()

    def export_once(self) -> bool:
        """Collect and export now. True when there was nothing to send or the hub accepted it."""
        with self._export_lock:
            data = self.aggregator.collect()
            if data is None:
                return True
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                if self.exporter is None:  # this process's own exporter, made on first use
                    self.exporter = self._make_exporter()
                result = self.exporter.export(data, timeout_millis=self.timeout_s * 1000)
            except Exception:
                logger.exception("tallyhub: exporting request metrics failed")
                return False
            finally:
                detach(token)
            if result is not MetricExportResult.SUCCESS:
                logger.warning(
                    "tallyhub: the hub did not accept a batch of request metrics; check the hub address and app key"
                )
            return result is MetricExportResult.SUCCESS

    def shutdown(self, final_export_s: float = 5.0) -> None:
        """Stop the thread and make one last export of what is aggregated, for at most
        ``final_export_s`` (shutting the exporter down cuts its retries short)."""
        if self._pid != os.getpid():
            return
        self._pid = None
        self.running = False
        self._stop.set()
        shutdown_once = _Once(lambda: self.exporter.shutdown() if self.exporter is not None else None)
        deadline = threading.Timer(final_export_s, shutdown_once)  # cuts an export in flight short too
        deadline.daemon = True
        deadline.start()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(final_export_s)
        self.export_once()
        deadline.cancel()
        shutdown_once()
        atexit.unregister(self.shutdown)


class _Once:
    """Calls ``func`` the first time it is called, from whichever thread; later calls do nothing."""

    def __init__(self, func: Callable[[], object]) -> None:
        self._func = func
        self._lock = threading.Lock()
        self._done = False

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        self._func()
