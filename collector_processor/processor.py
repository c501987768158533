"""Queue → rows → ClickHouse, in batches, idempotently; a batch leaves the queue only once stored."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tallyhub.collector_processor.cumulative import DeltaState
from tallyhub.collector_processor.otlp_errors import error_rows
from tallyhub.collector_processor.otlp_events import event_rows, latest_documents
from tallyhub.collector_processor.otlp_generic import generic_rows
from tallyhub.collector_processor.otlp_rows import consumer_rows, request_rows
from tallyhub.collector_processor.queue import DurableQueue, Record
from tallyhub.collector_processor.receiver import KIND_LOGS, KIND_METRICS
from tallyhub.collector_processor.stats import Stats

logger = logging.getLogger("tallyhub.processor")

Tables = Mapping[str, Sequence[Sequence[Any]]]
Store = Callable[[Tables, str], None]
"""Inserts a batch's rows (table → rows in that table's column order) with the batch's
deduplication token: ``storage.writer.insert_batch`` on a client."""


class Processor:
    """One thread: take the oldest queued exports, insert their rows (one block per table), acknowledge.

    While ClickHouse fails, the same batch is retried with backoff (the queue absorbs what
    arrives meanwhile). A record that cannot be converted is set aside in ``rejected_dir`` with
    the reason, and the rest of its batch flows.
    """

    def __init__(
        self,
        queue: DurableQueue,
        store: Store,
        rejected_dir: Path,
        max_records: int = 500,
        max_bytes: int = 32 * 1024 * 1024,
        state_file: Path | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.queue = queue
        self.state_file = state_file
        self.deltas = _load_state(state_file)
        self.store = store
        self.rejected_dir = rejected_dir
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.inserted_rows = 0
        self.stats = stats or Stats()
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tallyhub-processor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batch in hand (unless ClickHouse is down), then stop."""
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self.queue.next_batch(self.max_records, self.max_bytes, wait_s=0.2)
            if batch:
                self.process(batch)

    def process(self, batch: list[Record]) -> bool:
        """Store one batch; True once it is stored and acknowledged, False if stopped first."""
        token = self.queue.begin(batch)
        tables = self._tables(batch)
        count = sum(len(rows) for rows in tables.values())
        delay = 0.5
        while True:
            try:
                self.store(tables, token)
                break
            except Exception as exc:
                self.stats.add("inserts failed (retried)")
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.error(
                    "inserting %d rows into ClickHouse failed (%s); the batch stays queued, retrying in %.1f s",
                    count,
                    exc,
                    delay,
                )
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, 30.0)
        if self.deltas.changed and self.state_file is not None:
            # Saved before the batch leaves the queue: a replay after a crash finds the state
            # that includes it, and DeltaState gives a replayed point the same delta again.
            _save_state(self.state_file, self.deltas)
        self.queue.ack(batch)
        self.inserted_rows += count
        self.last_error = ""
        self.stats.add("exports processed", len(batch))
        self.stats.add("rows inserted", count)
        return True

    def _tables(self, batch: list[Record]) -> dict[str, list[list[Any]]]:
        """The rows of a batch per table; records that cannot be converted are set aside."""
        found: dict[str, list] = {}
        for record in batch:
            convert = _CONVERTERS.get(record.kind)
            try:
                if convert is None:
                    raise ValueError(f"unknown record kind {record.kind} (queued by a newer hub?)")
                converted = convert(record, self.deltas)
            except Exception as exc:  # a poison record must not stop the queue: set aside with the reason
                if not isinstance(exc, DecodeError | ValueError | TypeError | OverflowError):
                    logger.exception(
                        "converting queued export %d failed unexpectedly (a bug: please report)", record.seq
                    )
                self._set_aside(record, exc)
                continue
            for table, rows in converted.items():
                found.setdefault(table, []).extend(rows)
        if "openapi" in found:
            found["openapi"] = latest_documents(found["openapi"])
        return {table: [row.values() for row in rows] for table, rows in found.items() if rows}

    def _set_aside(self, record: Record, exc: Exception) -> None:
        self.stats.add("exports set aside (unreadable)")
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        stem = self.rejected_dir / f"{record.seq:020d}"
        stem.with_suffix(".bin").write_bytes(record.payload)
        stem.with_suffix(".txt").write_text(
            f"app: {record.app}\nkind: {record.kind}\nreason: {type(exc).__name__}: {exc}\n"
        )
        logger.error("set aside queued export %d of app %s: %s (kept in %s)", record.seq, record.app, exc, stem)


def _metric_rows(record: Record, deltas: DeltaState) -> dict[str, list]:
    request = ExportMetricsServiceRequest.FromString(record.payload)
    return {
        "requests": request_rows(request, record.app, deltas),
        "consumers": consumer_rows(request, record.app),
        **error_rows(request, record.app),
        "metrics": generic_rows(request, record.app, deltas),
    }


def _event_rows(record: Record, deltas: DeltaState) -> dict[str, list]:
    events = event_rows(ExportLogsServiceRequest.FromString(record.payload), record.app, record.received_ns)
    for warning in events.warnings:
        logger.warning("queued export %d: %s", record.seq, warning)
    return {"endpoints": events.endpoints, "instances": events.instances, "openapi": events.openapi}


_CONVERTERS: dict[int, Callable[[Record, DeltaState], dict[str, list]]] = {
    KIND_METRICS: _metric_rows,
    KIND_LOGS: _event_rows,
}


def _load_state(path: Path | None) -> DeltaState:
    """The cumulative series' state saved by the last run; a fresh one if there is none (or it
    cannot be read: then the first point of each series already running is only a baseline)."""
    if path is not None and path.exists():
        try:
            return DeltaState.loads(path.read_bytes())
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("the cumulative-series state %s cannot be read (%s); starting afresh", path, exc)
    return DeltaState(started_ns=time.time_ns())


def _save_state(path: Path, deltas: DeltaState) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(deltas.dumps())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    deltas.changed = False


"""Queue record kind → its rows per table (raises DecodeError or ValueError on a poison record)."""
