"""The request log's daily quota: counted per app and UTC day, from what is stored, across the link."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.link import QueueLink, QueueServer
from tallyhub.collector_processor.receive.quota import RequestLogQuota
from tallyhub.collector_processor.stats import Stats

DAY = 86_400


class Clock:
    def __init__(self) -> None:
        self.t = 20_000 * DAY + 3600.0

    def __call__(self) -> float:
        return self.t


def test_an_app_gets_what_is_left_of_its_day_and_a_new_day_starts_from_what_is_stored() -> None:
    clock, asked = Clock(), []
    stored = {"shop": 4, "blog": 0}

    def stored_today(app: str) -> int:
        asked.append(app)
        return stored[app]

    quota = RequestLogQuota(10, stored_today, clock)
    assert quota.take("shop", 5) == (5, "")
    allowed, message = quota.take("shop", 3)
    assert allowed == 1 and message.startswith("2 logged requests not stored: app shop reached its request log quota")
    assert quota.take("shop", 1)[0] == 0
    assert quota.take("blog", 10) == (10, "")  # each app its own
    assert asked == ["shop", "blog"]  # the stored count read once per app and day
    clock.t += DAY
    stored["shop"] = 0
    assert quota.take("shop", 10) == (10, "")
    assert asked == ["shop", "blog", "shop"]
    assert RequestLogQuota(0, stored_today, clock).take("shop", 10**9) == (10**9, "")  # 0: no quota


def test_receiver_processes_ask_the_hubs_quota_over_the_link(tmp_path: Path) -> None:
    quota = RequestLogQuota(3, lambda app: 0)
    queue = DurableQueue(tmp_path / "queue")
    directory = Path(tempfile.mkdtemp(prefix="tallyhub-test-"))  # a socket's path must be short
    server = QueueServer(directory / "link.sock", queue, dict, Stats(), quota.take)
    server.start()
    try:
        link = QueueLink(str(directory / "link.sock"))
        assert link.request_log_quota("shop", 2) == (2, "")
        allowed, message = link.request_log_quota("shop", 2)
        assert allowed == 1 and "1 logged requests not stored" in message
    finally:
        server.stop()
        queue.close()
        directory.rmdir()
