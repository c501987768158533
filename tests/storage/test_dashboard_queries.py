"""The dashboard's queries (`storage/dashboard_queries.py`) against real chDB tables: known rows
(minutes of an hour, statuses 200/201/404/422/500, two consumers, two envs, an introspected
endpoint without traffic), read at the minute, hour and day levels, with filters, and the
settings of migration 0010."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client

from tallyhub.storage.apps import create_app
from tallyhub.storage.backend import ClientRunner, open_client
from tallyhub.storage.dashboard_queries import (
    KEEP,
    FilterError,
    Filters,
    SettingsError,
    UnknownEndpoint,
    app_settings,
    apps_overview,
    consumers,
    endpoint_detail,
    endpoint_settings,
    endpoints,
    errors,
    instance_resources,
    instances,
    known_app,
    latency,
    save_app_settings,
    save_endpoint_settings,
    traffic,
)
from tallyhub.storage.migrate import migrate
from tallyhub.storage.window import DAY, HOUR, MINUTE, Window
from tallyhub.storage.writer import (
    CONSUMER_COLUMNS,
    ENDPOINT_COLUMNS,
    INSTANCE_COLUMNS,
    METRIC_COLUMNS,
    REQUEST_COLUMNS,
    SERVER_ERROR_COLUMNS,
    VALIDATION_ERROR_COLUMNS,
    insert_rows,
)

UTC = dt.UTC
# Midday three days ago: the hour read here, and the hour before it, are in one UTC day.
T0 = (dt.datetime.now(UTC) - dt.timedelta(days=3)).replace(hour=12, minute=0, second=0, microsecond=0)
NOW = T0 + dt.timedelta(hours=1)
HOUR_WINDOW = Window(T0, NOW, MINUTE, NOW)
S0 = int(T0.timestamp())

GET_ITEM = ("GET", "/items/{id}")
POST_ITEMS = ("POST", "/items")


def minute(offset: int) -> dt.datetime:
    return (T0 + dt.timedelta(minutes=offset)).replace(tzinfo=None)


def bucket_middle(k: int) -> float:
    """The value tallyhub_quantile gives for stored bucket k (its geometric middle)."""
    return 2 ** ((k + 0.5) / 32)


def request(
    offset: int, endpoint: tuple[str, str], status: int, n: int, buckets: dict, consumer="", env="prod", instance="i-1"
) -> list:
    values = {
        "minute": minute(offset), "app": "shop", "env": env, "service": "api", "instance": instance,
        "consumer": consumer, "method": endpoint[0], "route": endpoint[1], "status": status, "requests": n,
        "duration_sum": 0.1 * n, "duration_min": 0.01, "duration_max": 3.0, "duration_buckets": buckets,
        "request_size_sum": 20.0 * n, "request_size_buckets": {}, "response_size_sum": 100.0 * n,
        "response_size_buckets": {},
    }  # fmt: skip
    return [values[c] for c in REQUEST_COLUMNS]


def row(columns: tuple[str, ...], **values) -> list:
    return [values[c] for c in columns]


def error_key(offset: int, consumer: str, endpoint: tuple[str, str]) -> dict:
    return {
        "minute": minute(offset), "app": "shop", "env": "prod", "service": "api", "instance": "i-1",
        "consumer": consumer, "method": endpoint[0], "route": endpoint[1],
    }  # fmt: skip


def gauge(offset: int, name: str, value: float, instance: str = "i-1", env: str = "prod", app: str = "shop", **more):
    """A row of `metrics`: by default a gauge without attributes, as tallyhub's client sends."""
    values = {
        "time": minute(offset), "start_time": minute(offset), "app": app, "env": env, "service": "api",
        "instance": instance, "name": name, "unit": "", "kind": "gauge", "monotonic": 0, "attributes": {},
        "value": value, "count": 0, "sum": 0.0, "min": 0.0, "max": 0.0, "bounds": [], "bucket_counts": [],
        "scale": 0, "zero_count": 0, "positive_offset": 0, "positive_counts": [], "negative_offset": 0,
        "negative_counts": [],
    } | more  # fmt: skip
    return [values[c] for c in METRIC_COLUMNS]


