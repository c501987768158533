"""Saving the cumulative-series state after a batch: the whole state rewritten (before) against a
journal of the series the batch changed (``collector_processor/delta_store.py``), with 100 000 series.

    python benchmarks/delta_state.py            # ~2 min on 2 cores
    python benchmarks/delta_state.py --help     # --series, --changed, --before-runs, --dir

What it does:

1. A ``DeltaState`` of ``--series`` cumulative HTTP duration histograms as the hub keeps them
   after two exports of each (its last two points): 10 apps, 2 instances each, routes x methods x
   statuses, 15 explicit buckets (8 of them non-zero), keys as ``http_points`` builds them.
2. Before: the processor's old state and ``_save_state``, inline (``BeforeState``): the whole state
   encoded as one nested list, to a temporary file, fsync, rename; alone in the process (built,
   timed, dropped before the new state is built). Its cost does not depend on how many series a
   batch changed; ``--before-runs`` saves.
3. Journal: for each ``--changed`` count, batches that each give that many series (taken in turn,
   all series over and over) a new point, then ``save_state``; as many batches as it takes for two
   compactions (at most 2 000, and at most 60 s of saving). Latency is ``save_state``'s alone (the
   conversion to deltas is the processor's work either way); bytes are what it wrote to the
   journal, plus the new snapshot and journal header when it compacted.
4. After each: a restart, ``load_state`` of what is on disk (the old file loads as a snapshot).

Every save is fsynced, in ``--dir`` (a temporary directory by default: give one on the disk of the
hub's data directory). Markdown on stdout, progress on stderr. No assertion on any time.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from machine import machine, progress, source_digest, versions

from tallyhub.collector_processor.convert.cumulative import Cumulative, DeltaState, SeriesKey
from tallyhub.collector_processor.convert.delta_store import journal_path, load_state, save_state

S = 1_000_000_000
ROUTES = [f"/v1/resource{r}/{{id}}" for r in range(250)]
METHODS = ["GET", "POST", "PUT", "DELETE"]
STATUSES = [200, 201, 400, 404, 500]


def series_keys(n: int) -> list[SeriesKey]:
    keys = []
    for i in range(n):
        app, rest = divmod(i, n // 10 or 1)
        instance, rest = divmod(rest, (n // 20) or 1)
        route, rest = divmod(rest, len(METHODS) * len(STATUSES))
        method, status = divmod(rest, len(STATUSES))
        attrs = (
            ("http.request.method", METHODS[method]),
            ("http.response.status_code", STATUSES[status]),
            ("http.route", ROUTES[route % len(ROUTES)] + ("" if route < len(ROUTES) else f"/{route}")),
            ("url.scheme", "https"),
        )
        source = ("prod", f"service-{app}", f"{app:02d}-instance-{instance}")
        keys.append((f"app-{app:02d}", *source, "http.server.request.duration", attrs))
    return keys


def cumulative(step: int, series: int) -> Cumulative:
    """The series' point at export ``step``: counts that grow, as an SDK's cumulative histogram."""
    counts = [(i, (step + 1) * ((series + i) % 5 + 1)) for i in range(15) if (series + i) % 15 < 8]
    total = sum(n for _, n in counts)
    return Cumulative(1 * S, (10 + step) * S, total, total * 0.0123, tuple(counts))


def steady_state(keys: list[SeriesKey]) -> DeltaState:
    """The state of a hub that has seen two exports of every series (it keeps the last two points)."""
    deltas = DeltaState(started_ns=0)
    for step in (0, 1):
        for n, key in enumerate(keys):
            deltas.delta(key, cumulative(step, n))
    return deltas


class BeforeState:
    """What the processor kept and wrote before: one order of (previous, last) for all series, and
    its ``dumps`` and ``_save_state`` as they were (commit 44c6575), the whole state every save."""

    def __init__(self, keys: list[SeriesKey]) -> None:
        self.started_ns = 0
        self.series: OrderedDict[SeriesKey, tuple[Cumulative | None, Cumulative]] = OrderedDict()
        for step in (0, 1):
            for n, key in enumerate(keys):
                self.update(key, cumulative(step, n))

    def update(self, key: SeriesKey, point: Cumulative) -> None:
        previous = self.series.get(key)
        self.series[key] = (previous[1] if previous else None, point)
        self.series.move_to_end(key)

    def dumps(self) -> bytes:
        entries = [[list(key), [_plain_before(p) for p in pair]] for key, pair in self.series.items()]
        return json.dumps({"started_ns": self.started_ns, "series": entries}).encode()

    def save(self, path: Path) -> int:
        """``_save_state``; the bytes written."""
        data = self.dumps()
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return len(data)


def _plain_before(point: Cumulative | None) -> Any:
    if point is None:
        return None
    return [point.start_ns, point.time_ns, point.count, point.total, [list(b) for b in point.buckets]]


def run_before(directory: Path, keys: list[SeriesKey], runs: int) -> dict[str, float]:
    before = BeforeState(keys)
    path = directory / "before" / "cumulative.json"
    path.parent.mkdir()
    latencies, written = [], []
    for run in range(runs):
        for n in range(run, len(keys), 50):  # what a batch changed makes no difference
            before.update(keys[n], cumulative(run + 2, n))
        start = time.perf_counter()
        written.append(before.save(path))
        latencies.append(time.perf_counter() - start)
    del before
    gc.collect()
    return {**summary(latencies, written, 0), **loaded(path)}


def loaded(path: Path) -> dict[str, float]:
    """What a restart finds: the time ``load_state`` takes (old files load as snapshots), the bytes."""
    gc.collect()
    start = time.perf_counter()
    load_state(path)
    elapsed = time.perf_counter() - start
    return {"load": elapsed * 1000, "files": on_disk(path) + on_disk(journal_path(path))}


def on_disk(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def run_journal(
    directory: Path, keys: list[SeriesKey], changed: int, max_batches: int, budget_s: float
) -> dict[str, float]:
    path = directory / f"journal-{changed}" / "cumulative.json"
    path.parent.mkdir()
    deltas = steady_state(keys)
    gc.collect()
    save_state(path, deltas)  # the first snapshot: not counted
    latencies, written, compactions = [], [], 0
    cursor = 0
    while len(latencies) < max_batches and (compactions < 2 or len(latencies) < 20) and sum(latencies) < budget_s:
        for _ in range(changed):
            n = cursor % len(keys)
            deltas.delta(keys[n], cumulative(2 + cursor // len(keys), n))
            cursor += 1
        snapshot_id, before = deltas.snapshot_id, on_disk(journal_path(path))
        start = time.perf_counter()
        save_state(path, deltas)
        latencies.append(time.perf_counter() - start)
        if deltas.snapshot_id != snapshot_id:
            compactions += 1
            written.append(on_disk(path) + on_disk(journal_path(path)))
        else:
            written.append(on_disk(journal_path(path)) - before)
    del deltas
    return {**summary(latencies, written, compactions), **loaded(path)}


def summary(latencies: list[float], written: list[int], compactions: int) -> dict[str, float]:
    ms = sorted(t * 1000 for t in latencies)
    return {
        "batches": len(ms),
        "median": statistics.median(ms),
        "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max": ms[-1],
        "mean": statistics.fmean(ms),
        "bytes": statistics.fmean(written),
        "compactions": compactions,
    }


def filesystem(directory: Path) -> str:
    """The mount (device, type) that holds ``directory``."""
    best = ("?", "?", "")
    with open("/proc/mounts") as f:
        for line in f:
            device, mount, kind = line.split()[:3]
            if str(directory.resolve()).startswith(mount) and len(mount) > len(best[2]):
                best = (device, kind, mount)
    return f"{best[0]} ({best[1]}, mounted on {best[2]})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=100_000, help="series in the state (default 100 000)")
    parser.add_argument(
        "--changed", type=int, nargs="+", default=[1, 100, 1000, 10_000], help="series changed per batch"
    )
    parser.add_argument("--before-runs", type=int, default=5, help="full rewrites timed (default 5)")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="tallyhub-delta-state-", dir=args.dir))
    try:
        keys = series_keys(args.series)
        progress(f"before: {args.series} series, the whole state rewritten")
        rows = [("before: whole state rewritten", "any", run_before(directory, keys, args.before_runs))]
        for changed in args.changed:
            progress(f"journal: {changed} series changed per batch")
            rows.append(("journal", f"{changed:,}", run_journal(directory, keys, changed, 2000, 60.0)))
        print_report(args, directory, rows)
    finally:
        shutil.rmtree(directory)


def print_report(args: argparse.Namespace, directory: Path, rows: list[tuple[str, str, dict[str, float]]]) -> None:
    print(f"Run of {time.strftime('%Y-%m-%d %H:%M')}: `python benchmarks/delta_state.py`")
    print(f"- machine: {machine()}")
    print(f"- {versions([])}; collector_processor sources {source_digest('collector_processor')}")
    print(f"- written to {filesystem(directory)}, every save fsynced; {args.series:,} series")
    print()
    print(
        "| save | series changed per batch | batches | median ms | p99 ms | max ms | mean ms | bytes per batch (mean) "
        "| compactions | then a restart: MB on disk, load ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, changed, r in rows:
        print(
            f"| {name} | {changed} | {r['batches']:.0f} | {r['median']:.1f} | {r['p99']:.1f} | {r['max']:.1f} "
            f"| {r['mean']:.1f} | {r['bytes']:,.0f} | {r['compactions']:.0f} | {r['files'] / 1e6:.1f} MB, "
            f"{r['load']:,.0f} ms |"
        )


if __name__ == "__main__":
    main()
