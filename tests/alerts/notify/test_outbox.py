"""The outbox: per-channel queues and workers, retries with backoff, every attempt recorded; a
failing or hanging channel never delays the caller or another channel."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tallyhub.alerts.notify.channels import ChannelSpec, NotifySettings, parse_channel
from tallyhub.alerts.notify.message import Notification
from tallyhub.alerts.notify.outbox import Delivery, Outbox
from tests.alerts.receivers import Receiver, notification


class Records:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.changed = threading.Condition()

    def __call__(self, delivery: Delivery) -> None:
        with self.changed:
            self.deliveries.append(delivery)
            self.changed.notify_all()

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Delivery]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.deliveries) >= count, timeout_s), self.deliveries
            return list(self.deliveries)


@pytest.fixture
def records() -> Records:
    return Records()


@pytest.fixture
def make_outbox(records: Records) -> Iterator[Callable[..., Outbox]]:
    made: list[Outbox] = []

    def make(settings: NotifySettings | None = None, **kwargs: object) -> Outbox:
        outbox = Outbox(settings or NotifySettings(timeout_s=1), records, **kwargs)  # type: ignore[arg-type]
        made.append(outbox)
        return outbox

    yield make
    for outbox in made:
        outbox.stop(2)


def test_a_failed_delivery_is_retried_and_both_attempts_recorded(
    receiver: Receiver, records: Records, make_outbox: Callable[..., Outbox]
) -> None:
    receiver.answer(500, b"try later")
    outbox = make_outbox(attempts=3, backoff_s=0.05)
    outbox.submit(parse_channel(f"webhook:{receiver.url}"), notification("n-7"))
    first, second = records.wait_for(2)
    assert (first.attempt, first.ok, first.final) == (1, False, False)
    assert "answered HTTP 500: 'try later'" in first.error
    assert (second.attempt, second.ok, second.final, second.error) == (2, True, True, "")
    for d in (first, second):
        assert (d.notification_id, d.rule, d.state) == ("n-7", "high-errors", "firing")
        assert d.channel == f"webhook:http://127.0.0.1:{receiver.server.server_address[1]}/***"  # type: ignore[union-attr]
        assert 0 <= d.duration_s < 1
    assert (second.at - first.at).total_seconds() >= 0.05
    requests = receiver.wait_for(2)
    assert [r.headers["x-tallyhub-delivery"] for r in requests] == ["n-7", "n-7"]
    assert requests[1].at - requests[0].at >= 0.05
    time.sleep(0.1)
    assert len(records.deliveries) == 2 and len(receiver.requests) == 2  # nothing after success


def test_attempts_exhausted_give_a_final_failure_with_capped_backoff(
    receiver: Receiver, records: Records, make_outbox: Callable[..., Outbox], caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(5):
        receiver.answer(503, b"overloaded")
    outbox = make_outbox(attempts=5, backoff_s=0.2, max_backoff_s=0.2)
    with caplog.at_level(logging.WARNING, logger="tallyhub.alerts"):
        outbox.submit(parse_channel(f"webhook:{receiver.url}"), notification())
        deliveries = records.wait_for(5)
    assert [(d.attempt, d.ok, d.final) for d in deliveries] == [
        (1, False, False),
        (2, False, False),
        (3, False, False),
        (4, False, False),
        (5, False, True),
    ]
    times = [r.at for r in receiver.wait_for(5)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.2 for gap in gaps)
    assert times[-1] - times[0] < 2  # 4 times 0.2 s; 0.2 + 0.4 + 0.8 + 1.6 = 3 s without the cap
    assert "retrying in 0.2 s" in caplog.text
    assert "gave up delivering to webhook:http://127.0.0.1" in caplog.text and "after 5 attempt(s)" in caplog.text
    time.sleep(0.1)
    assert len(receiver.requests) == 5


def test_an_error_a_retry_cannot_fix_is_final_at_once(
    receiver: Receiver, records: Records, make_outbox: Callable[..., Outbox]
) -> None:
    receiver.answer(404, b"no such hook")
    make_outbox(attempts=4, backoff_s=0.01).submit(parse_channel(f"webhook:{receiver.url}"), notification())
    (delivery,) = records.wait_for(1)
    assert (delivery.attempt, delivery.ok, delivery.final) == (1, False, True)
    time.sleep(0.1)
    assert len(records.deliveries) == 1 and len(receiver.requests) == 1


def test_a_hanging_channel_delays_neither_the_caller_nor_another_channel(
    silent_url: str, receiver: Receiver, records: Records, make_outbox: Callable[..., Outbox]
) -> None:
    outbox = make_outbox(NotifySettings(timeout_s=3), attempts=1)
    hanging, healthy = parse_channel(f"webhook:{silent_url}"), parse_channel(f"slack:{receiver.url}")
    started = time.monotonic()
    for i in range(3):
        outbox.submit(hanging, notification(f"h-{i}"))
        outbox.submit(healthy, notification(f"ok-{i}"))
    assert time.monotonic() - started < 1  # submit never waits for a channel
    requests = receiver.wait_for(3, timeout_s=2.5)  # before the hanging channel's first timeout
    assert time.monotonic() - started < 3
    assert [r.headers["user-agent"].startswith("tallyhub/") for r in requests] == [True] * 3
    ok = [d for d in records.wait_for(3) if d.channel.startswith("slack:")]
    assert [(d.notification_id, d.ok) for d in ok] == [("ok-0", True), ("ok-1", True), ("ok-2", True)]
    timed_out = records.wait_for(4, timeout_s=8)[3]
    assert timed_out.channel.startswith("webhook:") and "no answer within 3 s" in timed_out.error


def test_a_full_queue_drops_the_notification_and_records_it(
    records: Records, make_outbox: Callable[..., Outbox], caplog: pytest.LogCaptureFixture
) -> None:
    entered, release = threading.Event(), threading.Event()
    delivered: list[str] = []

    def stuck(spec: ChannelSpec, n: Notification, settings: NotifySettings) -> None:
        entered.set()
        assert release.wait(5)
        delivered.append(n.id)

    outbox = make_outbox(queue_size=2, deliver=stuck)
    spec = parse_channel("email:ops@example.com")
    outbox.submit(spec, notification("n-1"))
    assert entered.wait(2)  # the worker holds n-1: the queue is empty again
    with caplog.at_level(logging.WARNING, logger="tallyhub.alerts"):
        started = time.monotonic()
        for i in (2, 3, 4):
            outbox.submit(spec, notification(f"n-{i}"))
        assert time.monotonic() - started < 1  # a full queue drops, never blocks (the worker is stuck for 5 s)
    (dropped,) = records.wait_for(1)
    assert (dropped.notification_id, dropped.attempt, dropped.ok, dropped.final, dropped.error) == (
        "n-4",
        0,
        False,
        True,
        "queue full",
    )
    assert dropped.channel == "email:ops@example.com"
    assert "alert high-errors (firing) dropped for email:ops@example.com" in caplog.text
    release.set()
    records.wait_for(4)
    assert delivered == ["n-1", "n-2", "n-3"]


def test_a_failing_record_or_deliver_never_ends_the_worker(records: Records) -> None:
    calls: list[str] = []

    def deliver(spec: ChannelSpec, n: Notification, settings: NotifySettings) -> None:
        calls.append(n.id)
        if n.id == "bug":
            raise RuntimeError("boom")

    def record(delivery: Delivery) -> None:
        records(delivery)
        if delivery.notification_id == "first":
            raise OSError("storage down")

    outbox = Outbox(NotifySettings(), record, attempts=2, backoff_s=0.01, deliver=deliver)
    try:
        spec = parse_channel("webhook:http://127.0.0.1:9/hook")
        for id in ("first", "bug", "last"):
            outbox.submit(spec, notification(id))
        deliveries = records.wait_for(4)
    finally:
        outbox.stop(2)
    assert [(d.notification_id, d.attempt, d.ok) for d in deliveries] == [
        ("first", 1, True),
        ("bug", 1, False),
        ("bug", 2, False),
        ("last", 1, True),
    ]
    assert deliveries[2].error == "unexpected error: RuntimeError: boom" and deliveries[2].final


def test_stop_cuts_a_backoff_short_and_leaves_the_rest(
    receiver: Receiver, records: Records, make_outbox: Callable[..., Outbox], caplog: pytest.LogCaptureFixture
) -> None:
    receiver.answer(500)
    outbox = make_outbox(attempts=3, backoff_s=30)
    spec = parse_channel(f"webhook:{receiver.url}")
    outbox.submit(spec, notification("n-1"))
    records.wait_for(1)
    started = time.monotonic()
    assert outbox.stop(timeout_s=10)
    assert time.monotonic() - started < 5  # not the 30 s backoff
    with caplog.at_level(logging.WARNING, logger="tallyhub.alerts"):
        outbox.submit(spec, notification("n-2"))
    assert "not queued" in caplog.text and "the outbox is stopped" in caplog.text
    time.sleep(0.1)
    assert len(receiver.requests) == 1 and len(records.deliveries) == 1


def test_send_now_makes_one_attempt_and_returns_it(
    receiver: Receiver, closed_url: str, records: Records, make_outbox: Callable[..., Outbox]
) -> None:
    outbox = make_outbox(attempts=5, backoff_s=0.01)
    ok = outbox.send_now(parse_channel(f"webhook:{receiver.url}"), notification("t-1", state="test"))
    assert (ok.ok, ok.final, ok.attempt, ok.state) == (True, True, 1, "test")
    assert receiver.wait_for(1)[0].headers["x-tallyhub-event"] == "alert.test"
    failed = outbox.send_now(parse_channel(f"webhook:{closed_url}"), notification("t-2", state="test"))
    assert (failed.ok, failed.final, failed.attempt) == (False, True, 1)
    assert "connection refused" in failed.error
    assert records.deliveries == [ok, failed]