CPU, MEMORY = "process.cpu.utilization", "process.memory.usage"
PROCESS_METRICS = [
    # i-1 (in `instances`): CPU 0.25, 0.75, 0.125 (last; mean 0.375); memory 100, 170, 120 MB (mean 130)
    gauge(10, CPU, 0.25), gauge(20, CPU, 0.75), gauge(30, CPU, 0.125),
    gauge(10, MEMORY, 100e6), gauge(20, MEMORY, 170e6), gauge(30, MEMORY, 120e6),
    # what these reads leave alone: outside the hour, split by a CPU mode, memory sent as a sum
    gauge(-30, CPU, 0.99), gauge(60, CPU, 0.99), gauge(40, CPU, 0.99, attributes={"cpu.mode": "user"}),
    gauge(40, MEMORY, 5e9, kind="sum"),
    # i-3 (only in `metrics`): CPU 0.5, 0.75 (mean 0.625), no memory; staging's i-s: memory alone
    gauge(10, CPU, 0.5, "i-3"), gauge(20, CPU, 0.75, "i-3"), gauge(5, MEMORY, 50e6, "i-s", "staging"),
    gauge(10, CPU, 0.875, "o-1", app="other"),
]  # fmt: skip


def insert_shop(ch: Client) -> None:
    """In the hour from T0 (all envs): 25 requests, 20 in prod, 5 in staging; 3 unexpected 4xx
    (422), 2 expected ones (404 of GET /items/{id}), 1 5xx; 7 requests in the hour before."""
    insert_rows(
        ch,
        "requests",
        [
            request(1, GET_ITEM, 200, 10, {-100: 10}, "acme"),
            request(1, GET_ITEM, 404, 2, {-150: 2}, "acme"),
            request(2, POST_ITEMS, 201, 4, {-50: 4}, "beta"),
            request(2, POST_ITEMS, 422, 3, {-200: 3}, "beta"),
            request(5, POST_ITEMS, 500, 1, {32: 1}),
            request(5, GET_ITEM, 200, 5, {-100: 5}, env="staging"),
            request(-30, GET_ITEM, 200, 7, {-100: 7}, "acme"),  # the hour before
            request(90, GET_ITEM, 200, 100, {-100: 100}, instance="i-9"),  # after it
        ],
        "requests",
    )
    insert_rows(
        ch,
        "endpoints",
        [
            row(ENDPOINT_COLUMNS, app="shop", env="prod", method=method, route=route, first_seen=minute(-60),
                last_seen=minute(-60), latest=(minute(-60), "api", summary, ""))
            for (method, route), summary in ((GET_ITEM, "Get an item"), (("DELETE", "/items/{id}"), "Delete an item"))
        ],
        "endpoints",
    )  # fmt: skip
    insert_rows(
        ch,
        "consumers",
        [
            row(CONSUMER_COLUMNS, app="shop", env="prod", identifier="acme", first_seen=minute(1),
                last_seen=minute(1), latest=(minute(1), "Acme", "customers")),
            row(CONSUMER_COLUMNS, app="shop", env="prod", identifier="beta", first_seen=minute(-10 * 1440),
                last_seen=minute(2), latest=(minute(2), "Beta", "partners")),
        ],
        "consumers",
    )  # fmt: skip
    insert_rows(
        ch,
        "validation_errors",
        [
            row(VALIDATION_ERROR_COLUMNS, **error_key(2, "beta", POST_ITEMS), location="body.sku",
                message="Field required", type="missing", count=3),
        ],
        "validation",
    )  # fmt: skip
    insert_rows(
        ch,
        "server_errors",
        [
            row(SERVER_ERROR_COLUMNS, **error_key(5, "", POST_ITEMS), exception_type="KeyError", message="'sku'",
                fingerprint="abcd", stacktrace="Traceback ...\nKeyError: 'sku'", count=1),
        ],
        "server",
    )  # fmt: skip
    started = (minute(-60), minute(58))
    insert_rows(
        ch,
        "instances",
        [
            row(INSTANCE_COLUMNS, app="shop", env="prod", service="api", instance=f"i-{i + 1}", host="web-1",
                pid=100 + i, versions={"python": "3.12"}, started_at=at, received_at=at)
            for i, at in enumerate(started)
        ],
        "instances",
    )  # fmt: skip
    insert_rows(ch, "metrics", PROCESS_METRICS, "metrics")


