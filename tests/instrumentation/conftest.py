from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)

from tallyhub.collector_processor.convert.requests import request_rows
from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.auth import KeyRing, generate_key, hash_key
from tallyhub.collector_processor.receive.receiver import Receiver, start_grpc_server
from tallyhub.instrumentation import TallyhubClient
from tallyhub.wire import DURATION
from tests.conftest import free_port


class CapturingExporter(MetricExporter):
    """An OpenTelemetry metric exporter that keeps what it is given, in memory."""

    def __init__(self) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self.batches: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


class CapturingLogExporter(LogRecordExporter):
    """An OpenTelemetry log exporter that keeps the records it is given (the start-up event)."""

    def __init__(self) -> None:
        self.records: list[ReadableLogRecord] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.records.extend(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def startup_document(self) -> dict[str, Any]:
        (record,) = self.records
        return json.loads(record.log_record.body)


def capturing_client(**config: Any) -> TallyhubClient:
    """A real client whose exporters keep what they are given, in memory (no hub): read them
    as ``client.metrics_out`` and ``client.logs_out``."""
    config.setdefault("export_interval", 3600)
    metrics_out, logs_out = CapturingExporter(), CapturingLogExporter()
    client = TallyhubClient(exporter=metrics_out, log_exporter=logs_out, **config)
    client.metrics_out, client.logs_out = metrics_out, logs_out  # type: ignore[attr-defined]
    return client


def request_counts(*batches: MetricsData | None) -> Counter:
    """{(method, route, status): requests} over collections; asserts they are delta histograms."""
    counts: Counter = Counter()
    for data in batches:
        if data is not None:
            _add_counts(counts, data)
    return counts


def _add_counts(counts: Counter, data: MetricsData) -> None:
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if not isinstance(metric.data, Gauge):  # a gauge (the process's) has no temporality
                    assert metric.data.aggregation_temporality is AggregationTemporality.DELTA
                if metric.name == DURATION:
                    for p in metric.data.data_points:
                        a = p.attributes
                        counts[a["http.request.method"], a["http.route"], a["http.response.status_code"]] += p.count
    return counts


def error_counts(name: str, *batches: MetricsData | None) -> Counter:
    """{attributes as a sorted tuple of items: count} of the error metric ``name``
    (``tallyhub.validation_errors`` or ``tallyhub.server_errors``) over collections."""
    counts: Counter = Counter()
    for data in batches:
        for rm in data.resource_metrics if data is not None else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        assert metric.data.is_monotonic
                        assert metric.data.aggregation_temporality is AggregationTemporality.DELTA
                        for p in metric.data.data_points:
                            counts[tuple(sorted(p.attributes.items()))] += p.value
    return counts


KEY = generate_key()


class Hub:
    """The hub's real receiver and durable queue on a fixed port, which can go away and come back."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.queue = DurableQueue(directory)
        self.receiver = Receiver(KeyRing(lambda: {hash_key(KEY): "shop"}), self.queue)
        self.server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self.server, _ = start_grpc_server(self.receiver, f"127.0.0.1:{self.port}")

    def down(self) -> None:
        if self.server is not None:
            self.server.stop(None)
            self.server = None

    def requests(self) -> int:
        """Requests in every queued export, as the hub's processor would store them."""
        records = self.queue.next_batch(10_000, 1 << 30, wait_s=0)
        return sum(
            row.requests
            for record in records
            for row in request_rows(ExportMetricsServiceRequest.FromString(record.payload), "shop")
        )


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """The hub's receiver and queue in this process, on a port of its own; down until ``hub.up()``."""
    hub = Hub(tmp_path / "queue")
    yield hub
    hub.down()
    hub.queue.close()


@pytest.fixture(scope="module")
def django_settings() -> None:
    from .django_project import configure

    configure()  # once per process: the test project's settings


@pytest.fixture
def tallyhub(django_settings: None) -> Iterator[TallyhubClient]:
    """The process's client for this test: exporting into memory."""
    from tallyhub.instrumentation.django import set_client

    client = capturing_client()
    set_client(client)
    yield client
    set_client(None)
