"""The outbox: notifications handed over by the rule evaluation, delivered in the background, each
channel on its own (a queue and a worker thread per channel), retried with exponential backoff,
every attempt recorded. A channel that hangs or fails delays neither the evaluation (``submit``
never blocks) nor any other channel.

Nothing is kept across restarts: ``stop`` leaves what is undelivered, and the caller re-submits at
the next start the notifications that have no final ``Delivery`` in its records (receivers
deduplicate on the notification's id, so a repeat is harmless)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from tallyhub.alerts.notify import send
from tallyhub.alerts.notify.channels import ChannelSpec, NotifySettings
from tallyhub.alerts.notify.message import Notification

logger = logging.getLogger("tallyhub.alerts")

Deliver = Callable[[ChannelSpec, Notification, NotifySettings], None]


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver one notification to one channel (or its drop: ``attempt`` 0)."""

    notification_id: str
    rule: str
    state: str
    channel: str
    """``ChannelSpec.redacted()``: no secret URL in records."""
    channel_id: str
    """``ChannelSpec.fingerprint()``: which channel, where two redact alike."""
    attempt: int
    """1-based; 0 for a notification dropped before any attempt (its channel's queue was full)."""
    ok: bool
    final: bool
    """Delivered, or given up (last attempt, an error a retry cannot fix, or dropped)."""
    error: str
    at: datetime
    duration_s: float


class _Channel:
    def __init__(self, spec: ChannelSpec, queue_size: int) -> None:
        self.spec = spec
        self.queue: queue.Queue[Notification | None] = queue.Queue(maxsize=queue_size)
        self.thread: threading.Thread | None = None