@pytest.fixture(scope="module")
def shop(chdb_url: str) -> Iterator[ClientRunner]:
    """One database for the read-only tests of this module: the rows of ``insert_shop``, apps
    `shop` and `idle` (a key, no traffic), and GET /items/{id}'s 404 expected."""
    client = open_client(chdb_url, "dashboard_queries", create=True)
    reader = open_client(chdb_url, "dashboard_queries", readonly=True)
    migrate(client)
    runner = ClientRunner(client, reader)
    insert_shop(client)
    create_app(runner, "shop", "hash-1")
    create_app(runner, "idle", "hash-2")
    save_endpoint_settings(runner, "shop", *GET_ITEM, expected_statuses=[404])
    yield runner
    client.command("DROP DATABASE IF EXISTS dashboard_queries")
    reader.close()
    client.close()


def direct_quantile(runner: ClientRunner, q: float, where: str = "1") -> float:
    sql = (
        "SELECT tallyhub_quantile({q:Float64}, sumMap(duration_buckets), sum(requests)) FROM requests "
        f"WHERE app = 'shop' AND minute >= {{from:DateTime}} AND minute < {{to:DateTime}} AND {where}"
    )
    return float(runner.raw(sql, {"q": q, **HOUR_WINDOW.parameters()}, readonly=True))


# --- traffic -------------------------------------------------------------------------------------


def test_traffic_totals_previous_and_zero_filled_buckets(shop: ClientRunner) -> None:
    answer = traffic(shop, "shop", HOUR_WINDOW)
    assert answer["window"] == {"from": S0, "to": S0 + 3600, "step": 60, "level": "minute"}
    assert answer["totals"] == {
        "requests": 25,
        "requests_per_minute": 25 / 60,
        "client_errors": 3,  # the 422s; the 404s of GET /items/{id} are expected
        "server_errors": 1,
        "error_rate": 4 / 25,
        "client_error_rate": 3 / 25,
        "server_error_rate": 1 / 25,
        "bytes_in": 500,
        "bytes_out": 2500,
    }
    previous = answer["previous"]
    assert (previous["requests"], previous["client_errors"], previous["requests_per_minute"]) == (7, 0, 7 / 60)
    series = answer["series"]
    assert series["time"] == list(range(S0, S0 + 3600, 60))
    assert all(len(column) == 60 for column in series.values())
    assert series["requests"][:6] == [0, 12, 7, 0, 0, 6] and sum(series["requests"]) == 25
    assert series["client_errors"][2] == 3 and series["server_errors"][5] == 1
    assert series["bytes_in"][1] == 240


def test_an_empty_window_has_zeros_and_no_rates(shop: ClientRunner) -> None:
    empty = Window(T0 - dt.timedelta(days=1), T0 - dt.timedelta(hours=23), MINUTE, NOW)
    answer = traffic(shop, "shop", empty)
    assert answer["totals"]["requests"] == 0 and answer["totals"]["error_rate"] is None
    assert answer["series"]["requests"] == [0] * 60


@pytest.mark.parametrize(
    ("filters", "requests", "client_errors"),
    [
        (Filters(consumer="acme"), 12, 0),
        (Filters(consumer="beta"), 7, 3),
        (Filters(status="4xx"), 5, 3),
        (Filters(status="2xx"), 19, 0),
        (Filters(status="5xx"), 1, 0),
        (Filters(env="staging"), 5, 0),
        (Filters(env="prod"), 20, 3),
        (Filters(method="POST", route="/items"), 8, 3),
        (Filters(env="prod", consumer="beta", status="4xx"), 3, 3),
    ],
)
def test_traffic_filters(shop: ClientRunner, filters: Filters, requests: int, client_errors: int) -> None:
    totals = traffic(shop, "shop", HOUR_WINDOW, filters)["totals"]
    assert (totals["requests"], totals["client_errors"]) == (requests, client_errors)


def test_an_injection_in_a_filter_finds_nothing_and_breaks_nothing(shop: ClientRunner) -> None:
    hostile = "x' OR 1=1 --"
    for filters in (
        Filters(consumer=hostile),
        Filters(env="prod') OR ('1'='1"),
        Filters(method="GET", route="/items/{id}'; DROP TABLE requests; --"),
    ):
        assert traffic(shop, "shop", HOUR_WINDOW, filters)["totals"]["requests"] == 0
        assert consumers(shop, "shop", HOUR_WINDOW, filters)["consumers"] == []
    assert traffic(shop, hostile, HOUR_WINDOW)["totals"]["requests"] == 0
    assert traffic(shop, "shop", HOUR_WINDOW)["totals"]["requests"] == 25  # the tables are intact


