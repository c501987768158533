"""The evaluation on real chDB with a controllable clock (``tick(now)``, no sleeping through windows),
notifications delivered by the real outbox to a real webhook receiver on loopback: rules fire and
resolve on the numbers stored, every transition and delivery is recorded, and a hub restarted while
a rule is pending or firing (or killed before it delivered) neither loses nor repeats a notification."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tallyhub.alerts.notify.channels import NotifySettings, parse_channel
from tallyhub.alerts.notify.send import verify_signature
from tallyhub.alerts.rules import parse_rule
from tallyhub.alerts.service import Alerts
from tallyhub.storage import alert_queries as q
from tallyhub.storage.backend import ClientRunner, open_client
from tallyhub.storage.writer import REQUEST_COLUMNS, insert_rows
from tests.alerts.receivers import PASSWORD, USER, Receiver
from tests.storage.test_alert_queries import gauge_row

UTC = dt.UTC
T0 = (dt.datetime.now(UTC) - dt.timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
SECRET = "s3cret"


def at(minute: int, second: int = 20) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minute, seconds=second)


def requests(minute: int, ok: int, errors: int, app: str = "shop") -> list[list]:
    rows = []
    for status, n in ((200, ok), (500, errors)):
        if n:
            values = {
                "minute": (T0 + dt.timedelta(minutes=minute)).replace(tzinfo=None), "app": app, "env": "prod",
                "service": "api", "instance": "i-1", "consumer": "", "method": "GET", "route": "/items/{id}",
                "status": status, "requests": n, "duration_sum": 0.1 * n, "duration_min": 0.1, "duration_max": 0.1,
                "duration_buckets": {-100: n}, "request_size_sum": 0.0, "request_size_buckets": {},
                "response_size_sum": 0.0, "response_size_buckets": {},
            }  # fmt: skip
            rows.append([values[c] for c in REQUEST_COLUMNS])
    return rows


def store(runner: ClientRunner, rows: list[list]) -> None:
    insert_rows(runner.client, "requests", rows, f"t-{time.monotonic_ns()}")


def add_rule(runner: ClientRunner, **values: object) -> None:
    given = {"name": "errors", "app": "shop", "metric": "error_rate", "threshold": 0.2, "window": "2m"} | values
    rule = parse_rule({key: value for key, value in given.items() if value is not None})
    q.save_rule(runner, rule.name, rule.app, rule.metric, rule.to_json(), rule.source)


def alerts(runner: ClientRunner) -> Alerts:
    """The hub's alerting as `Hub` makes it, not started: the test ticks it."""
    return Alerts(
        runner, NotifySettings(webhook_secret=SECRET), lambda rule: f"http://dash/{rule.name}", backoff_s=0.05
    )


@pytest.fixture
def hub(runner: ClientRunner) -> Iterator[Alerts]:
    made = alerts(runner)
    yield made
    made.outbox.stop()


def states(transitions: list) -> list[tuple[str, str]]:
    return [(t.before, t.after) for t in transitions]


def bodies(receiver: Receiver) -> list[dict]:
    return [json.loads(r.body) for r in receiver.requests]


