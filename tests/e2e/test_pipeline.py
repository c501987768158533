"""From a uvicorn-served FastAPI app through the hub into ClickHouse, with real processes."""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter

import grpc
import httpx
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.instrumentation.aggregator import RequestAggregator

from .conftest import wait_for

UNMATCHED = "(unmatched)"


def send_mix(url: str) -> Counter:
    """A known mix of requests; returns what each (route, method, status) should count."""
    expected: Counter = Counter()
    # one connection per request: uvicorn closes a connection after an unhandled exception
    with httpx.Client(base_url=url, headers={"Connection": "close"}) as client:
        for i in range(1, 6):
            assert client.get(f"/items/{i}", headers={"x-consumer": f"acme-{i % 2}"}).status_code == 200
        expected["/items/{item_id}", "GET", 200] += 5 + 1  # + the start-up probe of /items/0
        for _ in range(2):
            assert client.get("/items/not-a-number").status_code == 422
        expected["/items/{item_id}", "GET", 422] += 2
        for i in range(3):
            assert client.post("/items", json={"name": f"n{i}"}).status_code == 201
        expected["/items", "POST", 201] += 3
        for _ in range(2):
            assert client.get("/boom").status_code == 500
        expected["/boom", "GET", 500] += 2
        for i in range(4):
            assert client.get(f"/scan/{i}/admin.php").status_code == 404
        expected[UNMATCHED, "GET", 404] += 4
        assert client.delete("/items/1").status_code == 405
        expected["/items/{item_id}", "DELETE", 405] += 1
    return expected


def stored_counts(hub) -> Counter:
    rows = hub.sql("SELECT route, method, status, sum(requests) FROM requests GROUP BY ALL")
    return Counter({(r, m, int(s)): int(n) for r, m, s, n in rows})


def test_requests_arrive_with_exact_counts(hub, start_app) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    began = time.monotonic()
    app = start_app(
        hub.endpoint, key, OTEL_SERVICE_NAME="shop", OTEL_RESOURCE_ATTRIBUTES="tallyhub.app=someone-else,team=a"
    )
    expected = send_mix(app.url)
    wall_s = time.monotonic() - began
    total = sum(expected.values())
    wait_for(lambda: sum(stored_counts(hub).values()) >= total, 30, f"{total} requests in ClickHouse")
    assert stored_counts(hub) == expected

    # the app is the one of the key; durations are plausible
    ((app_name, service, n_instances),) = hub.sql("SELECT app, service, uniqExact(instance) FROM requests GROUP BY ALL")
    assert (app_name, service, n_instances) == ("my-api", "shop", "1")
    ((lowest, highest, mean),) = hub.sql(
        "SELECT min(duration_min), max(duration_max), sum(duration_sum) / sum(requests) FROM requests"
    )
    assert 0 < float(lowest) <= float(mean) <= float(highest) <= wall_s
    ((buckets, requests),) = hub.sql("SELECT sum(arraySum(mapValues(duration_buckets))), sum(requests) FROM requests")
    assert buckets == requests
    ((request_bytes,),) = hub.sql("SELECT sum(request_size_sum) FROM requests WHERE method = 'POST'")
    assert int(request_bytes) == sum(len(f'{{"name":"n{i}"}}') for i in range(3))

    # consumers: on the request rows, and in the consumers table with name and group
    consumers = hub.sql("SELECT consumer, sum(requests) FROM requests GROUP BY consumer ORDER BY consumer")
    assert consumers == [["", str(total - 5)], ["acme-0", "2"], ["acme-1", "3"]]
    assert hub.sql("SELECT identifier, name, `group` FROM consumers FINAL ORDER BY identifier") == [
        ["acme-0", "Acme", "customers"],
        ["acme-1", "Acme", "customers"],
    ]

    # the app's start-up event: its endpoints (with traffic or not) and the instance's versions
    endpoints = wait_for(lambda: hub.sql("SELECT method, route FROM endpoints FINAL ORDER BY ALL"), 30, "endpoints")
    assert endpoints == [["GET", "/boom"], ["GET", "/items/{item_id}"], ["POST", "/items"], ["POST", "/orders"]]
    ((framework, server, instance_matches),) = hub.sql(
        "SELECT versions['framework'], versions['server'], instance IN (SELECT instance FROM requests) FROM instances"
    )
    assert framework.startswith("fastapi ") and server.startswith("uvicorn ") and instance_matches == "1"

    # the hub's own counters
    status = json.loads(hub.cli("status", "--json").stdout)
    counters = status["counters"]
    assert counters["exports_acknowledged"] == counters["exports_received"] >= 2  # metrics and the start-up event
    assert counters["rows_inserted"] >= len(expected) and status["processor_error"] == ""
    assert status["queue"]["cap_bytes"] > 0 and status["set_aside"]["exports"] == 0
    assert (status["alerts"]["rules"], status["alerts"]["firing"], status["alerts"]["last_error"]) == (0, [], "")
    assert all(re.fullmatch(r"[a-z0-9_]+", key) for key in keys(status)), sorted(keys(status))

    # the hub stops cleanly, and the data is read directly while it is down
    assert app.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert hub.stop() == 0
    assert "hub stopped" in hub.log.read_text()
    assert stored_counts(hub) == expected