def test_malformed_filters_are_refused() -> None:
    with pytest.raises(FilterError, match="unknown status class '6xx'"):
        Filters(status="6xx")
    with pytest.raises(FilterError, match="method and route go together"):
        Filters(method="GET")


# --- latency -------------------------------------------------------------------------------------


def test_latency_quantiles_are_tallyhub_quantile_at_the_known_buckets(shop: ClientRunner) -> None:
    answer = latency(shop, "shop", HOUR_WINDOW)
    totals = answer["totals"]
    # 25 durations: 3 in bucket -200, 2 in -150, 15 in -100, 4 in -50, 1 in 32
    assert totals["p50"] == pytest.approx(bucket_middle(-100)) == direct_quantile(shop, 0.5)
    assert totals["p95"] == pytest.approx(bucket_middle(-50)) == direct_quantile(shop, 0.95)
    assert totals["p99"] == pytest.approx(bucket_middle(32)) == direct_quantile(shop, 0.99)
    # T = 0.5 s: all satisfied but the one of about 2.02 s (> 4 T): frustrated
    assert (answer["apdex_t"], totals["apdex"]) == (0.5, pytest.approx(48 / 50))
    series = answer["series"]
    assert series["p50"][1] == pytest.approx(bucket_middle(-100))
    assert series["p99"][5] == pytest.approx(bucket_middle(32))
    assert series["p50"][0] is None and series["apdex"][0] is None and len(series["apdex"]) == 60


def test_latency_with_filters_and_an_endpoints_threshold(shop: ClientRunner) -> None:
    acme = latency(shop, "shop", HOUR_WINDOW, Filters(consumer="acme"))["totals"]
    assert acme["p99"] == pytest.approx(bucket_middle(-100)) == direct_quantile(shop, 0.99, "consumer = 'acme'")
    post = latency(shop, "shop", HOUR_WINDOW, Filters(method="POST", route="/items"))
    assert post["apdex_t"] == 0.5 and post["totals"]["apdex"] == pytest.approx(14 / 16)


# --- endpoints -----------------------------------------------------------------------------------


def test_endpoints_are_the_introspected_and_the_measured_ones(shop: ClientRunner) -> None:
    answer = endpoints(shop, "shop", HOUR_WINDOW)
    listed = {(e["method"], e["route"]): e for e in answer["endpoints"]}
    assert [(e["method"], e["route"]) for e in answer["endpoints"]] == [
        GET_ITEM,
        POST_ITEMS,
        ("DELETE", "/items/{id}"),
    ]
    get, post, delete = listed[GET_ITEM], listed[POST_ITEMS], listed[("DELETE", "/items/{id}")]
    assert (get["summary"], get["requests"], get["client_errors"], get["expected_statuses"]) == (
        "Get an item",
        17,
        0,
        [404],
    )
    assert get["p50"] == pytest.approx(bucket_middle(-100)) and get["apdex"] == pytest.approx(1.0)
    assert (post["summary"], post["requests"], post["client_errors"], post["server_errors"]) == ("", 8, 3, 1)
    assert post["error_rate"] == pytest.approx(4 / 8) and post["has_server_errors"] and not get["has_server_errors"]
    assert post["p99"] == pytest.approx(bucket_middle(32))
    assert delete["requests"] == 0 and delete["summary"] == "Delete an item"
    assert delete["p50"] is None and delete["apdex"] is None and delete["error_rate"] is None
    assert (delete["hidden"], delete["apdex_t"], delete["apdex_t_custom"]) == (False, 0.5, False)


def test_the_endpoint_overview_view_and_the_dashboard_count_client_errors_alike(shop: ClientRunner) -> None:
    view = shop.raw(
        "SELECT method, route, client_errors FROM endpoint_overview(app = 'shop', env = '', "
        "from = {from:DateTime}, to = {to:DateTime}, apdex_t = 0.5) ORDER BY route, method",
        HOUR_WINDOW.parameters(),
        readonly=True,
    )
    assert view.decode().splitlines() == ["POST\t/items\t3", "GET\t/items/{id}\t0"]


