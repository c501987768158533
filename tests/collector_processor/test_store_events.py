"""Start-up events through the processor into embedded ClickHouse: endpoints, instances, openapi,
the instance_uptime view, and the example queries of the README."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.collector_processor.convert.requests import RequestRow
from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.receiver import KIND_LOGS, KIND_METRICS
from tallyhub.collector_processor.store import Processor
from tallyhub.instrumentation.aggregator import RequestAggregator
from tallyhub.storage.dashboard_queries import instances
from tallyhub.storage.window import MINUTE, Window
from tallyhub.storage.writer import insert_batch, insert_rows
from tests.collector_processor.startup_events import (
    ENDPOINTS,
    OPENAPI,
    RESOURCE,
    T0,
    T0_NS,
    VERSIONS,
    body,
    export,
    log_record,
)

HOUR_NS = 3600 * 10**9
RECEIVED_NS = T0_NS + 3 * HOUR_NS  # the hub queued every event of these tests at T0 + 3 h
RECEIVED = T0 + dt.timedelta(hours=3)


def naive(t: dt.datetime) -> dt.datetime:
    """How clickhouse-connect returns a UTC DateTime64 column."""
    return t.replace(tzinfo=None)


def startup(**changes) -> bytes:
    time_ns = changes.pop("time_ns", T0_NS)
    resource = {**RESOURCE, **changes.pop("resource", {})}
    return export(log_record(body(**changes), time_ns=time_ns), resource=resource).SerializeToString()


def metrics(minute_ns: int, n: int) -> bytes:
    agg = RequestAggregator(Resource.create(RESOURCE), InstrumentationScope("tallyhub"), clock=lambda: minute_ns)
    for _ in range(n):
        agg.record("GET", "/items/{item_id}", 200, 0.01, 0, 10, wall_time_s=minute_ns / 1e9)
    return encode_metrics(agg.collect()).SerializeToString()


class Store:
    """The hub's store (``insert_batch``), remembering each call's rows and token."""

    def __init__(self, ch) -> None:
        self.ch = ch
        self.calls: list[tuple[dict, str]] = []

    def __call__(self, tables, token) -> None:
        self.calls.append((dict(tables), token))
        insert_batch(self.ch, tables, token)


def process(ch, queue: DurableQueue, tmp_path: Path, *records: tuple[int, str, bytes]) -> Store:
    for kind, app, payload in records:
        queue.append(kind, app, payload, RECEIVED_NS)
    store = Store(ch)
    assert Processor(queue, store, tmp_path / "rejected").process(queue.next_batch(100, 1 << 30, wait_s=0))
    assert queue.depth() == 0
    return store


def endpoints(ch) -> list[tuple]:
    return ch.query(
        "SELECT app, env, service, method, route, summary, description, first_seen, last_seen "
        "FROM endpoints FINAL ORDER BY route, method"
    ).result_rows


def counts(ch, final: str = "") -> dict[str, int]:
    return {
        t: ch.query(f"SELECT count() FROM {t} {final}").result_rows[0][0] for t in ("endpoints", "instances", "openapi")
    }


def test_a_startup_event_lands_in_its_tables_in_the_same_batch_as_requests(ch, tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q")
    store = process(
        ch,
        queue,
        tmp_path,
        (KIND_METRICS, "shop", metrics(T0_NS + 30 * 60 * 10**9, 3)),
        (KIND_LOGS, "shop", startup(resource={"tallyhub.app": "someone-else"})),
    )
    ((tables, token),) = store.calls  # one store call per batch, with the batch's token
    assert sorted(tables) == ["endpoints", "instances", "openapi", "requests"] and token.startswith(queue.queue_id)
    t0 = naive(T0)
    assert endpoints(ch) == [
        ("shop", "prod", "shop", "POST", "/items", "Create an item", "", t0, t0),
        ("shop", "prod", "shop", "GET", "/items/{item_id}", "Read an item", "One item, by id.", t0, t0),
    ]
    assert ch.query("SELECT * FROM instances").result_rows == [
        ("shop", "prod", "shop", "i-1", "web-1", 4242, VERSIONS, t0, naive(RECEIVED))
    ]
    assert ch.query("SELECT * FROM openapi").result_rows == [
        ("shop", "prod", "shop", "i-1", t0, naive(RECEIVED), OPENAPI)
    ]
    assert ch.query("SELECT sum(requests) FROM requests").result_rows == [(3,)]
    parts = ch.query(
        "SELECT table, count() FROM system.parts WHERE database = currentDatabase() AND active "
        "AND table != 'schema_migrations' GROUP BY table"
    ).result_rows
    # one insert per table (the rollups get theirs from their materialized views)
    assert dict(parts) == {
        "requests": 1,
        "requests_hourly": 1,
        "requests_daily": 1,
        "requests_hourly_by_endpoint": 1,
        "requests_daily_by_endpoint": 1,
        "endpoints": 1,
        "instances": 1,
        "openapi": 1,
    }


def test_redelivery_does_not_duplicate_anything(ch, tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q")
    event = (KIND_LOGS, "shop", startup())
    store = process(ch, queue, tmp_path, event)
    stored = counts(ch)
    ((tables, token),) = store.calls
    insert_batch(ch, tables, token)  # the hub died before the acknowledgement: the same batch again
    assert counts(ch) == stored == {"endpoints": 2, "instances": 1, "openapi": 1}

    process(ch, queue, tmp_path, event)  # the client sent it again (its acknowledgement was lost)
    assert counts(ch, "FINAL") == {"endpoints": len(ENDPOINTS), "instances": 1, "openapi": 1}
    assert len(endpoints(ch)) == len(ENDPOINTS)


def test_the_latest_startup_wins_whatever_the_arrival_order(ch, tmp_path: Path) -> None:
    old = [{"method": "GET", "route": "/a", "summary": "old"}, {"method": "GET", "route": "/b"}]
    new = [{"method": "GET", "route": "/a", "summary": "new"}, {"method": "GET", "route": "/c"}]
    later = T0_NS + HOUR_NS
    queue = DurableQueue(tmp_path / "q")
    process(ch, queue, tmp_path, (KIND_LOGS, "shop", startup(endpoints=new, openapi="v2", time_ns=later)))
    process(ch, queue, tmp_path, (KIND_LOGS, "shop", startup(endpoints=old, openapi="v1")))  # late, from a retry
    t0, t1 = naive(T0), naive(T0 + dt.timedelta(hours=1))
    expected = [("/a", "new", t0, t1), ("/b", "", t0, t0), ("/c", "", t1, t1)]
    assert [(r[4], r[5], r[7], r[8]) for r in endpoints(ch)] == expected
    assert ch.query("SELECT document FROM openapi FINAL").result_rows == [("v2",)]
    for table in ("endpoints", "openapi"):
        ch.command(f"OPTIMIZE TABLE {table} FINAL")
    assert [(r[4], r[5], r[7], r[8]) for r in endpoints(ch)] == expected
    assert ch.query("SELECT route, summary FROM endpoints ORDER BY route").result_rows == [
        ("/a", "new"),
        ("/b", ""),
        ("/c", ""),
    ]


def test_a_malformed_event_is_set_aside_and_the_rest_flows(ch, tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q")
    bad = startup(endpoints={"GET": "/a"})
    process(
        ch,
        queue,
        tmp_path,
        (KIND_LOGS, "shop", bad),
        (KIND_LOGS, "shop", startup()),
        (9, "shop", b"a record kind from the future"),
        (KIND_METRICS, "shop", metrics(T0_NS, 2)),
    )
    assert counts(ch, "FINAL") == {"endpoints": 2, "instances": 1, "openapi": 1}
    assert ch.query("SELECT sum(requests) FROM requests").result_rows == [(2,)]
    first, unknown = sorted((tmp_path / "rejected").glob("*.txt"))
    assert "endpoints must be a list" in first.read_text() and "kind: 2" in first.read_text()
    assert first.with_suffix(".bin").read_bytes() == bad
    assert "unknown record kind 9" in unknown.read_text()


NO_TRAFFIC = """
SELECT e.app, e.env, e.method, e.route, e.summary, e.last_seen
FROM endpoints AS e FINAL
LEFT ANTI JOIN
(
    SELECT DISTINCT app, env, method, route FROM requests WHERE minute >= now() - INTERVAL 30 DAY
) AS r USING (app, env, method, route)
ORDER BY e.app, e.env, e.route, e.method
"""

VERSIONS_SINCE = """
SELECT app, env, versions['app'] AS version, min(started_at) AS since, max(last_seen) AS last_seen,
       count() AS processes, groupUniqArray(host) AS hosts
