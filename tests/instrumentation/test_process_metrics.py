"""The process's CPU and memory gauges, in every export of a real client, and what the hub makes of them."""

from __future__ import annotations

import os
import sys
import time

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import Gauge, Metric, MetricsData

from tallyhub.collector_processor.convert.generic import generic_rows
from tallyhub.instrumentation.process_metrics import cpu_utilization, cpus_available
from tallyhub.wire import CPU_UTILIZATION, DURATION, MEMORY_USAGE, UPTIME

from .conftest import capturing_client

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memory is read from /proc/self/statm")


def metrics_of(batch: MetricsData) -> dict[str, Metric]:
    ((scope,),) = [rm.scope_metrics for rm in batch.resource_metrics]
    return {m.name: m for m in scope.metrics}


def value(metric: Metric) -> float:
    assert isinstance(metric.data, Gauge)
    (point,) = metric.data.data_points
    assert point.attributes == {}  # the process's total: nothing that could split it
    return point.value


def statm_rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def burn(seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        sum(range(1000))


@linux_only
def test_every_export_carries_cpu_and_memory_and_a_busy_interval_shows() -> None:
    client = capturing_client()
    client.loop.ensure_started()
    try:
        assert client.loop.export_once()  # idle: the uptime heartbeat, and the process's gauges
        rss = statm_rss()
        burn(0.2)
        now = time.perf_counter()
        client.record_request("GET", "/items/{id}", 200, now - 0.01, now, 0, 10)
        assert client.loop.export_once()  # with a request: the request metrics, and the gauges
    finally:
        client.shutdown()
    idle, busy = (metrics_of(b) for b in client.metrics_out.batches[:2])
    assert set(idle) == {UPTIME, CPU_UTILIZATION, MEMORY_USAGE}
    assert {DURATION, CPU_UTILIZATION, MEMORY_USAGE} <= set(busy) and UPTIME not in busy

    assert (idle[CPU_UTILIZATION].unit, idle[MEMORY_USAGE].unit) == ("1", "By")
    assert 0 <= value(idle[CPU_UTILIZATION]) <= 1
    assert value(busy[CPU_UTILIZATION]) > 0.3 / cpus_available()  # ~0.2 s of CPU in ~0.2 s of wall time
    memory = value(idle[MEMORY_USAGE])
    assert isinstance(memory, int) and memory > 10_000_000 and 0.5 * rss <= memory <= 1.5 * rss

    (point,) = busy[CPU_UTILIZATION].data.data_points
    (idle_point,) = idle[CPU_UTILIZATION].data.data_points
    assert point.start_time_unix_nano < point.time_unix_nano  # the interval since the previous export
    assert abs(point.start_time_unix_nano - idle_point.time_unix_nano) < 50_000_000


@linux_only
def test_the_hub_stores_them_as_gauges_without_attributes() -> None:
    client = capturing_client()
    client.loop.ensure_started()
    try:
        assert client.loop.export_once()
    finally:
        client.shutdown()
    rows = generic_rows(encode_metrics(client.metrics_out.batches[0]), "shop")
    stored = {r.name: (r.kind, r.unit, r.attributes) for r in rows}
    assert stored[CPU_UTILIZATION] == ("gauge", "1", {}) and stored[MEMORY_USAGE] == ("gauge", "By", {})
    assert next(r.value for r in rows if r.name == MEMORY_USAGE) > 10_000_000


def test_utilization_is_cpu_time_over_wall_time_and_cpus() -> None:
    assert cpu_utilization((0, 0), (1_000_000_000, 2_000_000_000), 2) == 0.25
    assert cpu_utilization((0, 5), (10, 5), 1) is None  # no time passed
    assert cpus_available() >= 1