def test_the_endpoint_detail(shop: ClientRunner) -> None:
    answer = endpoint_detail(shop, "shop", HOUR_WINDOW, Filters(method="POST", route="/items"))
    assert answer["endpoint"]["requests"] == 8 and answer["endpoint"]["server_errors"] == 1
    # quarter-octave bars: bucket -200 → le 2^(-24/4), -50 → 2^(-6/4), 32 → 2^(5/4)
    assert answer["histogram"] == [
        {"le": pytest.approx(2 ** (-24 / 4)), "count": 3},
        {"le": pytest.approx(2 ** (-6 / 4)), "count": 4},
        {"le": pytest.approx(2 ** (5 / 4)), "count": 1},
    ]
    codes = answer["statuses"]["codes"]
    assert set(codes) == {"201", "422", "500"} and codes["422"][2] == 3 and sum(codes["500"]) == 1
    assert len(answer["statuses"]["time"]) == len(codes["201"]) == 60
    assert answer["consumers"] == [{"consumer": "beta", "name": "Beta", "requests": 7, "errors": 3}]
    assert answer["validation_errors"] == [
        {"location": "body.sku", "message": "Field required", "type": "missing", "count": 3}
    ]
    (server_error,) = answer["server_errors"]
    assert (server_error["exception_type"], server_error["count"]) == ("KeyError", 1)
    assert server_error["first_seen"] == server_error["last_seen"] == S0 + 300


def test_an_unknown_endpoint_has_no_detail(shop: ClientRunner) -> None:
    with pytest.raises(UnknownEndpoint):
        endpoint_detail(shop, "shop", HOUR_WINDOW, Filters(method="GET", route="/nope"))
    # introspected, no traffic: known
    detail = endpoint_detail(shop, "shop", HOUR_WINDOW, Filters(method="DELETE", route="/items/{id}"))
    assert detail["endpoint"]["requests"] == 0 and detail["histogram"] == [] and detail["statuses"]["codes"] == {}


# --- errors, consumers, instances, apps -----------------------------------------------------------


def test_errors(shop: ClientRunner) -> None:
    answer = errors(shop, "shop", HOUR_WINDOW)
    assert answer["validation_errors"] == [
        {
            "method": "POST",
            "route": "/items",
            "location": "body.sku",
            "message": "Field required",
            "type": "missing",
            "count": 3,
            "consumers": 1,
        }
    ]
    assert answer["server_errors"][0]["stacktrace"].endswith("KeyError: 'sku'")
    only_5xx = errors(shop, "shop", HOUR_WINDOW, Filters(status="5xx"))
    assert only_5xx["validation_errors"] == [] and len(only_5xx["server_errors"]) == 1
    assert errors(shop, "shop", HOUR_WINDOW, Filters(consumer="acme")) == {
        "window": HOUR_WINDOW.describe(),
        "server_errors": [],
        "validation_errors": [],
    }


def test_consumers_new_and_returning(shop: ClientRunner) -> None:
    answer = consumers(shop, "shop", HOUR_WINDOW)
    series = answer["series"]
    assert series["new"][:3] == [0, 1, 0] and series["returning"][:3] == [0, 0, 1]
    assert sum(series["new"]) == 1 and sum(series["returning"]) == 1 and len(series["new"]) == 60
    assert answer["consumers"] == [
        {
            "consumer": "acme",
            "name": "Acme",
            "group": "customers",
            "requests": 12,
            "errors": 2,  # status >= 400, as in consumer_activity
            "first_seen": S0 + 60,
            "last_seen": S0 + 60,
        },
        {
            "consumer": "beta",
            "name": "Beta",
            "group": "partners",
            "requests": 7,
            "errors": 3,
            "first_seen": S0 - 10 * 86400,
            "last_seen": S0 + 120,
        },
    ]
    assert answer["groups"] == [
        {"group": "customers", "consumers": 1, "requests": 12, "errors": 2},
        {"group": "partners", "consumers": 1, "requests": 7, "errors": 3},
    ]
    assert [c["consumer"] for c in consumers(shop, "shop", HOUR_WINDOW, Filters(status="4xx"))["consumers"]] == [
        "beta",
        "acme",
    ]


