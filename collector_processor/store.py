"""Queue → rows → ClickHouse, in batches, idempotently; a batch leaves the queue only once stored."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tallyhub.collector_processor.convert.cumulative import DeltaState
from tallyhub.collector_processor.convert.delta_store import load_state, save_state
from tallyhub.collector_processor.convert.events import event_rows, latest_documents
from tallyhub.collector_processor.convert.metrics import metric_tables
from tallyhub.collector_processor.convert.request_log import request_log_rows
from tallyhub.collector_processor.queue import DurableQueue, Record
from tallyhub.collector_processor.receive.receiver import KIND_LOGS, KIND_METRICS
from tallyhub.collector_processor.stats import Stats
from tallyhub.storage.insert_errors import is_permanent
from tallyhub.storage.rowbinary import Encoded

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
        per_export: bool = False,
    ) -> None:
        self.queue = queue
        self.per_export = per_export
        """One insert per export, deduplicated by its client's batch id (``--exactly-once-across-hubs``)."""
        self.state_file = state_file
        self.deltas = load_state(state_file)
        self.store = store
        self.rejected_dir = rejected_dir
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.inserted_rows = 0
        self.stats = stats or Stats()
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tallyhub-processor", daemon=True)
        self._inserter = ThreadPoolExecutor(1, thread_name_prefix="tallyhub-insert")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batch in hand (unless ClickHouse is down), then stop."""
        self._stop.set()
        self._thread.join(timeout_s)
        self._inserter.shutdown(wait=False)

    def _run(self) -> None:
        """Until stopped: batches from the queue into ClickHouse. A failure of the data directory
        (disk full, read-only, failing) or a bug is logged, shown in `tallyhub status` and retried
        with backoff: the thread never dies, and the batch in hand stays queued until stored."""
        delay = _FIRST_RETRY_S
        ahead: _Ahead | None = None
        while not self._stop.is_set():
            try:
                if ahead is None:
                    batch = self.queue.next_batch(self.max_records, self.max_bytes, wait_s=0.2)
                    ahead = (batch, None) if batch else None
                if ahead is not None:
                    ahead = self._process_ahead(*ahead)
                delay = _FIRST_RETRY_S
            except OSError as exc:
                ahead = None
                self.stats.add("processor disk errors (retried)")
                self.last_error = f"data directory: {type(exc).__name__}: {exc}"
                logger.error(
                    "the processor cannot read or write the data directory (%s): is the disk full, read-only "
                    "or failing? The batch stays queued; retrying in %.1f s",
                    exc,
                    delay,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, _LAST_RETRY_S)
            except Exception as exc:
                ahead = None
                self.stats.add("processor errors (retried)")
                self.last_error = f"internal: {type(exc).__name__}: {exc}"
                logger.exception("the processor failed (a bug: please report); the batch stays queued, retrying")
                self._stop.wait(delay)
                delay = min(delay * 2, _LAST_RETRY_S)

    def _process_ahead(self, batch: list[Record], converted: list[_Converted] | None) -> _Ahead | None:
        """``process``, pipelined: while ClickHouse inserts this batch (the insert runs without the
        GIL, in a thread of its own), the records queued after it are read and converted, on the
        other core. Returns them, converted, to be stored next (begun only once this batch is
        acknowledged, so a crash replays batches as they were); None if there are none yet, or if
        stopped first."""
        token = self.queue.begin(batch)
        if converted is None:
            converted = self._convert(batch)
        started = time.monotonic()
        inserting = self._inserter.submit(self._store, converted, token)
        # Each insert costs ClickHouse ~30-40 ms whatever its size (the rollups' views, the parts):
        # at most one every MIN_INSERT_INTERVAL_S, so that under a steady trickle exports gather
        # into larger inserts instead of one insert each (benchmarks/README.md, "Hub ingest").
        self._stop.wait(max(0.0, started + MIN_INSERT_INTERVAL_S - time.monotonic()))
        following = self.queue.following(batch[-1].seq, self.max_records, self.max_bytes)
        ahead = (following, self._convert(following)) if following else None
        if not self._finish(batch, inserting.result()):
            return None
        return ahead

    def process(self, batch: list[Record]) -> bool:
        """Store one batch; True once it is stored and acknowledged, False if stopped first.

        A batch whose rows ClickHouse refuses for good (``insert_errors.is_permanent``) is split
        in halves, table by table, until the records whose rows are refused are alone: those are
        set aside, everything else is stored. Each part has its own deduplication token, derived
        from the batch's, so that a replay after a crash repeats the same split and stores nothing
        twice.
        """
        token = self.queue.begin(batch)
        return self._finish(batch, self._store(self._convert(batch), token))

    def _finish(self, batch: list[Record], count: int | None) -> bool:
        """After the insert of ``batch`` (``count`` rows, None if stopped first): save the
        cumulative state, acknowledge the batch."""
        if count is None:
            return False
        if self.deltas.changed and self.state_file is not None:
            # Saved before the batch leaves the queue: a replay after a crash finds the state
            # that includes it, and DeltaState gives a replayed point the same delta again.
            save_state(self.state_file, self.deltas)
        self.queue.ack(batch)
        self.inserted_rows += count
        self.last_error = ""
        self.stats.add("exports processed", len(batch))
        self.stats.add("rows inserted", count)
        return True

    def _store(self, converted: list[_Converted], token: str) -> int | None:
        """Insert the batch's rows; the number stored, or None if stopped while ClickHouse was away."""
        if self.per_export:
            return self._store_each(converted, token)
        tables = _merged(converted)
        failure = self._insert(tables, token)
        if failure is _STOPPED:
            return None
        if failure is None:
            return sum(len(rows) for rows in tables.values())
        stored = 0
        for table in tables:  # tables already inserted drop the repeat (same token)
            parts = [(record, rows[table]) for record, rows in converted if rows.get(table)]
            count = self._store_parts(table, parts, token, token)
            if count is None:
                return None
            stored += count
        return stored

    def _store_each(self, converted: list[_Converted], token: str) -> int | None:
        """Each export's rows as blocks of their own, with a token derived from its client's batch id
        (``app:batch id``; the queue's, for an export sent without one): an export that a client sent
        again to another hub writing to the same ClickHouse (its acknowledgement lost) is dropped
        there by ClickHouse itself. A hub's own batch log only knows what reached that hub."""
        stored = 0
        for record, tables in converted:
            own = f"{record.app}:{record.batch_id}" if record.batch_id else f"{token}/{record.seq}"
            for table, rows in tables.items():
                count = self._store_parts(table, [(record, rows)], own, own)
                if count is None:
                    return None
                stored += count
        return stored

    def _store_parts(self, table: str, parts: list[tuple[Record, list]], token: str, batch_token: str) -> int | None:
        """One table's rows of consecutive records, halved on a permanent error."""
        failure = self._insert({table: _joined([rows for _, rows in parts])}, token)
        if failure is _STOPPED:
            return None
        if failure is None:
            return sum(len(rows) for _, rows in parts)
        assert isinstance(failure, Exception)
        if len(parts) == 1:
            self._set_aside(parts[0][0], failure, f"ClickHouse refused its {table} rows")
            return 0
        stored = 0
        half = len(parts) // 2
        for piece in (parts[:half], parts[half:]):
            count = self._store_parts(table, piece, f"{batch_token}/{piece[0][0].seq}-{piece[-1][0].seq}", batch_token)
            if count is None:
                return None
            stored += count
        return stored

    def _insert(self, tables: dict[str, list], token: str) -> Exception | object | None:
        """None once inserted; the error if ClickHouse will never take these rows; ``_STOPPED``
        if the processor was stopped while waiting for ClickHouse to come back."""
        count = sum(len(rows) for rows in tables.values())
        values = {table: _values(rows) for table, rows in tables.items()}
        delay = _FIRST_RETRY_S
        while True:
            try:
                self.store(values, token)
                return None
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if is_permanent(exc):
                    self.stats.add("inserts refused by ClickHouse (split)")
                    logger.error(
                        "ClickHouse refused %d rows for good (%s): finding the records that hold them", count, exc
                    )
                    return exc
                self.stats.add("inserts failed (retried)")
                logger.error(
                    "inserting %d rows into ClickHouse failed (%s); the batch stays queued, retrying in %.1f s",
                    count,
                    exc,
                    delay,
                )
                if self._stop.wait(delay):
                    return _STOPPED
                delay = min(delay * 2, _LAST_RETRY_S)

    def _convert(self, batch: list[Record]) -> list[_Converted]:
        """Each record with its rows per table (row values in column order); records that cannot
        be converted are set aside."""
        converted = []
        for record in batch:
            convert = _CONVERTERS.get(record.kind)
            try:
                if convert is None:
                    raise ValueError(f"unknown record kind {record.kind} (queued by a newer hub?)")
                tables = convert(record, self.deltas)
            except Exception as exc:  # a poison record must not stop the queue: set aside with the reason
                if not isinstance(exc, DecodeError | ValueError | TypeError | OverflowError):
                    logger.exception(
                        "converting queued export %d failed unexpectedly (a bug: please report)", record.seq
                    )
                self._set_aside(record, exc, "it cannot be converted")
                continue
            converted.append((record, {table: rows for table, rows in tables.items() if rows}))
        return converted

    def _set_aside(self, record: Record, exc: Exception, why: str) -> None:
        self.stats.add("exports set aside")
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        stem = self.rejected_dir / f"{record.seq:020d}"
        stem.with_suffix(".bin").write_bytes(record.payload)
        with stem.with_suffix(".txt").open("a") as f:  # several tables' rows may be refused
            f.write(f"app: {record.app}\nkind: {record.kind}\nreason: {why}: {type(exc).__name__}: {exc}\n")
        logger.error(
            "set aside queued export %d of app %s, %s: %s (kept in %s)", record.seq, record.app, why, exc, stem
        )
        self._prune_set_aside()

    def _prune_set_aside(self) -> None:
        """Keep the newest ``MAX_SET_ASIDE`` exports set aside: a client that keeps sending what
        ClickHouse refuses must not fill the disk."""
        kept = sorted(self.rejected_dir.glob("*.bin"))
        for old in kept[: max(0, len(kept) - MAX_SET_ASIDE)]:
            old.unlink(missing_ok=True)
            old.with_suffix(".txt").unlink(missing_ok=True)
            self.stats.add("exports set aside, then deleted (over the cap)")
            logger.warning("deleted the oldest export set aside, %s: over %d kept", old.name, MAX_SET_ASIDE)


