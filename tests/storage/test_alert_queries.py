"""The alerts' storage (`storage/alert_queries.py`) on real chDB: the numbers rules are evaluated on
are the dashboard's own (checked against `traffic` and `latency` for the same window and filters),
for every shape of rule at once; rules, states, history and deliveries as written and read back."""

from __future__ import annotations

import datetime as dt

import pytest

from tallyhub.storage import alert_queries as q
from tallyhub.storage.backend import ClientRunner
from tallyhub.storage.dashboard_queries import Filters, latency, save_app_settings, save_endpoint_settings, traffic
from tallyhub.storage.window import MINUTE, Window
from tallyhub.storage.writer import CONSUMER_COLUMNS, METRIC_COLUMNS, REQUEST_COLUMNS, insert_rows

UTC = dt.UTC
T0 = (dt.datetime.now(UTC) - dt.timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
WINDOW = (T0, T0 + dt.timedelta(minutes=10))
GET, POST = ("GET", "/items/{id}"), ("POST", "/items")


def request(
    minute: int,
    endpoint: tuple[str, str],
    status: int,
    n: int,
    bucket: int,
    consumer: str = "",
    env: str = "prod",
    app: str = "shop",
) -> list:
    values = {
        "minute": (T0 + dt.timedelta(minutes=minute)).replace(tzinfo=None), "app": app, "env": env,
        "service": "api", "instance": "i-1", "consumer": consumer, "method": endpoint[0], "route": endpoint[1],
        "status": status, "requests": n, "duration_sum": 0.1 * n, "duration_min": 0.01, "duration_max": 3.0,
        "duration_buckets": {bucket: n}, "request_size_sum": 10.0 * n, "request_size_buckets": {},
        "response_size_sum": 100.0 * n, "response_size_buckets": {},
    }  # fmt: skip
    return [values[c] for c in REQUEST_COLUMNS]


ROWS = [
    request(0, GET, 200, 40, -100, "acme"),
    request(1, GET, 404, 5, -150, "acme"),
    request(2, GET, 500, 5, 40, "beta"),
    request(3, POST, 201, 10, -50, "beta"),
    request(4, POST, 422, 10, -200, "carol"),
    request(5, GET, 200, 30, -100, env="staging"),
    request(9, POST, 503, 2, 60, "acme", env="staging"),
    request(10, GET, 500, 99, 60, "acme"),  # just after the window
    request(-1, GET, 500, 99, 60, "acme"),  # just before it
    request(3, GET, 200, 7, 0, "acme", app="other"),
]


@pytest.fixture
def shop(runner: ClientRunner) -> ClientRunner:
    insert_rows(runner.client, "requests", ROWS, "r")
    consumers = [
        [{"app": "shop", "env": "prod", "identifier": ident, "first_seen": T0.replace(tzinfo=None),
          "last_seen": T0.replace(tzinfo=None), "latest": (T0.replace(tzinfo=None), ident.title(), group)}[c]
         for c in CONSUMER_COLUMNS]
        for ident, group in (("acme", "customers"), ("beta", "partners"), ("carol", "partners"))
    ]  # fmt: skip
    insert_rows(runner.client, "consumers", consumers, "c")
    save_app_settings(runner, "shop", 0.25)
    save_endpoint_settings(runner, "shop", *POST, apdex_t=0.01)
    return runner


def dashboard_numbers(runner: ClientRunner, filters: Filters) -> dict:
    window = Window(*WINDOW, MINUTE, WINDOW[1] + dt.timedelta(hours=1))
    totals = traffic(runner, "shop", window, filters)["totals"]
    return totals | latency(runner, "shop", window, filters)["totals"]


SCOPES = {
    q.Scope("shop"): Filters(),
    q.Scope("shop", env="prod"): Filters(env="prod"),
    q.Scope("shop", env="staging"): Filters(env="staging"),
    q.Scope("shop", method="GET", route="/items/{id}"): Filters(method="GET", route="/items/{id}"),
    q.Scope("shop", env="prod", method="POST", route="/items"): Filters(env="prod", method="POST", route="/items"),
    q.Scope("shop", consumer="acme"): Filters(consumer="acme"),
    q.Scope("shop", env="staging", consumer="acme"): Filters(env="staging", consumer="acme"),
}


def test_every_scope_reads_the_dashboards_numbers(shop: ClientRunner) -> None:
    values = q.request_values(shop, [*SCOPES, q.Scope("other")], *WINDOW)
    for scope, filters in SCOPES.items():
        expected = dashboard_numbers(shop, filters)
        got = values[scope]
        for name in (
            "requests",
            "requests_per_minute",
            "client_errors",
            "server_errors",
            "error_rate",
            "bytes_in",
            "bytes_out",
        ):
            assert got[name] == pytest.approx(expected[name]), (scope, name)
        for name in ("p50", "p95", "p99", "apdex"):
            assert got[name] == pytest.approx(expected[name], nan_ok=True), (scope, name)
    whole = values[q.Scope("shop")]
    # 102 requests; client errors: the 422s (the 404s too: no endpoint expects them here); 5xx: 5 + 2
    assert (whole["requests"], whole["client_errors"], whole["server_errors"]) == (102, 15, 7)
    assert whole["requests_per_minute"] == pytest.approx(10.2)
    assert whole["consumers"] == 3
    assert values[q.Scope("other")]["requests"] == 7


def test_apdex_uses_the_endpoints_threshold_else_the_apps(shop: ClientRunner) -> None:
    values = q.request_values(
        shop, [q.Scope("shop", method="POST", route="/items"), q.Scope("shop", env="staging")], *WINDOW
    )
    # POST /items: T = 0.01 s; its 22 durations are ~0.34, ~0.013 (4 T tolerating), ~3.7 s
    post = values[q.Scope("shop", method="POST", route="/items")]
    assert post["apdex"] == pytest.approx((0 + 10 / 2) / 22)
    staging = values[q.Scope("shop", env="staging")]  # T = 0.25 s (the app's): 30 at ~0.11 s, 2 at ~3.7 s
    assert staging["apdex"] == pytest.approx(30 / 32)


def test_consumer_groups(shop: ClientRunner) -> None:
    partners, customers, nobody = (
        q.Scope("shop", consumer_group="partners"),
        q.Scope("shop", consumer_group="customers"),
        q.Scope("shop", consumer_group="nobody"),
    )
    values = q.request_values(shop, [partners, customers, nobody], *WINDOW)
    assert (values[partners]["requests"], values[partners]["client_errors"], values[partners]["server_errors"]) == (
        25,
        10,
        5,
    )
    assert values[partners]["consumers"] == 2
    assert values[customers]["requests"] == 47  # acme: 40 + 5 in prod, 2 in staging
    assert values[nobody]["requests"] == 0 and values[nobody]["error_rate"] is None and values[nobody]["p95"] is None


def gauge_row(time: dt.datetime, name: str, value: float = 0.0, instance: str = "i-1", env: str = "prod") -> list:
    """A gauge of `metrics` without attributes, as tallyhub's client sends its process metrics."""
    values = {c: 0 for c in METRIC_COLUMNS} | {
        "time": time.replace(tzinfo=None), "start_time": T0.replace(tzinfo=None), "app": "shop", "env": env,
        "service": "api", "instance": instance, "name": name, "unit": "", "kind": "gauge", "value": value,
        "attributes": {}, "bounds": [], "bucket_counts": [], "positive_counts": [], "negative_counts": [],
    }  # fmt: skip
    return [values[c] for c in METRIC_COLUMNS]


def test_last_exports_from_requests_and_uptime(runner: ClientRunner) -> None:
    insert_rows(runner.client, "requests", [request(0, GET, 200, 1, 0), request(2, GET, 200, 1, 0, env="staging")], "r")
    insert_rows(runner.client, "metrics", [gauge_row(T0 + dt.timedelta(minutes=7, seconds=30), "process.uptime")], "m")
    last = q.last_exports(runner, ["shop", "idle"], T0 + dt.timedelta(hours=1), dt.timedelta(days=1))
    assert last == {
        ("shop", "prod"): T0 + dt.timedelta(minutes=7, seconds=30),
        ("shop", "staging"): T0 + dt.timedelta(minutes=3),
    }
    assert q.last_exports(runner, ["shop"], T0 + dt.timedelta(days=3), dt.timedelta(days=1)) == {}


def test_rules_states_history_and_deliveries(runner: ClientRunner) -> None:
    q.save_rule(runner, "errors", "shop", "error_rate", '{"x": 1}', "cli")
    q.save_rule(runner, "down", "shop", "heartbeat", '{"y": "it\'s \\"quoted\\""}', "file")
    q.save_rule(runner, "errors", "shop", "error_rate", '{"x": 2}', "cli")
    assert q.stored_rules(runner) == [
        {"name": "down", "rule": '{"y": "it\'s \\"quoted\\""}', "source": "file"},
        {"name": "errors", "rule": '{"x": 2}', "source": "cli"},
    ]
    q.remove_rules(runner, ["down"])
    assert [row["name"] for row in q.stored_rules(runner)] == ["errors"]

    t1, t2 = T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(minutes=2, milliseconds=5)
    pending = {
        "state": "pending",
        "since": t1,
        "breach_since": t1,
        "clear_since": None,
        "value": 0.5,
        "evaluated_at": t1,
    }
    q.save_states(runner, {"errors": pending})
    assert q.load_states(runner) == {"errors": pending}
    firing = pending | {"state": "firing", "since": t2, "value": None, "evaluated_at": t2}
    q.save_states(runner, {"errors": firing})
    assert q.load_states(runner) == {"errors": firing}

    row = {
        "rule": "errors", "app": "shop", "env": "", "metric": "error_rate", "value": 0.5, "threshold": 0.1,
        "condition": "error_rate > 0.1 over 5m",
    }  # fmt: skip
    channels = ["webhook:http://a/x", "email:b@example.com"]
    q.record_history(runner, [
        row | {"time": t1, "before": "ok", "after": "pending", "since": q.sql_time(t1), "notification_id": "",
               "notification": "", "channels": []},
        row | {"time": t2, "before": "pending", "after": "firing", "since": q.sql_time(t1), "notification_id": "n1",
               "notification": "{}", "channels": channels},
    ])  # fmt: skip
    assert q.latest_transitions(runner) == {"errors": {"after": "firing", "time": t2, "since": t1}}
    assert [(h["before"], h["after"]) for h in q.history(runner, rule="errors")] == [
        ("pending", "firing"),
        ("ok", "pending"),
    ]
    assert q.notifications_since(runner, T0) == [("{}", channels, [])]
    delivery = {
        "notification_id": "n1",
        "rule": "errors",
        "state": "firing",
        "attempt": 1,
        "error": "",
        "duration_ms": 12.5,
    }
    q.record_deliveries(runner, [
        delivery | {"time": t2, "channel": "webhook:http://a/…", "channel_id": "w1", "ok": False, "final": False,
                    "error": "HTTP 500"},
        delivery | {"time": t2, "channel": "email:b@example.com", "channel_id": "e1", "ok": True, "final": True},
    ])  # fmt: skip
    assert q.notifications_since(runner, T0) == [("{}", ["webhook:http://a/x", "email:b@example.com"], ["e1"])]
    assert q.notifications_since(runner, t2 + dt.timedelta(seconds=1)) == []
    assert {(d["channel"], d["ok"]) for d in q.deliveries(runner, rule="errors")} == {
        ("webhook:http://a/…", False),
        ("email:b@example.com", True),
    }


def test_an_apps_alerts_for_the_dashboard(runner: ClientRunner) -> None:
    """Rules of the app only, firing first, then pending, then by name; each with its state (None:
    never evaluated) and its latest notification's outcome per channel; history without channels."""
    for name, app in (("zeta", "shop"), ("alpha", "shop"), ("slow", "shop"), ("quiet", "shop"), ("elsewhere", "blog")):
        q.save_rule(runner, name, app, "error_rate", f'{{"name": "{name}", "app": "{app}"}}', "cli")
    q.save_rule(runner, "gone", "shop", "p95", "{}", "file")
    q.remove_rules(runner, ["gone"])
    t1, t2, t3 = (T0 + dt.timedelta(minutes=m) for m in (1, 2, 3))

    def state(name: str, when: dt.datetime) -> dict:
        return {"state": name, "since": when, "breach_since": None, "clear_since": None} | {
            "value": 0.25,
            "evaluated_at": t3,
        }

    q.save_states(runner, {"zeta": state("firing", t2), "alpha": state("ok", t1), "slow": state("pending", t3)})
    row = {"app": "shop", "env": "", "metric": "error_rate", "value": 0.25, "threshold": 0.1, "condition": "c"}
    secret = "slack:https://hooks.slack.com/services/T0/B0/SECRET"
    q.record_history(runner, [
        row | {"time": t1, "rule": "zeta", "before": "ok", "after": "pending", "since": q.sql_time(t1),
               "notification_id": "", "notification": "", "channels": []},
        row | {"time": t2, "rule": "zeta", "before": "pending", "after": "firing", "since": q.sql_time(t1),
               "notification_id": "zeta:firing", "notification": "{}", "channels": [secret]},
        row | {"time": t3, "rule": "slow", "before": "ok", "after": "pending", "since": q.sql_time(t3),
               "notification_id": "", "notification": "", "channels": []},
        row | {"time": t3, "rule": "elsewhere", "app": "blog", "before": "ok", "after": "pending",
               "since": q.sql_time(t3), "notification_id": "", "notification": "", "channels": []},
    ])  # fmt: skip
    attempt = {"rule": "zeta", "state": "firing", "final": False, "error": "", "duration_ms": 1.0}
    hook, mail = "slack:https://hooks.slack.com/***", "email:ops@example.com"
    q.record_deliveries(runner, [
        attempt | {"time": t1, "notification_id": "older", "channel": hook, "channel_id": "h1", "attempt": 1,
                   "ok": True, "final": True},
        attempt | {"time": t2, "notification_id": "zeta:firing", "channel": hook, "channel_id": "h1", "attempt": 1,
                   "ok": False, "error": "HTTP 500"},
        attempt | {"time": t3, "notification_id": "zeta:firing", "channel": hook, "channel_id": "h1", "attempt": 2,
                   "ok": False, "final": True, "error": "HTTP 502"},
        # another Slack webhook: it reads the same, redacted
        attempt | {"time": t2, "notification_id": "zeta:firing", "channel": hook, "channel_id": "h2", "attempt": 1,
                   "ok": True, "final": True},
        attempt | {"time": t2, "notification_id": "zeta:firing", "channel": mail, "channel_id": "m1", "attempt": 1,
                   "ok": True, "final": True},
    ])  # fmt: skip

    found = q.app_alerts(runner, "shop")
    assert [r["name"] for r in found["rules"]] == ["zeta", "slow", "alpha", "quiet"]
    zeta = found["rules"][0]
    assert zeta["rule"] == {"name": "zeta", "app": "shop"} and zeta["source"] == "cli"
    assert zeta["state"] == {
        "state": "firing",
        "since": t2.timestamp(),
        "breach_since": None,
        "clear_since": None,
        "value": 0.25,
        "evaluated_at": t3.timestamp(),
    }
    assert found["rules"][3]["state"] is None and found["rules"][3]["deliveries"] == []
    assert [(d["channel"], d["attempt"], d["ok"], d["final"], d["error"], d["time"]) for d in zeta["deliveries"]] == [
        (mail, 1, True, True, "", t2.timestamp()),
        (hook, 2, False, True, "HTTP 502", t3.timestamp()),
        (hook, 1, True, True, "", t2.timestamp()),
    ]
    assert [(h["rule"], h["before"], h["after"], h["time"]) for h in found["history"]] == [
        ("slow", "ok", "pending", t3.timestamp()),
        ("zeta", "pending", "firing", t2.timestamp()),
        ("zeta", "ok", "pending", t1.timestamp()),
    ]
    assert all("channels" not in h for h in found["history"]) and "SECRET" not in repr(found)
    assert [h["after"] for h in q.app_alerts(runner, "shop", rule="zeta", limit=1)["history"]] == ["firing"]
    assert q.app_alerts(runner, "nobody") == {"rules": [], "history": []}