def test_validation_and_server_errors_arrive_with_their_fields(hub, start_app) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    app = start_app(hub.endpoint, key)
    with httpx.Client(base_url=app.url, headers={"Connection": "close", "x-consumer": "acme-7"}) as client:
        for _ in range(3):
            assert client.post("/orders", json={"sku": 1, "quantity": "many"}).status_code == 422
        assert client.post("/orders", json={"quantity": 2}).status_code == 422
        for _ in range(2):
            assert client.post("/orders", json={"sku": "crash", "quantity": 1}).status_code == 500
        assert client.post("/orders", json={"sku": "pen", "quantity": 1}).status_code == 201
    wait_for(lambda: hub.sql("SELECT sum(count) FROM server_errors") == [["2"]], 30, "server errors in ClickHouse")
    wait_for(lambda: hub.sql("SELECT sum(count) FROM validation_errors") == [["7"]], 30, "validation errors")

    assert hub.sql(
        "SELECT consumer, method, route, location, message, type, sum(count) FROM validation_errors "
        "GROUP BY ALL ORDER BY location"
    ) == [
        ["acme-7", "POST", "/orders", "body.quantity", "Input should be a valid integer, unable to parse string as an "
         "integer", "int_parsing", "3"],
        ["acme-7", "POST", "/orders", "body.sku", "Field required", "missing", "1"],
        ["acme-7", "POST", "/orders", "body.sku", "Input should be a valid string", "string_type", "3"],
    ]  # fmt: skip
    assert hub.sql("SELECT count() FROM validation_errors WHERE position(message, 'many') > 0") == [["0"]]

    (error,) = hub.sql_rows(
        "SELECT consumer, route, exception_type, message, fingerprint, any(stacktrace) AS stacktrace, "
        "toUInt32(sum(count)) AS count FROM server_errors GROUP BY ALL"
    )
    stacktrace = error.pop("stacktrace")
    assert len(error.pop("fingerprint")) == 16
    assert error == {
        "consumer": "acme-7",
        "route": "/orders",
        "exception_type": "KeyError",
        "message": "'crash'",
        "count": 2,
    }
    assert stacktrace.startswith("Traceback (most recent call last):")
    assert "in create_order" in stacktrace and stacktrace.rstrip().endswith("KeyError: 'crash'")
    assert hub.sql("SELECT identifier, name, `group` FROM consumers FINAL") == [["acme-7", "Acme", "customers"]]
    assert hub.sql("SELECT status, sum(requests) FROM requests GROUP BY status ORDER BY status") == [
        ["200", "1"],  # the start-up probe of /items/0
        ["201", "1"],
        ["422", "4"],
        ["500", "2"],
    ]


def keys(value: object) -> set[str]:
    """Every key of a JSON document, at any depth."""
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in keys(item)}
    return set()


def test_a_wrong_key_is_refused_and_stores_nothing(hub, start_app) -> None:
    hub.cli("apps", "create", "my-api")
    app = start_app(hub.endpoint, "thk_not-a-key")
    send_mix(app.url)
    wait_for(lambda: "UNAUTHENTICATED" in app.log.read_text(), 30, "the refused export in the app's log")
    assert hub.sql("SELECT count() FROM requests") == [["0"]]
    assert "unknown app key" in hub.log.read_text()
    counters = json.loads(hub.cli("status", "--json").stdout)["counters"]
    assert counters["exports_refused_unauthenticated"] >= 1 and "exports_acknowledged" not in counters
    hub.stop()
    stopped = hub.cli("status", check=False)
    assert stopped.returncode == 1 and "no hub is running" in stopped.stderr


def test_a_second_hub_on_the_same_data_dir_says_which_process_holds_it(hub) -> None:
    second = hub.cli("serve", "--grpc-address", "127.0.0.1:0", "--http-address", "off", check=False)
    assert second.returncode == 1
    holder = f"(pid {hub.process.pid}, queries on http://127.0.0.1:"
    assert f"a hub is already running on {hub.data_dir} {holder}" in second.stderr
    assert "Traceback" not in second.stderr
    assert hub.cli("status").returncode == 0  # the first one runs on


def test_a_graceful_shutdown_exports_what_was_aggregated(hub, start_app) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    app = start_app(hub.endpoint, key, OTEL_METRIC_EXPORT_INTERVAL="600000")  # never on its own during the test
    expected = send_mix(app.url)
    assert app.stop() in (0, -signal.SIGTERM)
    wait_for(lambda: sum(stored_counts(hub).values()) >= sum(expected.values()), 30, "the final export")
    assert stored_counts(hub) == expected


def test_kill_9_of_the_hub_loses_nothing_acknowledged(hub) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    channel = grpc.insecure_channel(f"127.0.0.1:{hub.grpc_port}")
    stub = MetricsServiceStub(channel)
    expected: Counter = Counter()
    for i in range(60):  # acknowledged exports, as fast as the hub takes them
        agg = RequestAggregator(Resource.create({}), InstrumentationScope("test"))
        route = f"/r{i % 7}"
        for _ in range(i % 5 + 1):
            agg.record("GET", route, 200, 0.01, 0, 0, wall_time_s=time.time())
        expected[route, "GET", 200] += i % 5 + 1
        stub.Export(encode_metrics(agg.collect()), metadata=[("x-tallyhub-app-key", key)], timeout=10)
    assert hub.stop(signal.SIGKILL) == -signal.SIGKILL  # at once: some exports are still queued
    channel.close()
    assert (hub.data_dir / "hub.json").exists()  # stale: `tallyhub sql` must see through it
    assert sum(stored_counts(hub).values()) <= sum(expected.values())
    hub.start()  # the queue is replayed
    total = sum(expected.values())
    wait_for(lambda: sum(stored_counts(hub).values()) >= total, 60, f"{total} requests after the restart")
    time.sleep(1)  # nothing more, nothing twice
    assert stored_counts(hub) == expected