FROM instance_uptime
GROUP BY app, env, version
ORDER BY app, env, since
"""


def test_instance_uptime_and_the_readme_queries(ch, tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q")
    process(
        ch,
        queue,
        tmp_path,
        (KIND_LOGS, "shop", startup()),  # i-1 at T0, 1.4.2
        (
            KIND_LOGS,
            "shop",
            startup(
                time_ns=T0_NS + HOUR_NS,
                resource={"service.instance.id": "i-2"},
                host="web-2",
                versions={**VERSIONS, "app": "1.5.0"},
            ),
        ),
    )
    for minutes in (0, 59, 120):  # i-1 served requests until T0 + 2 h
        row = RequestRow(
            T0 + dt.timedelta(minutes=minutes),
            "shop",
            "prod",
            "shop",
            "i-1",
            "",
            "GET",
            "/items/{item_id}",
            200,
            requests=1,
        )
        insert_rows(ch, "requests", [row.values()], f"minute-{minutes}")
    rows = ch.query(
        "SELECT instance, versions['app'], started_at, last_seen, uptime_s, uptime "
        "FROM instance_uptime ORDER BY instance"
    ).result_rows
    t0, t1, t2 = (naive(T0 + dt.timedelta(hours=h)) for h in (0, 1, 2))
    assert rows == [
        ("i-1", "1.4.2", t0, t2, 7200, "2 hours"),
        ("i-2", "1.5.0", t1, t1, 0, "0 seconds"),  # no requests: last seen when it started
    ]
    assert ch.query(NO_TRAFFIC).result_rows == [("shop", "prod", "POST", "/items", "Create an item", t1)]
    assert ch.query(VERSIONS_SINCE).result_rows == [
        ("shop", "prod", "1.4.2", t0, t2, 1, ["web-1"]),
        ("shop", "prod", "1.5.0", t1, t1, 1, ["web-2"]),
    ]


def heartbeat(time_ns: int, instance: str) -> bytes:
    """What the client exports in an interval without requests: ``process.uptime`` alone."""
    resource = Resource.create({**RESOURCE, "service.instance.id": instance})
    agg = RequestAggregator(resource, InstrumentationScope("tallyhub"), clock=lambda: time_ns)
    return encode_metrics(agg.heartbeat()).SerializeToString()


def test_an_idle_instance_is_up_until_its_last_heartbeat(ch, runner, tmp_path: Path) -> None:
    """An instance that served no request for hours is seen by the uptime gauges it exports."""
    queue = DurableQueue(tmp_path / "q")
    idle_until_ns = T0_NS + 3 * HOUR_NS
    process(
        ch,
        queue,
        tmp_path,
        (KIND_LOGS, "shop", startup(resource={"service.instance.id": "i-idle"})),
        (KIND_METRICS, "shop", heartbeat(T0_NS + HOUR_NS, "i-idle")),
        (KIND_METRICS, "shop", heartbeat(idle_until_ns, "i-idle")),
    )
    assert ch.query("SELECT instance, uptime_s, uptime FROM instance_uptime").result_rows == [
        ("i-idle", 3 * 3600, "3 hours")
    ]
    assert ch.query("SELECT count() FROM requests").result_rows == [(0,)]  # a heartbeat is no request
    now = T0 + dt.timedelta(hours=3, minutes=1)
    window = Window(T0, now, MINUTE, now)
    (seen,) = instances(runner, "shop", window)["instances"]
    assert (seen["instance"], seen["uptime_s"], seen["last_seen"], seen["stale"]) == (
        "i-idle",
        3 * 3600,
        idle_until_ns // 10**9,
        False,
    )
