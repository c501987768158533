"""Consumers: the request rows carry the identifier; the consumers table keeps name, group and
first/last seen, across exports and re-deliveries."""

from __future__ import annotations

import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.collector_processor.convert.requests import consumer_rows, request_rows
from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.receiver import KIND_METRICS
from tallyhub.collector_processor.store import Processor
from tallyhub.instrumentation.aggregator import RequestAggregator
from tallyhub.instrumentation.consumers import Consumer
from tests.collector_processor.test_store import FlakyInsert

T0 = int(time.time()) // 60 * 60 - 3600  # a whole minute an hour ago (well inside the tables' TTL)


def export(*calls: tuple[float, Consumer | None]) -> bytes:
    agg = RequestAggregator(
        Resource.create({"deployment.environment.name": "prod"}), InstrumentationScope("tallyhub"), lambda: T0 * 10**9
    )
    for at, consumer in calls:
        agg.record("GET", "/items", 200, 0.01, 0, 10, T0 + at, consumer)
    return encode_metrics(agg.collect()).SerializeToString()


def test_rows_carry_the_consumer_and_the_consumers_are_listed() -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    request = ExportMetricsServiceRequest.FromString(
        export((1, Consumer("acme", "Acme", "customers")), (61, Consumer("acme", "Acme Inc", "customers")), (2, None))
    )
    assert sorted((r.consumer, r.requests) for r in request_rows(request, "shop")) == [
        ("", 1),
        ("acme", 1),
        ("acme", 1),
    ]
    (row,) = consumer_rows(request, "shop")
    assert (row.app, row.env, row.identifier) == ("shop", "prod", "acme")
    assert (row.first_seen.timestamp(), row.last_seen.timestamp()) == (T0, T0 + 60)
    assert row.latest[1:] == ("Acme Inc", "customers")  # the name sent last


def test_the_consumers_table_merges_exports(ch, tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q")
    processor = Processor(queue, FlakyInsert(ch), tmp_path / "rejected")
    queue.append(KIND_METRICS, "shop", export((120, Consumer("acme", "Acme", "b2b")), (130, Consumer("zed"))), 0)
    queue.append(KIND_METRICS, "shop", export((5, Consumer("acme", "Acme", "b2b"))), 0)  # an earlier minute, later
    assert processor.process(queue.next_batch(100, 1 << 30, wait_s=0))
    rows = ch.query(
        "SELECT identifier, name, `group`, first_seen, last_seen FROM consumers FINAL ORDER BY identifier"
    ).result_rows
    assert [(i, n, g, int(f.timestamp()) - T0, int(last.timestamp()) - T0) for i, n, g, f, last in rows] == [
        ("acme", "Acme", "b2b", 0, 120),
        ("zed", "", "", 120, 120),
    ]
    assert ch.query("SELECT consumer, sum(requests) FROM requests GROUP BY consumer ORDER BY consumer").result_rows == [
        ("acme", 2),
        ("zed", 1),
    ]


def test_the_readme_query_for_top_consumers(ch, tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q")
    queue.append(KIND_METRICS, "shop", export(*[(i, Consumer("acme", "Acme", "b2b")) for i in range(3)]), 0)
    queue.append(KIND_METRICS, "shop", export((1, Consumer("zed")), (2, None)), 0)
    assert Processor(queue, FlakyInsert(ch), tmp_path / "rejected").process(queue.next_batch(100, 1 << 30, wait_s=0))
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    query = readme[readme.index("SELECT r.consumer, c.name") : readme.index("LIMIT 20") + len("LIMIT 20")]
    assert ch.query(query.replace("INTERVAL 1 DAY", "INTERVAL 2 DAY")).result_rows == [
        ("acme", "Acme", "b2b", 3),
        ("zed", "", "", 1),
    ]