class Outbox:
    """``record`` receives every ``Delivery``; it is called from the channels' worker threads,
    possibly at the same time, so it must be thread-safe (its exceptions are logged, never fatal)."""

    def __init__(
        self,
        settings: NotifySettings,
        record: Callable[[Delivery], None],
        *,
        attempts: int = 6,
        backoff_s: float = 2.0,
        max_backoff_s: float = 300.0,
        queue_size: int = 1000,
        deliver: Deliver = send.deliver,
    ) -> None:
        if attempts < 1 or queue_size < 1 or backoff_s < 0 or max_backoff_s < 0:
            raise ValueError("attempts and queue_size must be at least 1, backoffs not negative")
        self.settings = settings
        self._record = record
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.queue_size = queue_size
        self._deliver = deliver
        self._channels: dict[ChannelSpec, _Channel] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def submit(self, spec: ChannelSpec, n: Notification) -> None:
        """Queue ``n`` for ``spec``'s worker; returns at once and never raises. A full queue drops it
        (logged, and recorded as a final failed ``Delivery``)."""
        try:
            if self._stopping.is_set():
                logger.warning(
                    "alert %s (%s) not queued for %s: the outbox is stopped; it is sent at the next start",
                    n.rule,
                    n.state,
                    spec.redacted(),
                )
                return
            channel = self._channel(spec)
            try:
                channel.queue.put_nowait(n)
            except queue.Full:
                logger.warning(
                    "alert %s (%s) dropped for %s: its queue holds %d notifications not yet delivered; "
                    "the channel is failing or too slow, check it with `tallyhub alerts test`",
                    n.rule,
                    n.state,
                    spec.redacted(),
                    self.queue_size,
                )
                self._note(self._delivery(spec, n, 0, ok=False, final=True, error="queue full", started=None))
        except Exception:
            logger.exception("alert %s (%s): could not queue it for %s", n.rule, n.state, spec.redacted())

    def send_now(self, spec: ChannelSpec, n: Notification) -> Delivery:
        """One attempt, here and now (``tallyhub alerts test``); recorded like the others."""
        return self._attempt(spec, n, 1, last=True)

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the workers: an attempt under way finishes (its timeout bounds it), backoffs are cut
        short, queued notifications are left. False if a worker was still busy after ``timeout_s``."""
        self._stopping.set()
        with self._lock:
            channels = list(self._channels.values())
        for channel in channels:
            # wakes a worker waiting for work; one with a full queue is busy and sees ``_stopping`` after its item
            with contextlib.suppress(queue.Full):
                channel.queue.put_nowait(None)
        deadline = time.monotonic() + timeout_s
        stopped = True
        for channel in channels:
            if channel.thread is not None:
                channel.thread.join(max(0.0, deadline - time.monotonic()))
                if channel.thread.is_alive():
                    stopped = False
                    logger.warning("notification worker for %s still busy at shutdown", channel.spec.redacted())
        return stopped

    def _channel(self, spec: ChannelSpec) -> _Channel:
        with self._lock:
            channel = self._channels.get(spec)
            if channel is None:
                channel = _Channel(spec, self.queue_size)
                channel.thread = threading.Thread(
                    target=self._work, args=(channel,), name=f"tallyhub-notify {spec.redacted()}", daemon=True
                )
                channel.thread.start()
                self._channels[spec] = channel
            return channel

    def _work(self, channel: _Channel) -> None:
        while not self._stopping.is_set():
            n = channel.queue.get()
            if n is None:
                return
            try:
                self._deliver_with_retries(channel.spec, n)
            except Exception:  # a bug here must not end the channel's deliveries
                logger.exception("alert %s (%s): delivery to %s failed", n.rule, n.state, channel.spec.redacted())

    def _deliver_with_retries(self, spec: ChannelSpec, n: Notification) -> None:
        for attempt in range(1, self.attempts + 1):
            if self._stopping.is_set():
                return
            delivery = self._attempt(spec, n, attempt, last=attempt == self.attempts)
            if delivery.final:
                return
            wait = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
            logger.warning(
                "alert %s (%s): delivery to %s failed (attempt %d of %d): %s; retrying in %.3g s",
                n.rule,
                n.state,
                delivery.channel,
                attempt,
                self.attempts,
                delivery.error,
                wait,
            )
            if self._stopping.wait(wait):
                return

    def _attempt(self, spec: ChannelSpec, n: Notification, attempt: int, *, last: bool) -> Delivery:
        """One attempt, recorded and logged; final when it succeeded, was the last, or cannot succeed on a retry."""
        started = time.monotonic()
        at = datetime.now(UTC)
        ok, error, retry = True, "", False
        try:
            self._deliver(spec, n, self.settings)
        except send.DeliveryError as exc:
            ok, error, retry = False, str(exc), exc.retry
        except Exception as exc:
            logger.exception("alert %s (%s): unexpected error delivering to %s", n.rule, n.state, spec.redacted())
            ok, error, retry = False, f"unexpected error: {type(exc).__name__}: {exc}", True
        final = ok or last or not retry
        delivery = self._delivery(spec, n, attempt, ok=ok, final=final, error=error, started=started, at=at)
        if ok:
            logger.info("alert %s (%s) delivered to %s (attempt %d)", n.rule, n.state, delivery.channel, attempt)
        elif final:
            logger.error(
                "alert %s (%s): gave up delivering to %s after %d attempt(s): %s; fix the channel or the "
                "notification settings, then check with `tallyhub alerts test`",
                n.rule,
                n.state,
                delivery.channel,
                attempt,
                error,
            )
        self._note(delivery)
        return delivery

    @staticmethod
    def _delivery(
        spec: ChannelSpec,
        n: Notification,
        attempt: int,
        *,
        ok: bool,
        final: bool,
        error: str,
        started: float | None,
        at: datetime | None = None,
    ) -> Delivery:
        return Delivery(
            notification_id=n.id,
            rule=n.rule,
            state=n.state,
            channel=spec.redacted(),
            channel_id=spec.fingerprint(),
            attempt=attempt,
            ok=ok,
            final=final,
            error=error,
            at=at or datetime.now(UTC),
            duration_s=0.0 if started is None else time.monotonic() - started,
        )

    def _note(self, delivery: Delivery) -> None:
        try:
            self._record(delivery)
        except Exception:
            logger.exception(
                "could not record the delivery of %s to %s (attempt %d); delivery goes on",
                delivery.notification_id,
                delivery.channel,
                delivery.attempt,
            )