def test_instances_and_staleness(shop: ClientRunner) -> None:
    answer = instances(shop, "shop", HOUR_WINDOW)
    assert [(i["instance"], i["stale"]) for i in answer["instances"]] == [("i-2", False), ("i-1", True)]
    first = answer["instances"][1]
    assert (first["started_at"], first["last_seen"], first["uptime_s"]) == (S0 - 3600, S0 + 300, 3900)
    assert first["versions"] == {"python": "3.12"} and first["pid"] == 100
    assert instances(shop, "shop", HOUR_WINDOW, Filters(env="staging")) == {"instances": []}


def test_instances_cpu_and_memory_are_the_last_and_highest_of_the_window(shop: ClientRunner) -> None:
    late, early = instances(shop, "shop", HOUR_WINDOW)["instances"]
    resources = ("cpu", "cpu_max", "memory", "memory_max")
    assert [early[k] for k in resources] == [0.125, 0.75, 120_000_000, 170_000_000]
    assert [late[k] for k in resources] == [None] * 4  # i-2 sent none
    before = Window(T0, T0 + dt.timedelta(minutes=20), MINUTE, NOW)
    assert [instances(shop, "shop", before)["instances"][0][k] for k in resources] == [0.25, 0.25, 100e6, 100e6]


def test_instance_resources_are_the_highest_instance_mean_per_app_and_env(shop: ClientRunner) -> None:
    hour = instance_resources(shop, ["shop", "other"], T0, NOW)
    assert hour == [
        {"app": "other", "env": "prod", "cpu": 0.875, "memory": None},
        {"app": "shop", "env": "prod", "cpu": 0.625, "memory": 130_000_000},  # i-3's CPU, i-1's memory
        {"app": "shop", "env": "staging", "cpu": None, "memory": 50_000_000},
    ]
    naive = (T0 + dt.timedelta(minutes=15)).replace(tzinfo=None)
    assert instance_resources(shop, ["shop"], naive, T0 + dt.timedelta(minutes=25)) == [
        {"app": "shop", "env": "prod", "cpu": 0.75, "memory": 170_000_000}
    ]
    assert instance_resources(shop, ["idle"], T0, NOW) == instance_resources(shop, [], T0, NOW) == []


def test_apps_overview(shop: ClientRunner) -> None:
    answer = apps_overview(shop, HOUR_WINDOW)
    assert [a["app"] for a in answer["apps"]] == ["shop", "idle"]
    shop_row, idle = answer["apps"]
    assert (shop_row["envs"], shop_row["requests"], shop_row["error_rate"]) == (["prod", "staging"], 25, 4 / 25)
    assert shop_row["p95"] == pytest.approx(bucket_middle(-50))
    assert shop_row["spark"][:6] == [0, 12, 7, 0, 0, 6] and len(shop_row["spark"]) == 60
    assert (idle["requests"], idle["p95"], idle["error_rate"], idle["spark"]) == (0, None, None, [0] * 60)
    staging = apps_overview(shop, HOUR_WINDOW, Filters(env="staging", consumer="ignored"))["apps"][0]
    assert (staging["app"], staging["requests"], staging["envs"]) == ("shop", 5, ["staging"])
    assert known_app(shop, "idle") and known_app(shop, "shop") and not known_app(shop, "nope")


# --- other levels ----------------------------------------------------------------------------------


def test_the_hour_level(shop: ClientRunner) -> None:
    window = Window(T0 - dt.timedelta(hours=12), T0 + dt.timedelta(hours=12), HOUR, NOW)
    answer = traffic(shop, "shop", window)
    assert answer["window"]["level"] == "hour" and answer["window"]["step"] == 3600
    assert answer["totals"]["requests"] == 25 + 7 + 100
    assert answer["series"]["requests"][11:14] == [7, 25, 100] and len(answer["series"]["time"]) == 24
    p50 = latency(shop, "shop", window, Filters(consumer="beta"))["totals"]["p50"]
    assert p50 == pytest.approx(bucket_middle(-50))  # 3 in -200, 4 in -50


def test_the_day_level(shop: ClientRunner) -> None:
    day = T0.replace(hour=0)
    window = Window(day - dt.timedelta(days=39), day + dt.timedelta(days=1), DAY, NOW)
    answer = traffic(shop, "shop", window)
    assert answer["window"]["step"] == 86400 and len(answer["series"]["time"]) == 40
    assert answer["series"]["requests"][-1] == answer["totals"]["requests"] == 132
    assert answer["totals"]["client_errors"] == 3
    get = next(e for e in endpoints(shop, "shop", window)["endpoints"] if (e["method"], e["route"]) == GET_ITEM)
    assert get["requests"] == 124 and get["client_errors"] == 0


