"""Queue → rows → ClickHouse, in batches, idempotently; a batch leaves the queue only once stored."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tallyhub.collector_processor.otlp_rows import request_rows
from tallyhub.collector_processor.queue import DurableQueue, Record

logger = logging.getLogger("tallyhub.processor")

InsertRequests = Callable[[Sequence[Sequence[Any]], str], None]


class Processor:
    """One thread: take the oldest queued exports, insert their rows in one block, acknowledge.

    While ClickHouse fails, the same batch is retried with backoff (the queue absorbs what
    arrives meanwhile). A record that cannot be converted is set aside in ``rejected_dir`` with
    the reason, and the rest of its batch flows.
    """

    def __init__(
        self,
        queue: DurableQueue,
        insert_requests: InsertRequests,
        rejected_dir: Path,
        max_records: int = 500,
        max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.queue = queue
        self.insert_requests = insert_requests
        self.rejected_dir = rejected_dir
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.inserted_rows = 0
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
        rows = [row.values() for record in batch for row in self._rows(record)]
        delay = 0.5
        while True:
            try:
                self.insert_requests(rows, token)
                break
            except Exception as exc:
                logger.error(
                    "inserting %d rows into ClickHouse failed (%s); the batch stays queued, retrying in %.1f s",
                    len(rows),
                    exc,
                    delay,
                )
                if self._stop.wait(delay):
                    return False
                delay = min(delay * 2, 30.0)
        self.queue.ack(batch)
        self.inserted_rows += len(rows)
        return True

    def _rows(self, record: Record) -> list:
        try:
            return request_rows(ExportMetricsServiceRequest.FromString(record.payload), record.app)
        except (DecodeError, ValueError, TypeError, OverflowError) as exc:
            self._set_aside(record, exc)
            return []

    def _set_aside(self, record: Record, exc: Exception) -> None:
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        stem = self.rejected_dir / f"{record.seq:020d}"
        stem.with_suffix(".bin").write_bytes(record.payload)
        stem.with_suffix(".txt").write_text(f"app: {record.app}\nreason: {type(exc).__name__}: {exc}\n")
        logger.error("set aside queued export %d of app %s: %s (kept in %s)", record.seq, record.app, exc, stem)
