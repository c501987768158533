"""The thread that collects the aggregates every interval and exports them, off the request path."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

from tallyhub.instrumentation.aggregator import FOLD_INTERVAL_S, RequestAggregator
from tallyhub.instrumentation.request_log import RequestLog
from tallyhub.instrumentation.transport import Transport

logger = logging.getLogger("tallyhub")


class ExportLoop:
    """Folds the queued requests every ``FOLD_INTERVAL_S`` and collects every ``interval_s``
    seconds on a daemon thread, handing the collection to the transport (which spools it and
    sends it from a thread of its own: a slow or dead hub delays neither the app nor the next
    collection).

    Started lazily in the process that serves requests (a pre-forking server's master never
    starts it); a forked child starts afresh with nothing of its parent's in memory.
    """

    def __init__(
        self,
        aggregator: RequestAggregator,
        transport: Transport,
        interval_s: float,
        request_log: RequestLog | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"the export interval must be positive, got {interval_s} s")
        self.aggregator = aggregator
        self.transport = transport
        self.interval_s = interval_s
        self.request_log = request_log
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
        self.aggregator.reinit_after_fork()
        if self.request_log is not None:
            self.request_log.after_fork()
        self.transport.after_fork()

    def ensure_started(self) -> None:
        """Start the collection thread, and the transport's, in this process."""
        with self._export_lock:
            if self._pid == os.getpid():
                self.running = True
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._run, name="tallyhub-export", daemon=True)
            self._thread.start()
            self.transport.ensure_started()
            atexit.register(self.shutdown)
            self._pid = os.getpid()
            self.running = True

    def _run(self) -> None:
        """Fold the queued requests every ``FOLD_INTERVAL_S`` (at once when the aggregator asks,
        ``backlog``); export every ``interval_s``."""
        next_export = time.monotonic() + self.interval_s
        backlog = self.aggregator.backlog
        while True:
            backlog.wait(min(FOLD_INTERVAL_S, max(0.0, next_export - time.monotonic())))
            if self._stop.is_set():
                return
            if time.monotonic() >= next_export:
                self.export_once()
                next_export = time.monotonic() + self.interval_s
            else:
                self.aggregator.fold()
                self._flush_log(force=False)

    def _flush_log(self, force: bool) -> None:
        if self.request_log is not None:
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                self.request_log.flush(self.transport, force)
            finally:
                detach(token)

    def export_once(self) -> bool:
        """Collect now and hand it over (the uptime heartbeat when no request finished since the
        last time; the process's CPU and memory either way), with the request log's records.
        False if that failed (logged): never raises."""
        with self._export_lock:
            self._flush_log(force=True)
            data = self.aggregator.export()
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                self.transport.send_metrics(data)
            except Exception:
                logger.exception("tallyhub: handing over the request metrics failed; this interval is lost")
                return False
            finally:
                detach(token)
            return True

    def shutdown(self, final_export_s: float = 5.0) -> None:
        """Stop the thread, collect what is left, and give the transport ``final_export_s`` for a
        last attempt at everything undelivered."""
        if self._pid != os.getpid():
            return
        self._pid = None
        self.running = False
        self._stop.set()
        self.aggregator.backlog.set()  # wakes the thread
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(final_export_s)
        self.export_once()
        self.transport.shutdown(final_export_s)
        atexit.unregister(self.shutdown)
