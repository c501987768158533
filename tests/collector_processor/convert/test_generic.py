"""Metrics other than HTTP server metrics: stored in `metrics`, cumulative ones as deltas."""

from __future__ import annotations

import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.metrics import Observation
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.receiver import KIND_METRICS
from tallyhub.collector_processor.store import Processor
from tests.collector_processor.test_store import FlakyInsert


def test_gauges_sums_histograms_stored_with_cumulative_made_delta(ch, tmp_path: Path) -> None:
    reader = InMemoryMetricReader()  # cumulative, as the SDK does by default
    provider = MeterProvider(
        [reader],
        resource=Resource.create({"service.name": "jobs", "deployment.environment.name": "prod"}),
        views=[View(instrument_name="queue.wait", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter("jobs")
    jobs = meter.create_counter("jobs.done", "{job}")
    latency = meter.create_histogram("job.duration", "s")
    wait = meter.create_histogram("queue.wait", "s")
    depth = [5]
    meter.create_observable_gauge("queue.depth", [lambda options: [Observation(depth[0], {"queue": "mail"})]])

    queue = DurableQueue(tmp_path / "q")
    processor = Processor(queue, FlakyInsert(ch), tmp_path / "rejected", state_file=tmp_path / "cumulative.json")

    def export_now() -> None:
        request = encode_metrics(reader.get_metrics_data())
        queue.append(KIND_METRICS, "shop", request.SerializeToString(), 0)
        assert processor.process(queue.next_batch(10, 1 << 30, wait_s=0))

    jobs.add(3, {"kind": "mail"})
    latency.record(0.2)
    wait.record(0.5)
    export_now()
    jobs.add(4, {"kind": "mail"})
    latency.record(0.4)
    latency.record(0.6)
    depth[0] = 2
    export_now()
    summary = pb.Metric(
        name="legacy.latency",
        summary=pb.Summary(
            data_points=[
                pb.SummaryDataPoint(
                    time_unix_nano=time.time_ns(), count=4, sum=2.0, quantile_values=[{"quantile": 0.5, "value": 0.4}]
                )
            ]
        ),
    )
    queue.append(KIND_METRICS, "shop", pb_export(summary), 0)
    assert processor.process(queue.next_batch(10, 1 << 30, wait_s=0))

    rows = ch.query(
        "SELECT name, kind, value, count, round(sum, 6), bucket_counts, attributes, env, service FROM metrics "
        "ORDER BY name, time"
    ).result_rows
    by_name: dict[str, list] = {}
    for name, *rest in rows:
        by_name.setdefault(name, []).append(rest)
    assert [(v, a) for _, v, *_, a, _, _ in by_name["jobs.done"]] == [(3.0, {"kind": "mail"}), (4.0, {"kind": "mail"})]
    assert [v for _, v, *_ in by_name["queue.depth"]] == [5.0, 2.0]  # gauges as they were
    assert [(c, s) for _, _, c, s, *_ in by_name["job.duration"]] == [(1, 0.2), (2, 1.0)]  # deltas
    assert sum(sum(b) for _, _, _, _, b, *_ in by_name["job.duration"]) == 3
    assert [(k, c) for k, _, c, *_ in by_name["queue.wait"]] == [("exponential_histogram", 1)]  # unchanged: no row
    assert by_name["legacy.latency"][0][:4] == ["summary", 0.4, 4, 2.0]
    assert {row[-2:] for rows_ in by_name.values() for row in map(tuple, rows_)} == {("prod", "jobs"), ("", "")}
    assert ch.query("SELECT count() FROM requests").result_rows == [(0,)]

    # a new hub process resumes the cumulative series where the last one left them
    jobs.add(1, {"kind": "mail"})
    restarted = Processor(queue, FlakyInsert(ch), tmp_path / "rejected", state_file=tmp_path / "cumulative.json")
    queue.append(KIND_METRICS, "shop", encode_metrics(reader.get_metrics_data()).SerializeToString(), 0)
    assert restarted.process(queue.next_batch(10, 1 << 30, wait_s=0))
    assert ch.query("SELECT sum(value) FROM metrics WHERE name = 'jobs.done'").result_rows == [(8.0,)]


def pb_export(*metrics: pb.Metric) -> bytes:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    return ExportMetricsServiceRequest(
        resource_metrics=[{"scope_metrics": [{"metrics": list(metrics)}]}]
    ).SerializeToString()
