"""The start-up event: built once per process, off the request path, delivered like the metrics."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.instrumentation.transport import Transport
from tallyhub.wire import STARTUP_EVENT

logger = logging.getLogger("tallyhub")


class StartupReporter:
    """Builds the start-up event in the background (introspection can take a while: OpenAPI) and
    hands it to the transport, which delivers it like the metrics: spooled, retried."""

    def __init__(self, transport: Transport, resource: Resource, scope: InstrumentationScope) -> None:
        self.transport = transport
        self.resource = resource
        self.scope = scope
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.sent = threading.Event()
        """Set once the event was handed to the transport."""

    def after_fork(self) -> None:
        """A forked child sends its own event (and takes no old lock)."""
        self._pid = None
        self._lock = threading.Lock()

    def report(self, build_document: Callable[[], str]) -> None:
        """Build and send the event, once per process."""
        with self._lock:  # two first requests at once must not send it twice
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.sent = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(build_document,), name="tallyhub-startup", daemon=True
            )
            self._thread.start()

    def _run(self, build_document: Callable[[], str]) -> None:
        from opentelemetry._logs import LogRecord, SeverityNumber  # the logs SDK: on this thread, when used
        from opentelemetry.sdk._logs import ReadableLogRecord

        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            record = ReadableLogRecord(
                log_record=LogRecord(
                    timestamp=time.time_ns(),
                    severity_number=SeverityNumber.INFO,
                    body=build_document(),
                    attributes={"event.name": STARTUP_EVENT},
                    event_name=STARTUP_EVENT,
                ),
                resource=self.resource,
                instrumentation_scope=self.scope,
            )
            self.transport.send_logs([record])
            self.sent.set()
        except Exception:
            logger.exception("tallyhub: describing the app for the start-up event failed; no endpoints are sent")
        finally:
            detach(token)

    def join(self, timeout_s: float) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
