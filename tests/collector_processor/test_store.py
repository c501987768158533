"""Queue → ClickHouse (embedded chDB): exact counts, retries, idempotence, poison records."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.receiver import KIND_METRICS
from tallyhub.collector_processor.store import Processor
from tallyhub.instrumentation.aggregator import RequestAggregator
from tallyhub.storage.writer import insert_batch, insert_rows


def export_bytes(requests: dict[tuple[str, str, int], int]) -> bytes:
    """One real client export (the SDK's own OTLP encoding) holding the given request counts."""
    agg = RequestAggregator(Resource.create({"service.instance.id": "i-1"}), InstrumentationScope("tallyhub"))
    for (method, route, status), n in requests.items():
        for i in range(n):
            agg.record(method, route, status, 0.01 * (i + 1), 0, 100, wall_time_s=1_764_000_000 + i)
    return encode_metrics(agg.collect()).SerializeToString()


def stored(ch) -> dict[tuple[str, str, int], int]:
    rows = ch.query("SELECT method, route, status, sum(requests) FROM requests GROUP BY ALL").result_rows
    return {(m, r, s): n for m, r, s, n in rows}


class FlakyInsert:
    """The real insert, failing the first ``failures`` times (a ClickHouse outage)."""

    def __init__(self, ch, failures: int = 0) -> None:
        self.ch = ch
        self.failures = failures
        self.calls = 0

    def __call__(self, tables, token) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("ClickHouse is down")
        insert_batch(self.ch, tables, token)


def test_queued_exports_land_with_exact_counts(ch, tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q")
    queue.append(KIND_METRICS, "shop", export_bytes({("GET", "/a", 200): 3, ("GET", "/a", 500): 1}), 0)
    queue.append(KIND_METRICS, "shop", export_bytes({("POST", "/b", 201): 2}), 0)
    processor = Processor(queue, FlakyInsert(ch), tmp_path / "rejected")
    assert processor.process(queue.next_batch(100, 1 << 30, wait_s=0))
    assert stored(ch) == {("GET", "/a", 200): 3, ("GET", "/a", 500): 1, ("POST", "/b", 201): 2}
    assert queue.depth() == 0
    assert ch.query("SELECT DISTINCT app FROM requests").result_rows == [("shop",)]


def test_clickhouse_outage_is_waited_out_without_loss(ch, tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q")
    queue.append(KIND_METRICS, "shop", export_bytes({("GET", "/a", 200): 5}), 0)
    insert = FlakyInsert(ch, failures=2)
    processor = Processor(queue, insert, tmp_path / "rejected")
    processor.start()
    try:
        for _ in range(100):
            if queue.depth() == 0:
                break
            processor._stop.wait(0.1)
    finally:
        processor.stop()
    assert insert.calls == 3
    assert stored(ch) == {("GET", "/a", 200): 5}


def test_a_batch_stored_before_a_crash_is_not_counted_twice(ch, tmp_path: Path, monkeypatch) -> None:
    queue = DurableQueue(tmp_path / "q")
    queue.append(KIND_METRICS, "shop", export_bytes({("GET", "/a", 200): 4}), 0)
    queue.append(KIND_METRICS, "shop", export_bytes({("GET", "/b", 200): 1}), 0)

    def crash(batch) -> None:
        raise KeyboardInterrupt("the hub dies after the insert, before the acknowledgement")

    monkeypatch.setattr(queue, "ack", crash)
    with pytest.raises(KeyboardInterrupt):
        Processor(queue, FlakyInsert(ch), tmp_path / "rejected").process(queue.next_batch(100, 1 << 30, wait_s=0))
    queue.close()
    queue = DurableQueue(tmp_path / "q")  # restart: more has arrived meanwhile
    queue.append(KIND_METRICS, "shop", export_bytes({("GET", "/c", 200): 2}), 0)
    processor = Processor(queue, FlakyInsert(ch), tmp_path / "rejected")
    while queue.depth():
        processor.process(queue.next_batch(100, 1 << 30, wait_s=0))
    assert stored(ch) == {("GET", "/a", 200): 4, ("GET", "/b", 200): 1, ("GET", "/c", 200): 2}


def test_a_poison_record_is_set_aside_and_the_rest_flows(ch, tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path / "q")
    queue.append(KIND_METRICS, "shop", export_bytes({("GET", "/a", 200): 1}), 0)
    queue.append(KIND_METRICS, "shop", b"\xff\xfenot protobuf", 0)
    queue.append(KIND_METRICS, "shop", export_bytes({("GET", "/a", 200): 2}), 0)
    processor = Processor(queue, FlakyInsert(ch), tmp_path / "rejected")
    assert processor.process(queue.next_batch(100, 1 << 30, wait_s=0))
    assert stored(ch) == {("GET", "/a", 200): 3}
    (reason,) = (tmp_path / "rejected").glob("*.txt")
    assert "DecodeError" in reason.read_text()
    assert (tmp_path / "rejected" / reason.name.replace(".txt", ".bin")).read_bytes() == b"\xff\xfenot protobuf"


@pytest.mark.parametrize("months_ago", [13, 1])
def test_rows_older_than_the_ttl_are_not_kept(ch, tmp_path: Path, months_ago: int) -> None:
    import datetime as dt

    from tallyhub.collector_processor.convert.requests import RequestRow

    minute = (dt.datetime.now(dt.UTC) - dt.timedelta(days=31 * months_ago)).replace(second=0, microsecond=0)
    row = RequestRow(minute, "shop", "", "", "", "", "GET", "/old", 200, requests=1)
    insert_rows(ch, "requests", [row.values()], f"ttl-{months_ago}")
    ch.command("OPTIMIZE TABLE requests FINAL")
    assert stored(ch) == ({} if months_ago > 12 else {("GET", "/old", 200): 1})


@pytest.mark.parametrize("per_export", [False, True])
def test_an_export_retried_against_another_hub_is_stored_once_only_per_export(
    ch, tmp_path: Path, per_export: bool
) -> None:
    """Two hubs (separate queues, the same ClickHouse): the client's export reached hub A, whose
    acknowledgement was lost, and the client sent it again to hub B. Each hub's batch log knows
    only its own exports; with ``per_export`` ClickHouse drops B's copy by its batch id's token.
    Without it, batches are inserted as one block each and the copy is stored (the default: one hub)."""
    export = export_bytes({("GET", "/retried", 200): 3})
    other = export_bytes({("GET", "/other", 200): 1})
    hub_a = DurableQueue(tmp_path / "a")
    hub_a.append(KIND_METRICS, "shop", export, 0, "batch-7")
    hub_b = DurableQueue(tmp_path / "b")
    hub_b.append(KIND_METRICS, "shop", other, 0, "batch-8")  # B's batch holds more than the copy
    hub_b.append(KIND_METRICS, "shop", export, 0, "batch-7")
    hub_b.append(KIND_METRICS, "mall", export, 0, "batch-7")  # another app's batch with the same id
    for queue in (hub_a, hub_b):
        processor = Processor(queue, FlakyInsert(ch), tmp_path / "rejected", per_export=per_export)
        assert processor.process(queue.next_batch(100, 1 << 30, wait_s=0))
    by_app = ch.query("SELECT app, route, sum(requests) FROM requests GROUP BY ALL ORDER BY ALL").result_rows
    retried = 3 if per_export else 6
    assert by_app == [("mall", "/retried", 3), ("shop", "/other", 1), ("shop", "/retried", retried)]
    hourly = ch.query("SELECT sum(requests) FROM requests_hourly WHERE route = '/retried' AND app = 'shop'")
    assert hourly.result_rows == [(retried,)]  # the rollups drop the copy too