_Converted = tuple[Record, dict[str, list[Any]]]
"""A record and its rows (objects with ``values()``) per table."""
_Ahead = tuple[list[Record], list[_Converted] | None]
"""The next batch, and its rows if already converted."""
_STOPPED = object()
MAX_SET_ASIDE = 1000
"""Exports kept in the set-aside directory (the oldest go first)."""
MIN_INSERT_INTERVAL_S = 0.2
"""The least time between the starts of two inserts (a longer insert is followed at once)."""
_FIRST_RETRY_S = 0.5
_LAST_RETRY_S = 30.0


def _merged(converted: list[_Converted]) -> dict[str, list[Any]]:
    """The rows of all records, per table (one insert block per table)."""
    parts: dict[str, list[Any]] = {}
    for _, rows in converted:
        for table, found in rows.items():
            parts.setdefault(table, []).append(found)
    tables = {table: _joined(found) for table, found in parts.items()}
    if "openapi" in tables:  # the latest document per app and env, once
        tables["openapi"] = latest_documents(tables["openapi"])
    return tables


def _joined(parts: list[Any]) -> Any:
    """One table's rows of several records: encoded blocks joined, row lists concatenated."""
    if parts and isinstance(parts[0], Encoded):
        return Encoded.joined(parts)
    return [row for rows in parts for row in rows]


def _values(rows: Any) -> Any:
    """What the store inserts: an encoded block as it is, else each row's values in column order."""
    return rows if isinstance(rows, Encoded) else [row.values() for row in rows]


def _metric_rows(record: Record, deltas: DeltaState) -> dict[str, Any]:
    return metric_tables(record.payload, record.app, deltas)


def _event_rows(record: Record, deltas: DeltaState) -> dict[str, list]:
    request = ExportLogsServiceRequest.FromString(record.payload)
    events = event_rows(request, record.app, record.received_ns)
    for warning in events.warnings:
        logger.warning("queued export %d: %s", record.seq, warning)
    return {
        "endpoints": events.endpoints,
        "instances": events.instances,
        "openapi": events.openapi,
        "request_log": request_log_rows(request, record.app, record.received_ns),
    }


# Queue record kind → its rows per table (raises DecodeError or ValueError on a poison record).
_CONVERTERS: dict[int, Callable[[Record, DeltaState], dict[str, list]]] = {
    KIND_METRICS: _metric_rows,
    KIND_LOGS: _event_rows,
}
