"""Sending the start-up event: once per process, off the request path, retried until the hub has it."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.instrumentation.introspection import STARTUP_EVENT

logger = logging.getLogger("tallyhub")

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


class StartupReporter:
    def __init__(
        self, make_exporter: Callable[[], LogRecordExporter], resource: Resource, scope: InstrumentationScope
    ) -> None:
        self._make_exporter = make_exporter
        self.first_backoff_s = FIRST_BACKOFF_S
        self.exporter: LogRecordExporter | None = None
        self.resource = resource
        self.scope = scope
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = threading.Event()

    def after_fork(self) -> None:
        """A forked child sends its own event, with its own exporter (and takes no old lock)."""
        self._pid = None
        self._lock = threading.Lock()
        self.exporter = None

    def report(self, build_document: Callable[[], str]) -> None:
        """Build and send the event in the background (introspection can take a while: OpenAPI)."""
        with self._lock:  # two first requests at once must not send it twice
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop = threading.Event()
            self.delivered = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(build_document,), name="tallyhub-startup", daemon=True
            )
            self._thread.start()

    def _run(self, build_document: Callable[[], str]) -> None:
        try:
            # this process's own exporter, made here: off the request path, and never across a fork
            self.exporter = self._make_exporter()
            document = build_document()
        except Exception:
            logger.exception("tallyhub: describing the app for the start-up event failed; no endpoints are sent")
            return
        record = ReadableLogRecord(
            log_record=LogRecord(
                timestamp=time.time_ns(),
                severity_number=SeverityNumber.INFO,
                body=document,
                attributes={"event.name": STARTUP_EVENT},
                event_name=STARTUP_EVENT,
            ),
            resource=self.resource,
            instrumentation_scope=self.scope,
        )
        delay = self.first_backoff_s
        warned = False
        while not self._stop.is_set():
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                result = self.exporter.export([record])
            except Exception:
                logger.debug("tallyhub: sending the start-up event failed", exc_info=True)
                result = LogRecordExportResult.FAILURE
            finally:
                detach(token)
            if result is LogRecordExportResult.SUCCESS:
                self.delivered.set()
                return
            if not warned:
                logger.warning("tallyhub: the hub did not take the start-up event yet; retrying in the background")
                warned = True
            self._stop.wait(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    def shutdown(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        if self.exporter is not None:
            self.exporter.shutdown()