# --- settings --------------------------------------------------------------------------------------


def test_app_settings_default_and_a_later_write_wins(runner: ClientRunner) -> None:
    assert app_settings(runner, "shop") == {"app": "shop", "apdex_t": 0.5}
    save_app_settings(runner, "shop", 0.25)
    assert save_app_settings(runner, "shop", 0.125) == {"app": "shop", "apdex_t": 0.125}
    for bad in (0, -1, float("nan"), float("inf"), True, "0.5"):
        with pytest.raises(SettingsError, match="apdex_t"):
            save_app_settings(runner, "shop", bad)


def test_endpoint_settings_change_what_they_are_given(ch: Client, runner: ClientRunner) -> None:
    insert_shop(ch)
    with pytest.raises(UnknownEndpoint):
        save_endpoint_settings(runner, "shop", "GET", "/nope", hidden=True)
    assert endpoint_settings(runner, "shop", *POST_ITEMS) == {
        "app": "shop",
        "method": "POST",
        "route": "/items",
        "hidden": False,
        "apdex_t": None,
        "expected_statuses": [],
    }
    save_endpoint_settings(runner, "shop", *POST_ITEMS, hidden=True, apdex_t=0.25, expected_statuses=[422, 409, 422])
    stored = save_endpoint_settings(runner, "shop", *POST_ITEMS, hidden=False)  # the others are kept
    assert (stored["hidden"], stored["apdex_t"], stored["expected_statuses"]) == (False, 0.25, [409, 422])
    assert save_endpoint_settings(runner, "shop", *POST_ITEMS, apdex_t=KEEP)["apdex_t"] == 0.25
    assert save_endpoint_settings(runner, "shop", *POST_ITEMS, apdex_t=None)["apdex_t"] is None
    for bad in ([500], [True], ["404"]):
        with pytest.raises(SettingsError, match="expected_statuses"):
            save_endpoint_settings(runner, "shop", *POST_ITEMS, expected_statuses=bad)


def test_settings_reach_the_numbers(ch: Client, runner: ClientRunner) -> None:
    insert_shop(ch)
    post = Filters(method="POST", route="/items")
    assert traffic(runner, "shop", HOUR_WINDOW, post)["totals"]["client_errors"] == 3
    save_endpoint_settings(runner, "shop", *POST_ITEMS, hidden=True, apdex_t=0.25, expected_statuses=[422])
    assert traffic(runner, "shop", HOUR_WINDOW, post)["totals"]["client_errors"] == 0
    # T = 0.25 s: the 4 of about 0.34 s tolerate
    answer = latency(runner, "shop", HOUR_WINDOW, post)
    assert (answer["apdex_t"], answer["totals"]["apdex"]) == (0.25, pytest.approx(10 / 16))
    listed = endpoints(runner, "shop", HOUR_WINDOW)["endpoints"]
    assert POST_ITEMS not in [(e["method"], e["route"]) for e in listed]
    (hidden,) = [e for e in endpoints(runner, "shop", HOUR_WINDOW, include_hidden=True)["endpoints"] if e["hidden"]]
    assert (hidden["apdex_t"], hidden["apdex_t_custom"], hidden["apdex"]) == (0.25, True, pytest.approx(10 / 16))
    save_app_settings(runner, "shop", 1.0)
    assert latency(runner, "shop", HOUR_WINDOW)["apdex_t"] == 1.0


def test_expected_client_errors_of_before_still_expect_every_4xx(ch: Client, runner: ClientRunner) -> None:
    insert_shop(ch)
    ch.command("INSERT INTO expected_client_errors (app, method, route) VALUES ('shop', 'POST', '/items')")
    assert endpoint_settings(runner, "shop", *POST_ITEMS)["expected_statuses"] == [0]
    assert traffic(runner, "shop", HOUR_WINDOW)["totals"]["client_errors"] == 2  # the 404s, not expected here
    # an endpoint's settings replace what expected_client_errors says about it
    save_endpoint_settings(runner, "shop", *POST_ITEMS, expected_statuses=[])
    assert traffic(runner, "shop", HOUR_WINDOW)["totals"]["client_errors"] == 5
