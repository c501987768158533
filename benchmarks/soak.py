"""The hub over a long run at a steady rate: memory (RSS) and disk stay flat.

    python benchmarks/soak.py                      # 60 minutes at 60 000 data points/s, hub on one core
    python benchmarks/soak.py --minutes 10 --rate 30000

Starts a real hub as ``benchmarks/ingest.py`` does (``tallyhub serve``, embedded chDB in a temporary
data directory, pinned to one CPU; this process on the other), measures its idle RSS, then sends
exports shaped as tallyhub's client sends them (each with a fresh batch id) at ``--rate`` data
points/s for ``--minutes``. Every ``--every`` seconds it reads the hub's RSS (its receiver processes'
included), the sizes on disk of the queue, of ``batches.log``, of the cumulative state, of the
set-aside exports and of the embedded ClickHouse, and the queue's depth. Prints Markdown: the samples,
and the growth between the first and the last quarter of the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import ingest  # pins this process to one CPU when imported (see ingest.py)
from machine import cpu_model, progress

from tallyhub.collector_processor.receive.auth import generate_key, hash_key
from tallyhub.storage.apps import create_app


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (KiB)."""
    total = 0
    for each in (pid, *ingest.children(pid)):
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def size_kib(path: Path) -> int:
    """Bytes on disk under ``path`` (KiB); files that go while it is walked (ClickHouse's merges) are skipped."""
    if path.is_file():
        return path.stat().st_size // 1024
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(folder) / name).stat().st_size
    return total // 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=60_000.0, help="data points/s offered (default 60 000)")
    parser.add_argument("--every", type=float, default=60.0, help="seconds between samples (default 60)")
    parser.add_argument("--payloads", type=int, default=16)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the hub to a CPU")
    args = parser.parse_args(argv)
    rng = random.Random(1)
    exports = [ingest.build_export(i, ingest.routes(40), ingest.STATUSES, 5, rng) for i in range(args.payloads)]
    points = statistics.fmean(e.points for e in exports)
    work = Path(tempfile.mkdtemp(prefix="tallyhub-soak-"))
    cpus = None
    if not args.no_pin and ingest.SELF_PINNING.startswith("CPU "):
        others = [c for c in range(os.cpu_count() or 1) if c != int(ingest.SELF_PINNING[4:])]
        cpus = {others[0]} if others else None
    hub = ingest.HubProcess(work, cpus)
    out = [f"## Hub soak, run of {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}", ""]
    out.append(f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores; {ingest.versions()}")
    out.append(f"- Command: `python benchmarks/soak.py {' '.join(argv if argv is not None else sys.argv[1:])}`")
    try:
        runner = hub.wait_ready()
        key = generate_key()
        create_app(runner, "soak", hash_key(key))
        time.sleep(10)
        out.append(f"- Idle hub after start: RSS {rss_kib(hub.pid) / 1024:.0f} MiB")
        out.append(
            f"- Load: {args.rate:,.0f} data points/s ({args.rate / points:.1f} exports/s of {points:.0f} points) for "
            f"{args.minutes:g} min, each export with a fresh batch id"
        )
        out.append("")
        stop = threading.Event()
        sent = [0]

        def sender() -> None:
            call = ingest.channel(f"127.0.0.1:{hub.grpc_port}").unary_unary(
                "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                request_serializer=None,
                response_deserializer=None,
            )
            interval = points / args.rate
            due = time.monotonic()
            i = 0
            while not stop.is_set():
                export = exports[i % len(exports)]
                metadata = [("x-tallyhub-app-key", key), ("x-tallyhub-batch-id", uuid.uuid4().hex)]
                try:
                    call(export.payload, metadata=metadata, timeout=30)
                    sent[0] += 1
                except Exception as exc:  # counted below as not sent; the soak goes on
                    progress(f"export failed: {exc}")
                i += 1
                due += interval
                stop.wait(max(0.0, due - time.monotonic()))

        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        data = hub.data_dir
        rows = []
        started = time.monotonic()
        header = "| min | RSS MiB | queue KiB | queued | batches.log KiB | cumulative state KiB | set aside KiB |"
        header += " ClickHouse MiB | exports sent |"
        out += [header, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(args.every)
            status = runner.status()
            row = (
                (time.monotonic() - started) / 60,
                rss_kib(hub.pid) / 1024,
                size_kib(data / "queue"),
                status["queue"]["queued exports"],
                size_kib(data / "queue" / "batches.log"),
                size_kib(data / "cumulative.json") + size_kib(data / "cumulative.json.journal"),
                size_kib(data / "rejected"),
                size_kib(data / "clickhouse") / 1024,
                sent[0],
            )
            rows.append(row)
            progress(f"{row[0]:.1f} min: RSS {row[1]:.0f} MiB, queue {row[2]} KiB, ClickHouse {row[7]:.0f} MiB")
            out.append(
                f"| {row[0]:.1f} | {row[1]:.0f} | {row[2]:,} | {row[3]} | {row[4]:,} | {row[5]:,} | {row[6]:,} | "
                f"{row[7]:,.0f} | {row[8]:,} |"
            )
        stop.set()
        thread.join(60)
        quarter = max(1, len(rows) // 4)
        first, last = rows[:quarter], rows[-quarter:]

        def mean(rows_: list[tuple], column: int) -> float:
            return statistics.fmean(r[column] for r in rows_)

        out.append("")
        out.append(
            f"RSS: {mean(first, 1):.0f} MiB in the first quarter, {mean(last, 1):.0f} MiB in the last "
            f"(max {max(r[1] for r in rows):.0f}); batches.log: {mean(first, 4):,.0f} → {mean(last, 4):,.0f} KiB "
            "(it holds the batch ids of the last 2 hours); "
            f"queue on disk: {mean(first, 2):,.0f} → {mean(last, 2):,.0f} KiB (64 MiB segments); "
            f"ClickHouse (the data itself, which grows with what is stored): "
            f"{rows[0][7]:,.0f} → {rows[-1][7]:,.0f} MiB."
        )
    finally:
        hub.stop()
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