def test_a_rule_fires_after_its_pending_period_and_resolves(
    runner: ClientRunner, hub: Alerts, receiver: Receiver
) -> None:
    add_rule(runner, pending="2m", channels=[f"webhook:{receiver.url}"])
    store(
        runner, [*requests(0, 10, 0), *requests(1, 10, 0), *requests(2, 5, 5), *requests(3, 5, 5), *requests(4, 5, 5)]
    )
    store(runner, [*requests(5, 5, 5), *requests(6, 10, 0), *requests(7, 10, 0)])
    seen = {m: states(hub.evaluator.tick(at(m))) for m in range(2, 11)}
    # minute m reads minutes m-3 and m-2: errors 0 % at 2-3, 25 % at 4, 50 % at 5-7, 25 % at 8, 0 % at 9
    assert seen == {
        2: [], 3: [], 4: [("ok", "pending")], 5: [], 6: [("pending", "firing")], 7: [], 8: [],
        9: [("firing", "resolved")], 10: [],
    }  # fmt: skip
    received = receiver.wait_for(2)
    firing, resolved = bodies(receiver)
    assert (firing["state"], firing["rule"], firing["app"], firing["value"]) == ("firing", "errors", "shop", 0.5)
    assert firing["condition"] == "error_rate > 0.2 over 2m" and firing["dashboard_url"] == "http://dash/errors"
    assert (resolved["state"], resolved["value"]) == ("resolved", 0.0)
    for request in received:
        headers = request.headers
        assert verify_signature(SECRET, headers["x-tallyhub-timestamp"], request.body, headers["x-tallyhub-signature"])
    history = q.history(runner, rule="errors")
    assert [(h["before"], h["after"], h["notification_id"] != "") for h in history] == [
        ("firing", "resolved", True),
        ("pending", "firing", True),
        ("ok", "pending", False),
    ]
    assert firing["id"] == history[1]["notification_id"]
    deadline = time.monotonic() + 5
    while len(q.deliveries(runner, rule="errors")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {(d["state"], d["ok"], d["final"]) for d in q.deliveries(runner, rule="errors")} == {
        ("firing", True, True),
        ("resolved", True, True),
    }
    assert q.load_states(runner)["errors"]["state"] == "resolved"


def test_a_restart_while_pending_keeps_the_pending_period(runner: ClientRunner, receiver: Receiver) -> None:
    add_rule(runner, pending="3m", channels=[f"webhook:{receiver.url}"])
    store(runner, [row for m in range(12) for row in requests(m, 5, 5)])
    first = alerts(runner)
    assert states(first.evaluator.tick(at(4))) == [("ok", "pending")]
    first.evaluator.tick(at(5))
    first.outbox.stop()
    restarted = alerts(runner)  # a new hub on the same storage
    assert restarted.evaluator.resume(at(6)) == 0
    assert states(restarted.evaluator.tick(at(6))) == []
    assert states(restarted.evaluator.tick(at(7))) == [("pending", "firing")]  # 3 minutes after 4, not after 6
    receiver.wait_for(1)
    assert [b["state"] for b in bodies(receiver)] == ["firing"]
    restarted.outbox.stop()


def test_a_restart_while_firing_sends_nothing_again(runner: ClientRunner, receiver: Receiver) -> None:
    add_rule(runner, channels=[f"webhook:{receiver.url}"])
    store(runner, [row for m in range(6) for row in requests(m, 5, 5)])
    first = alerts(runner)
    assert states(first.evaluator.tick(at(3))) == [("ok", "firing")]
    receiver.wait_for(1)
    first.outbox.stop()
    _wait_for_deliveries(runner, 1)
    restarted = alerts(runner)
    assert restarted.evaluator.resume(at(4)) == 0  # delivered: not sent again
    assert states(restarted.evaluator.tick(at(4))) == []  # still firing: no new notification
    assert states(restarted.evaluator.tick(at(9))) == [("firing", "resolved")]  # no data since minute 6
    receiver.wait_for(2)
    restarted.outbox.stop()
    assert [b["state"] for b in bodies(receiver)] == ["firing", "resolved"]


def test_a_notification_not_delivered_before_a_stop_is_sent_at_the_next_start(
    runner: ClientRunner, receiver: Receiver
) -> None:
    add_rule(runner, channels=[f"webhook:{receiver.url}"])
    store(runner, [row for m in range(6) for row in requests(m, 5, 5)])
    killed = alerts(runner)
    killed.evaluator._submit = lambda spec, notification: None  # the hub dies before the outbox sends
    assert states(killed.evaluator.tick(at(3))) == [("ok", "firing")]
    restarted = alerts(runner)
    assert restarted.evaluator.resume(at(4)) == 1
    (request,) = receiver.wait_for(1)
    assert json.loads(request.body)["state"] == "firing"
    _wait_for_deliveries(runner, 1)
    assert alerts(runner).evaluator.resume(at(5)) == 0  # delivered now: a third start sends nothing
    assert states(restarted.evaluator.tick(at(5))) == []
    restarted.outbox.stop()


def test_a_channel_that_hangs_delays_neither_the_evaluation_nor_the_other_channel(
    runner: ClientRunner, receiver: Receiver, silent_url: str
) -> None:
    add_rule(runner, channels=[f"webhook:{silent_url}", f"webhook:{receiver.url}"])
    store(runner, [row for m in range(4) for row in requests(m, 5, 5)])
    hub = Alerts(runner, NotifySettings(timeout_s=3), attempts=1)
    assert states(hub.evaluator.tick(at(3))) == [("ok", "firing")]  # returns without waiting for either channel
    receiver.wait_for(1)
    hung_channel = parse_channel(f"webhook:{silent_url}").redacted()
    # the other channel got it while the hung one's first attempt was still waiting for its answer
    assert [d for d in q.deliveries(runner) if d["channel"] == hung_channel] == []
    attempts = _wait_for_deliveries(runner, 2)
    hung = [(d["attempt"], d["ok"], d["final"], d["error"]) for d in attempts if d["channel"] == hung_channel]
    assert hung == [(1, False, True, f"{hung_channel}: no answer within 3 s; is the receiver up and reachable?")]
    hub.outbox.stop()


def test_heartbeat_fires_when_an_app_stops_exporting_and_resolves_when_it_is_back(
    runner: ClientRunner, hub: Alerts
) -> None:
    add_rule(runner, name="down", metric="heartbeat", threshold=None, window=None)
    store(runner, requests(0, 1, 0))
    assert states(hub.evaluator.tick(at(2, 0))) == []  # last export ended at minute 1: 1 minute ago
    assert states(hub.evaluator.tick(at(4, 0))) == [("ok", "firing")]  # 3 minutes silent
    assert q.load_states(runner)["down"]["value"] == 3.0
    insert_rows(
        runner.client, "metrics", [gauge_row(T0 + dt.timedelta(minutes=4, seconds=30), "process.uptime")], "u"
    )  # an idle export
    assert states(hub.evaluator.tick(at(5, 0))) == [("firing", "resolved")]


def test_cpu_and_memory_rules_read_the_busiest_instance(runner: ClientRunner, hub: Alerts) -> None:
    add_rule(runner, name="cpu", metric="cpu", threshold=0.8, window="3m")
    add_rule(runner, name="memory", metric="memory", op=">=", threshold=500e6, env="staging", window="3m")
    cpu, memory = "process.cpu.utilization", "process.memory.usage"
    rows = [
        *(gauge_row(T0 + dt.timedelta(minutes=m), cpu, value, "i-1") for m, value in ((0, 0.2), (1, 0.3), (2, 0.4))),
        *(gauge_row(T0 + dt.timedelta(minutes=m), cpu, value, "i-2") for m, value in ((0, 0.7), (1, 0.9), (2, 0.95))),
        *(gauge_row(T0 + dt.timedelta(minutes=m), memory, 600e6, "i-3", "prod") for m in range(3)),
        *(gauge_row(T0 + dt.timedelta(minutes=m), memory, 400e6 + m * 100e6, "i-4", "staging") for m in range(3)),
    ]
    insert_rows(runner.client, "metrics", rows, "resources")
    moved = {t.rule.name: t.after for t in hub.evaluator.tick(at(4))}  # reads minutes 0-2
    assert moved == {"cpu": "firing", "memory": "firing"}
    values = {name: state["value"] for name, state in q.load_states(runner).items()}
    assert values["cpu"] == pytest.approx((0.7 + 0.9 + 0.95) / 3)  # i-2's average; i-1's is 0.3
    assert values["memory"] == pytest.approx(500e6)  # staging's i-4 only: prod's i-3 is not watched
    assert hub.evaluator.tick(at(8)) and q.load_states(runner)["cpu"]["value"] is None  # no data: resolved


def _wait_for_deliveries(runner: ClientRunner, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = q.deliveries(runner)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{len(q.deliveries(runner))} deliveries recorded, {count} expected")


def test_two_channels_that_read_alike_are_resumed_each_on_its_own(runner: ClientRunner, receiver: Receiver) -> None:
    first, second = f"webhook:{receiver.url}?team=a", f"webhook:{receiver.url}?team=b"  # both "…/***" when shown
    add_rule(runner, channels=[first, second])
    store(runner, [row for m in range(6) for row in requests(m, 5, 5)])
    killed = alerts(runner)
    sent_before_the_kill = []
    killed.evaluator._submit = lambda spec, notification: sent_before_the_kill.append(str(spec))
    killed.evaluator.tick(at(3))
    assert sent_before_the_kill == [first, second]
    ((text, _channels, _done),) = q.notifications_since(runner, T0)
    delivered = parse_channel(first)
    q.record_deliveries(runner, [{
        "time": at(3), "notification_id": json.loads(text)["id"], "rule": "errors", "state": "firing",
        "channel": delivered.redacted(), "channel_id": delivered.fingerprint(), "attempt": 1, "ok": True,
        "final": True, "error": "", "duration_ms": 1.0,
    }])  # fmt: skip
    restarted = alerts(runner)
    assert restarted.evaluator.resume(at(4)) == 1  # the second only
    (request,) = receiver.wait_for(1)
    assert request.path.endswith("team=b")
    restarted.outbox.stop()


def test_an_email_over_starttls_with_a_login(runner: ClientRunner, starttls_smtp, certificate) -> None:
    add_rule(runner, channels=["email:ops@example.com,dev@example.com"])
    store(runner, [row for m in range(4) for row in requests(m, 5, 5)])
    settings = NotifySettings(
        smtp_url=f"smtp://{quote(USER)}:{quote(PASSWORD)}@127.0.0.1:{starttls_smtp.port}",
        smtp_from="tallyhub <hub@example.com>",
        smtp_ca_file=str(certificate[0]),
    )
    hub = Alerts(runner, settings, backoff_s=0.05)
    assert states(hub.evaluator.tick(at(3))) == [("ok", "firing")]
    _wait_for_deliveries(runner, 1)
    hub.outbox.stop()
    (mail,) = starttls_smtp.messages()
    assert mail["Subject"].startswith("[FIRING] errors: error_rate 0.5 > 0.2")
    assert mail["To"] == "ops@example.com, dev@example.com"
    assert starttls_smtp.envelopes[0].rcpt_tos == ["ops@example.com", "dev@example.com"]
    assert starttls_smtp.sessions == [{"tls": True, "authenticated": True}]


def test_heartbeat_of_an_app_silent_for_hours_reads_its_last_export_days_back(
    runner: ClientRunner, hub: Alerts
) -> None:
    add_rule(runner, name="down", metric="heartbeat", threshold=None, window=None)
    add_rule(runner, name="staging-down", metric="heartbeat", env="staging", threshold=None, window=None)
    store(runner, requests(0, 1, 0))  # prod exported last at minute 1; staging never
    assert {t.rule.name: t.after for t in hub.evaluator.tick(at(2 * 24 * 60 + 1, 0))} == {
        "down": "firing",
        "staging-down": "firing",
    }
    values = {name: state["value"] for name, state in q.load_states(runner).items()}
    assert values == {"down": 2 * 24 * 60, "staging-down": 7 * 24 * 60}  # 2 days; never seen: the whole lookback


def test_a_dead_database_fails_the_evaluation_with_its_reason_in_the_status(
    runner: ClientRunner, chdb_url: str, database: str
) -> None:
    add_rule(runner)
    store(runner, [row for m in range(4) for row in requests(m, 5, 5)])
    client = open_client(chdb_url, database)
    hub = Alerts(ClientRunner(client, client), NotifySettings())
    hub.evaluate(at(3))
    assert hub.status() == {"rules": 1, "firing": ["errors"], "last evaluation": at(3).isoformat(), "last error": ""}
    client.close()  # the database goes away under the hub
    hub.evaluate(at(4))  # logged, not raised: the schedule goes on
    status = hub.status()  # answered from memory
    assert status["firing"] == ["errors"] and status["last evaluation"] == at(4).isoformat()
    assert status["last error"].startswith(f"{at(4):%H:%M} UTC: ")
    assert [h["after"] for h in q.history(runner, rule="errors")] == ["firing"]  # nothing recorded half-way
