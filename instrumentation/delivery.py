"""Delivering spooled batches to the hub: oldest first, with backoff, for up to the retry window.

A thread of its own sends; the export loop (collection) and the request path only hand over
batches. A batch leaves the spool when the hub acknowledged it, when the hub refused it for
good (logged with what to fix), when it is older than the retry window, or when the spool's
byte cap pushes it out — the last two counted and logged at most once a minute with the
number of data points lost.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, set_value

from tallyhub.instrumentation.outcome import Outcome
from tallyhub.instrumentation.spool import Batch, Spool

logger = logging.getLogger("tallyhub")

DEFAULT_RETRY_WINDOW_S = 3600.0
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
MAX_SERVER_DELAY_S = 300.0
"""A server's RetryInfo is honoured up to this delay."""
DISK_POLL_S = 10.0
"""How often a worker looks for batches other workers left in a shared spool directory."""
REPORT_EVERY_S = 60.0


class Sender(Protocol):
    def send(self, batch: Batch, timeout_s: float | None = None) -> Outcome: ...

    def close(self) -> None: ...


class Delivery:
    """Spool + sender + the retry policy. ``clock`` (wall time, ns) is injectable for tests,
    which drive ``deliver_due()`` themselves instead of starting the thread."""

    def __init__(
        self,
        spool: Spool,
        make_sender: Callable[[], Sender],
        retry_window_s: float = DEFAULT_RETRY_WINDOW_S,
        clock: Callable[[], int] = time.time_ns,
        poll_s: float | None = None,
    ) -> None:
        self.spool = spool
        self._make_sender = make_sender
        self.sender: Sender | None = None
        self.retry_window_s = retry_window_s
        self.clock = clock
        self.poll_s = poll_s
        self.backoff_s = FIRST_BACKOFF_S
        self.next_attempt_ns = 0
        self.delivered = 0
        self.dropped: dict[str, list[int]] = {}
        """reason → [batches, data points], since the start of this process."""
        self._unreported: dict[str, list[int]] = {}
        self._last_report_ns = 0
        self._last_errors: dict[str, int] = {}
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    # -- handing over -----------------------------------------------------------------------

    def submit(self, kind: str, payload: bytes, points: int) -> Batch:
        """Spool an encoded export and wake the sender; never blocks on the network."""
        batch = Batch(uuid.uuid4().hex, kind, self.clock(), points, payload)
        for dropped in self.spool.put(batch):
            self._drop(dropped, "the spool was full (oldest dropped first)")
        self._wake.set()
        return batch

    # -- sending ----------------------------------------------------------------------------

    def deliver_due(self, ignore_backoff: bool = False, deadline_ns: int | None = None) -> bool:
        """Send what is due, oldest first, until a send fails. True if nothing is left waiting.
        With a deadline, gives up waiting for a send in progress (the delivery thread's) then."""
        wait_s = -1 if deadline_ns is None else max((deadline_ns - self.clock()) / 1e9, 0)
        if not self._send_lock.acquire(timeout=wait_s):
            return False
        try:
            now = self.clock()
            if not ignore_backoff and now < self.next_attempt_ns:
                return False
            oldest_kept = now - int(self.retry_window_s * 1e9)
            for batch in self.spool.batches():
                if batch.created_ns < oldest_kept:
                    self.spool.remove(batch)
                    self._drop(batch, f"older than the {self.retry_window_s:g} s retry window")
                    continue
                if deadline_ns is not None and self.clock() >= deadline_ns:
                    return False
                with self.spool.claim(batch) as mine:
                    if not mine:
                        continue
                    outcome = self._send(batch, None if deadline_ns is None else (deadline_ns - self.clock()) / 1e9)
                    if outcome.delivered or outcome.permanent:
                        self.spool.remove(batch)
                if outcome.delivered:
                    self.delivered += 1
                    self.backoff_s = FIRST_BACKOFF_S
                    if outcome.rejected:
                        self._log_once(f"the hub stored part of a batch only: {outcome.error}", logging.WARNING)
                elif outcome.permanent:
                    self._log_once(f"the hub refused a batch for good, dropped it: {outcome.error}", logging.ERROR)
                    self._count("refused by the hub", batch)
                else:
                    self._retry_later(outcome)
                    return False
            self._report_drops()
            return True
        finally:
            self._send_lock.release()

    def _send(self, batch: Batch, timeout_s: float | None) -> Outcome:
        if self.sender is None:  # this process's own channel, made off the request path
            self.sender = self._make_sender()
        try:
            return self.sender.send(batch, timeout_s)
        except Exception as exc:  # a bug or an unexpected transport error: retry, never crash
            logger.debug("tallyhub: sending a batch failed", exc_info=True)
            return Outcome(retry_after_s=0.0, error=f"{type(exc).__name__}: {exc}")

    def _retry_later(self, outcome: Outcome) -> None:
        delay = outcome.retry_after_s or 0.0
        if delay > 0:
            delay = min(delay, MAX_SERVER_DELAY_S)
        else:  # our exponential backoff, with ±20 % jitter (as OpenTelemetry's exporters do)
            delay = self.backoff_s * random.uniform(0.8, 1.2)
            self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)
        self.next_attempt_ns = self.clock() + int(delay * 1e9)
        self._log_once(
            f"the hub did not take a batch ({outcome.error}); it stays spooled and is retried "
            f"for up to {self.retry_window_s:g} s",
            logging.WARNING,
        )
        self._report_drops()

    # -- accounting -------------------------------------------------------------------------

    def _drop(self, batch: Batch, reason: str) -> None:
        self._count(reason, batch)
        self._report_drops()

    def _count(self, reason: str, batch: Batch) -> None:
        for counts in (self.dropped, self._unreported):
            entry = counts.setdefault(reason, [0, 0])
            entry[0] += 1
            entry[1] += batch.points

    def _report_drops(self, force: bool = False) -> None:
        now = self.clock()
        if not self._unreported or (not force and now - self._last_report_ns < REPORT_EVERY_S * 1e9):
            return
        for reason, (batches, points) in self._unreported.items():
            logger.warning("tallyhub: dropped %d batch(es), %d data points: %s", batches, points, reason)
        self._unreported = {}
        self._last_report_ns = now

    def _log_once(self, message: str, level: int) -> None:
        """Log a message at most once a minute (an outage must not flood the app's log)."""
        now = self.clock()
        if now - self._last_errors.get(message, -(10**30)) >= REPORT_EVERY_S * 1e9:
            self._last_errors[message] = now
            logger.log(level, "tallyhub: %s", message)

    # -- the thread ---------------------------------------------------------------------------

    def ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tallyhub-delivery", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Nothing this thread does is the app's traffic (an installed gRPC instrumentation would
        # otherwise trace every send).
        attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        while not self._stop.is_set():
            self._wake.clear()
            done = self.deliver_due()
            if done:
                timeout = self.poll_s
            else:
                timeout = max((self.next_attempt_ns - self.clock()) / 1e9, 0.05)
                if self.poll_s is not None:
                    timeout = min(timeout, self.poll_s)
            self._wake.wait(timeout)

    def after_fork(self) -> None:
        self._pid = None
        self.sender = None
        self._send_lock = threading.Lock()
        self.spool.after_fork()
        self.next_attempt_ns = 0
        self.backoff_s = FIRST_BACKOFF_S

    def shutdown(self, timeout_s: float) -> None:
        """Stop the thread, then one last attempt at everything spooled, for at most ``timeout_s``;
        what is left stays in a disk spool for the next start (or is lost with a memory spool)."""
        deadline_ns = self.clock() + int(timeout_s * 1e9)
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        if self._pid == os.getpid() or self._thread is None:
            self.deliver_due(ignore_backoff=True, deadline_ns=deadline_ns)
        left = list(self.spool.batches())
        if left:
            logger.warning(
                "tallyhub: %d batch(es), %d data points, not delivered at shutdown (the hub is unreachable); %s",
                len(left),
                sum(b.points for b in left),
                "they stay in the spool directory for the next start"
                if getattr(self.spool, "directory", None)
                else "they are lost (set a spool directory to keep them)",
            )
        self._report_drops(force=True)
        if self.sender is not None:
            self.sender.close()
            self.sender = None
        self._pid = None
