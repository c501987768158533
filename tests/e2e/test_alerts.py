"""A real hub process with a rules file, on the real clock: a rule fires at the hub's evaluation, its
notification cannot be delivered (the receiver is down), the hub is killed with SIGKILL; at the next
start the notification is sent, once, and the rule is still firing (not notified again)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.alerts.receivers import serve
from tests.conftest import free_port

from .conftest import Hub, wait_for


def test_a_notification_undelivered_when_the_hub_is_killed_is_sent_once_at_the_next_start(tmp_path: Path) -> None:
    port = free_port()  # the receiver's, down until the hub has been killed
    rules = tmp_path / "alerts.toml"
    rules.write_text(
        f'[[rule]]\nname = "ghost-down"\napp = "ghost"\nmetric = "heartbeat"\n'
        f'channels = ["webhook:http://127.0.0.1:{port}/hook"]\n'
    )
    hub = Hub(tmp_path / "data", "--alert-rules", str(rules))
    hub.start()
    try:
        # `ghost` never exported: the rule fires at the hub's first evaluation (20 s past a minute)
        # and the first attempt is refused
        wait_for(
            lambda: hub.sql("SELECT count() FROM alert_deliveries WHERE NOT ok") != [["0"]],
            90,
            "a failed delivery",
            interval_s=1,
        )
        assert hub.stop(signal.SIGKILL) == -signal.SIGKILL
        ((after, notification_id),) = hub.sql("SELECT after, notification_id FROM alert_history")
        assert after == "firing"
        receiving = serve(port)
        receiver = next(receiving)
        try:
            hub.start()
            (request,) = receiver.wait_for(1, timeout_s=30)
            body = json.loads(request.body)
            assert (body["id"], body["rule"], body["state"]) == (notification_id, "ghost-down", "firing")
            wait_for(
                lambda: hub.sql("SELECT count() FROM alert_deliveries WHERE ok AND final") == [["1"]],
                30,
                "the delivery recorded",
            )
            shown = hub.cli("alerts", "show", "ghost-down").stdout
            assert "state      firing since" in shown and "firing   webhook:http://127.0.0.1" in shown
            assert "#1 delivered" in shown
            assert len(receiver.requests) == 1
        finally:
            receiving.close()
    finally:
        if hub.process is not None and hub.process.poll() is None:
            hub.stop()
