"""Storage and queries: 30 days of minute data for one app through the real insert path, then the
`tallyhub report` queries over the last hour, 30 days and 12 months, and the bytes per stored row.

    python benchmarks/storage.py            # ~6 min on 2 cores (30 days, 300 rows per minute)
    python benchmarks/storage.py --quick    # <1 min: 3 days, 150 rows per minute, 3 runs per query
    python benchmarks/storage.py --help

What it does:

1. A fresh embedded chDB in a temporary directory (``open_client("chdb:///tmp/...", create=True)``),
   ``migrate``, and the app in the ``apps`` table (``build_report`` checks it exists).
2. ``--days`` of per-minute data ending now for app ``bench``, env ``prod``, service ``api``: 200
   endpoints (40 resources x list / get / create / update / delete), statuses 200, 201, 400, 404, 500
   (by method, with per-endpoint rates), 20 consumers, two instances at a time that are replaced every
   3 days (a deploy). Each minute draws its requests (a Poisson number around a daily and weekly cycle)
   over the (endpoint, status, consumer, instance) series with a skewed popularity (Zipf endpoints and
   consumers); the rate is calibrated so that on average ``--rows-per-minute`` series are active per
   minute: one `requests` row each, the rest of the 32 000 possible series are silent that minute.
   Every request has a duration drawn from its endpoint's log-normal (slower for 500s, faster for
   400/404) and body sizes (request bodies for POST/PATCH only, responses by kind): the rows hold the
   real scale-5 histograms of those values (``bucket_index(v, 5)``, vectorized with the same formula
   and checked against it), their sums, min and max. 400s also give `validation_errors` rows, 500s
   `server_errors` rows (with a stack trace), and every insert the `consumers` rows, as the hub
   converts an export.
3. One ``insert_batch`` (the hub's writer: ``insert_rows`` per table, with deduplication tokens, the
   rollups filled by their materialized views) per hour of data, timed apart from the generation.
4. The queries, right after the load (a live hub has unmerged parts, and merges may be running), then
   after ``OPTIMIZE TABLE ... FINAL`` of every table: each ``--runs`` times after a first ("cold") run.
   The report's sections are the SQL ``build_report`` runs (``section_sql``, through a ``ClientRunner``,
   JSONEachRow, readonly) for the windows ``resolve_window`` gives for ``--since 1h`` (minutes),
   ``30d`` (hourly rollup) and ``365d`` (daily rollup), and ``build_report`` as a whole; plus the
   12-month trend (``traffic_daily``), the 30-day endpoint overview read from the minute table and
   from the daily rollup, and variants of the 30-day overview without parts of its work (where the
   time goes): without the percentile/Apdex UDFs, without the histograms, with the UDFs rewritten
   without per-key Map lookups (checked to give the same rows).
5. Storage from ``system.parts`` (active parts): rows, bytes on disk, compressed / uncompressed,
   bytes per row, the largest columns of `requests`, and other encodings of them (a scratch copy).
6. Experiments (tables named ``x_*``, not in tallyhub): rollups per endpoint (hourly and daily, without
   consumer and service) filled from the rollups, and the 30-day overview read from them.
7. 12 months: the daily rollup's rows copied 11 times, 30 days further back each (``INSERT ... SELECT``,
   not the insert path), to time the 12-month trend and report on a full year of daily rows; then a
   daily rollup per app and status (``x_app_daily``) for the trend.

Markdown on stdout, progress on stderr. No assertion on any time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from tallyhub import __version__
from tallyhub.bucket_mapping import bucket_index
from tallyhub.storage.apps import create_app
from tallyhub.storage.backend import ClientRunner, open_client
from tallyhub.storage.migrate import migrate
from tallyhub.storage.report_queries import SECTIONS, build_report, section_sql
from tallyhub.storage.window import MINUTE, Window, resolve_window
from tallyhub.storage.writer import insert_batch

APP, ENV, SERVICE = "bench", "prod", "api"
STATUSES = (200, 201, 400, 404, 500)
SCALE = 5
TARGET_30D_MS = 200.0
TARGET_12M_MS = 500.0
OTHER_BENCHMARKS = ("benchmarks/resilience.py", "benchmarks/overhead.py", "benchmarks/ingest.py")
IDLE_BUSY_CORES = 0.3
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
TABLES = ("requests", "requests_hourly", "requests_daily", "validation_errors", "server_errors", "consumers")

RESOURCES = (
    "users", "orders", "products", "carts", "payments", "invoices", "shipments", "reviews", "coupons",
    "categories", "addresses", "wishlists", "returns", "refunds", "subscriptions", "plans", "teams",
    "projects", "tasks", "comments", "attachments", "notifications", "webhooks", "tokens", "sessions",
    "warehouses", "suppliers", "stock", "prices", "discounts", "tickets", "messages", "reports", "exports",
    "imports", "audits", "settings", "roles", "tags", "events",
)  # fmt: skip
OPERATIONS = (  # (method, route suffix, popularity factor, kind)
    ("GET", "", 2.0, "list"),
    ("GET", "/{id}", 3.0, "get"),
    ("POST", "", 1.0, "create"),
    ("PATCH", "/{id}", 0.5, "update"),
    ("DELETE", "/{id}", 0.2, "delete"),
)
# Status probabilities by kind of endpoint (200, 201, 400, 404, 500), before per-endpoint jitter.
STATUS_MIX = {
    "list": (0.960, 0.0, 0.035, 0.0, 0.005),
    "get": (0.925, 0.0, 0.010, 0.060, 0.005),
    "create": (0.0, 0.900, 0.090, 0.0, 0.010),
    "update": (0.880, 0.0, 0.070, 0.040, 0.010),
    "delete": (0.900, 0.0, 0.0, 0.095, 0.005),
}
DURATION_FACTOR = (1.0, 1.0, 0.3, 0.5, 2.5)  # median duration of a status relative to the endpoint's
CONSUMER_GROUPS = ("partners", "internal", "mobile", "web")
VALIDATION_VARIANTS = (
    ("body.email", "value is not a valid email address", "value_error"),
    ("body.name", "Field required", "missing"),
    ("query.limit", "Input should be less than or equal to 100", "less_than_equal"),
    ("body.quantity", "Input should be greater than 0", "greater_than"),
    ("query.cursor", "Input should be a valid string", "string_type"),
    ("path.id", "Input should be a valid integer", "int_parsing"),
)
EXCEPTIONS = (
    ("psycopg.errors.QueryCanceled", "canceling statement due to statement timeout"),
    ("httpx.ReadTimeout", "timed out"),
    ("KeyError", "'customer_id'"),
    ("redis.exceptions.ConnectionError", "Error 111 connecting to cache:6379. Connection refused."),
    ("ValueError", "invalid literal for int() with base 10: ''"),
)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# The machine.


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def versions() -> str:
    out = [f"Python {platform.python_version()} ({platform.python_implementation()})", f"tallyhub {__version__}"]
    for name in ("chdb", "chdb-core", "clickhouse-connect", "numpy"):
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def own_lineage() -> set[int]:
    """This process and its ancestors (a ``timeout`` or shell that started it is not another benchmark)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def other_benchmarks() -> dict[int, str]:
    """pid -> command line of the other benchmark processes on this machine."""
    found, mine = {}, own_lineage()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in mine:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if any(name in cmdline for name in OTHER_BENCHMARKS):
            found[int(proc.name)] = cmdline[:160]
    return found


def cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def system_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all CPUs since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait + steal


def sample(seconds: float = 3.0) -> tuple[float, list[str]]:
    """Busy cores of the machine over ``seconds`` (this process excluded), and the other benchmarks
    that used CPU meanwhile (one that only waits for the machine to be idle, as this one does, is not
    counted: two benchmarks waiting for each other would wait forever)."""
    others = other_benchmarks()
    ticks = {pid: cpu_ticks(pid) for pid in others}
    (b0, t0), c0 = system_ticks(), os.times()
    time.sleep(seconds)
    (b1, t1), c1 = system_ticks(), os.times()
    own = (c1.user + c1.system - c0.user - c0.system) / TICK_S
    busy = max(b1 - b0 - own, 0) / max(t1 - t0, 1) * (os.cpu_count() or 1)
    active = [f"{pid}: {cmd}" for pid, cmd in others.items() if (cpu_ticks(pid) - ticks[pid]) * TICK_S > 0.1]
    return busy, active


class OtherLoad:
    """The CPU that other processes used, phase by phase: the machine's busy ticks minus this process's."""

    def __init__(self) -> None:
        self.phases: list[str] = []
        self._mark()

    def _mark(self) -> None:
        times = os.times()
        self._at = (*system_ticks(), (times.user + times.system) / TICK_S)

    def phase(self, name: str) -> None:
        busy0, total0, own0 = self._at
        self._mark()
        busy1, total1, own1 = self._at
        cores = max(busy1 - busy0 - (own1 - own0), 0) / max(total1 - total0, 1) * (os.cpu_count() or 1)
        self.phases.append(f"{name} {cores:.2f}")


def wait_until_idle(minutes: float) -> str:
    """Wait (polling every 30 s, up to ``minutes``) while another benchmark runs or the CPUs are busy."""
    started = time.monotonic()
    while True:
        busy, active = sample()
        waited = time.monotonic() - started
        note = f" (after waiting {waited:.0f} s)" if waited > 10 else ""
        if not active and busy < IDLE_BUSY_CORES:
            return f"no other benchmark running, {busy:.2f} busy cores over 3 s{note}"
        if waited >= minutes * 60:
            what = "; ".join(active) if active else "no other benchmark"
            return f"NOT IDLE after {minutes:g} min of waiting: {what}, {busy:.2f} busy cores over 3 s"
        progress(f"waiting for the machine to be idle: {active[0] if active else f'{busy:.2f} busy cores'}")
        time.sleep(30)


# --------------------------------------------------------------------------------------------
# The data.


@dataclass
class Endpoint:
    method: str
    route: str
    kind: str
    weight: float
    statuses: np.ndarray  # probabilities of STATUSES
    median_s: float
    sigma: float
    validation: list[tuple[str, str, str]]
    exceptions: list[tuple[str, str, str, str]]  # (type, message, fingerprint, stacktrace)


def zipf(n: int, s: float) -> np.ndarray:
    w = 1 / np.arange(1, n + 1) ** s
    return w / w.sum()


def stacktrace(route: str, exc_type: str, message: str, depth: int) -> str:
    frames = [
        (
            f'  File "/app/.venv/lib/python3.12/site-packages/starlette/middleware/errors.py", line {165 + i},'
            f" in __call__\n    await self.app(scope, receive, _send)"
        )
        for i in range(depth // 2)
    ]
    handler = route.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    frames += [
        f'  File "/app/api/{handler}.py", line {40 + 7 * i}, in {handler}_{i}\n'
        f"    result = await service.call_{i}(request)"
        for i in range(depth - depth // 2)
    ]
    return "Traceback (most recent call last):\n" + "\n".join(frames) + f"\n{exc_type}: {message}\n"


def build_endpoints(rng: np.random.Generator) -> list[Endpoint]:
    resource_weight = zipf(len(RESOURCES), 1.1)[rng.permutation(len(RESOURCES))]
    endpoints = []
    for r, resource in enumerate(RESOURCES):
        for method, suffix, factor, kind in OPERATIONS:
            route = f"/v1/{resource}{suffix}"
            mix = np.array(STATUS_MIX[kind]) * rng.uniform(0.5, 1.5, len(STATUSES))
            if rng.random() < 0.1:  # a flaky endpoint
                mix[4] *= 8
            mix[np.array(STATUS_MIX[kind]) == 0] = 0
            median = float(np.clip(np.exp(rng.normal(math.log(0.03), 0.8)), 0.002, 0.8))
            if kind == "list":
                median *= 2
            variants = [VALIDATION_VARIANTS[i] for i in rng.choice(len(VALIDATION_VARIANTS), 2, replace=False)]
            exceptions = []
            for i in rng.choice(len(EXCEPTIONS), 1 + int(rng.random() < 0.3), replace=False):
                exc_type, message = EXCEPTIONS[i]
                fingerprint = hashlib.sha1(f"{route}{exc_type}".encode()).hexdigest()[:16]
                exceptions.append((exc_type, message, fingerprint, stacktrace(route, exc_type, message, 14)))
            endpoints.append(
                Endpoint(
                    method=method,
                    route=route,
                    kind=kind,
                    weight=float(resource_weight[r] * factor),
                    statuses=mix / mix.sum(),
                    median_s=median,
                    sigma=float(rng.uniform(0.35, 0.9)),
                    validation=variants,
                    exceptions=exceptions,
                )
            )
    total = sum(e.weight for e in endpoints)
    for e in endpoints:
        e.weight /= total
    return endpoints


def load_factor(minutes: np.ndarray) -> np.ndarray:
    """Traffic relative to the mean: a daily cycle (peak 16:00 UTC) and quieter weekends."""
    hour = (minutes % 1440) / 60
    weekday = (minutes // 1440 + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    daily = 1 + 0.5 * np.sin(2 * np.pi * (hour - 10) / 24)
    weekly = np.where(weekday >= 5, 0.6, 1.0)
    return daily * weekly / (5 / 7 + 2 / 7 * 0.6)


LOG2E = 1 / math.log(2)
OFFSET = 2048  # bucket indices of durations and sizes stay well within +-2048


def bucket_indices(values: np.ndarray) -> np.ndarray:
    """``bucket_index(v, 5)`` for an array of values > 0: the same formula, exact powers of two apart."""
    mantissa, exponent = np.frexp(values)
    index = np.ceil(np.log(values) * LOG2E * (1 << SCALE)).astype(np.int64) - 1
    power = mantissa == 0.5
    index[power] = ((exponent[power].astype(np.int64) - 1) << SCALE) - 1
    return index


def histograms(row_of: np.ndarray, index: np.ndarray, n_rows: int) -> list[dict[int, int]]:
    """One {bucket: count} per row from each value's row and bucket index."""
    pairs, counts = np.unique(row_of * (2 * OFFSET) + (index + OFFSET), return_counts=True)
    maps: list[dict[int, int]] = [{} for _ in range(n_rows)]
    for row, key, count in zip(
        (pairs // (2 * OFFSET)).tolist(), (pairs % (2 * OFFSET) - OFFSET).tolist(), counts.tolist(), strict=True
    ):
        maps[row][key] = count
    return maps


@dataclass
class Chunk:
    tables: dict[str, list[list[Any]]]
    requests: int
    checked: int = 0
    mismatches: int = 0


@dataclass
class Traffic:
    """The series of the app and the request rate that gives ``rows_per_minute`` active series."""

    rows_per_minute: float
    seed: int
    consumers: int = 20
    instances_per_deploy: int = 2
    deploy_every_min: int = 3 * 1440
    rng: np.random.Generator = field(init=False)
    endpoints: list[Endpoint] = field(init=False)
    rate: float = field(init=False)  # requests per minute, on average

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.endpoints = build_endpoints(self.rng)
        consumer_w = zipf(self.consumers, 1.2)
        self.consumer_ids = [f"consumer-{i + 1:02d}" for i in range(self.consumers)]
        self.consumer_info = [
            (f"Consumer {i + 1:02d}", CONSUMER_GROUPS[i % len(CONSUMER_GROUPS)]) for i in range(self.consumers)
        ]
        cells = [
            (e, s, c, ep.weight * ep.statuses[s] * consumer_w[c])
            for e, ep in enumerate(self.endpoints)
            for s in range(len(STATUSES))
            if ep.statuses[s] > 0
            for c in range(self.consumers)
        ]
        self.cell_endpoint = np.array([x[0] for x in cells])
        self.cell_status = np.array([x[1] for x in cells])
        self.cell_consumer = np.array([x[2] for x in cells])
        p = np.array([x[3] for x in cells])
        self.cell_p = p / p.sum()
        median = np.array([ep.median_s for ep in self.endpoints])[self.cell_endpoint]
        self.cell_mu = np.log(median * np.array(DURATION_FACTOR)[self.cell_status])
        self.cell_sigma = np.array([ep.sigma for ep in self.endpoints])[self.cell_endpoint]
        kinds = [ep.kind for ep in self.endpoints]
        kind = np.array(kinds)[self.cell_endpoint]
        error = self.cell_status >= 2
        self.cell_request_mu = np.select(
            [kind == "create", kind == "update"], [math.log(900), math.log(300)], default=np.nan
        )
        self.cell_response_mu = np.select(
            [error, kind == "list", kind == "get", kind == "delete"],
            [math.log(140), math.log(8000), math.log(1200), np.nan],
            default=math.log(600),
        )
        self.cell_response_sigma = np.where(error, 0.2, np.where(kind == "list", 0.8, 0.5))
        self.cell_info = [
            (ep.method, ep.route, STATUSES[s], self.consumer_ids[c], ep)
            for ep, s, c in zip(
                (self.endpoints[e] for e in self.cell_endpoint.tolist()),
                self.cell_status.tolist(),
                self.cell_consumer.tolist(),
                strict=True,
            )
        ]
        self.rate = self._calibrate()

    @property
    def cells(self) -> int:
        return len(self.cell_p)

    def expected_rows(self, rate: float) -> float:
        """Mean active series per minute at ``rate`` requests per minute, over a week's load cycle."""
        q = self.cell_p / self.instances_per_deploy
        factors = load_factor(np.arange(0, 7 * 1440, 60))
        return float(np.mean([self.instances_per_deploy * np.sum(1 - np.exp(-rate * f * q)) for f in factors]))

    def _calibrate(self) -> float:
        low, high = 1.0, 1e7
        for _ in range(60):
            mid = math.sqrt(low * high)
            low, high = (mid, high) if self.expected_rows(mid) < self.rows_per_minute else (low, mid)
        return low

    def instance(self, minute: int, k: int) -> str:
        deploy = minute // self.deploy_every_min
        return hashlib.sha1(f"{self.seed}:{deploy}:{k}".encode()).hexdigest()[:32]

    def chunk(self, first_minute: int, minutes: int, check: bool = False) -> Chunk:
        """The rows of ``minutes`` minutes from ``first_minute`` (Unix minutes), per table."""
        rng = self.rng
        epoch = np.arange(first_minute, first_minute + minutes)
        per_minute = rng.poisson(self.rate * load_factor(epoch))
        total = int(per_minute.sum())
        cell = rng.choice(self.cells, size=total, p=self.cell_p)
        minute = np.repeat(np.arange(minutes), per_minute)
        inst = rng.integers(0, self.instances_per_deploy, size=total)
        key = (minute * self.cells + cell) * self.instances_per_deploy + inst
        order = np.argsort(key, kind="stable")
        key, cell = key[order], cell[order]
        row_keys, starts, counts = np.unique(key, return_index=True, return_counts=True)
        n = len(row_keys)
        row_of = np.repeat(np.arange(n), counts)
        row_cell = cell[starts]
        row_minute = row_keys // (self.cells * self.instances_per_deploy)
        row_inst = row_keys % self.instances_per_deploy

        duration = np.exp(self.cell_mu[cell] + self.cell_sigma[cell] * rng.standard_normal(total))
        duration = np.clip(duration, 2e-4, 120.0)
        d_index = bucket_indices(duration)
        chunk = Chunk(tables={}, requests=total)
        if check:  # the vectorized indices are bucket_index's
            chunk.checked = total
            chunk.mismatches = sum(
                bucket_index(v, SCALE) != i for v, i in zip(duration.tolist(), d_index.tolist(), strict=True)
            )
        d_sum = np.add.reduceat(duration, starts).tolist()
        d_min = np.minimum.reduceat(duration, starts).tolist()
        d_max = np.maximum.reduceat(duration, starts).tolist()
        d_maps = histograms(row_of, d_index, n)

        sizes = []
        for mu, sigma in ((self.cell_request_mu, 0.6), (self.cell_response_mu, self.cell_response_sigma)):
            has = ~np.isnan(mu[cell])
            sigma_of = sigma[cell[has]] if isinstance(sigma, np.ndarray) else sigma
            value = np.maximum(1.0, np.rint(np.exp(mu[cell[has]] + sigma_of * rng.standard_normal(int(has.sum())))))
            if check:
                chunk.checked += len(value)
                chunk.mismatches += sum(
                    bucket_index(v, SCALE) != i
                    for v, i in zip(value.tolist(), bucket_indices(value).tolist(), strict=True)
                )
            full = np.zeros(total)
            full[has] = value
            sizes.append((np.add.reduceat(full, starts).tolist(), histograms(row_of[has], bucket_indices(value), n)))
        (q_sum, q_maps), (r_sum, r_maps) = sizes

        minute_dt = [dt.datetime.fromtimestamp(60 * m, dt.UTC).replace(tzinfo=None) for m in epoch.tolist()]
        instances = [self.instance(first_minute, k) for k in range(self.instances_per_deploy)]
        requests, validation, server = [], [], []
        info = self.cell_info
        for i, (m, c, k, count) in enumerate(
            zip(row_minute.tolist(), row_cell.tolist(), row_inst.tolist(), counts.tolist(), strict=True)
        ):
            method, route, status, ident, ep = info[c]
            minute_at, instance = minute_dt[m], instances[k]
            requests.append(
                [minute_at, APP, ENV, SERVICE, instance, ident, method, route, status, count,
                 d_sum[i], d_min[i], d_max[i], d_maps[i], q_sum[i], q_maps[i], r_sum[i], r_maps[i]]
            )  # fmt: skip
            if status == 400:
                location, message, kind = ep.validation[(m + k) % len(ep.validation)]
                validation.append(
                    [minute_at, APP, ENV, SERVICE, instance, ident, method, route, location, message, kind, count]
                )
            elif status == 500:
                exc_type, message, fingerprint, trace = ep.exceptions[(m + k) % len(ep.exceptions)]
                server.append(
                    [minute_at, APP, ENV, SERVICE, instance, ident, method, route, exc_type, message, fingerprint,
                     trace, count]
                )  # fmt: skip
        row_consumer = self.cell_consumer[row_cell]
        consumers = []
        for c in np.unique(row_consumer).tolist():
            seen = row_minute[row_consumer == c]
            first, last = minute_dt[int(seen.min())], minute_dt[int(seen.max())]
            consumers.append([APP, ENV, self.consumer_ids[c], first, last, (last, *self.consumer_info[c])])
        chunk.tables = {
            "requests": requests,
            "consumers": consumers,
            "validation_errors": validation,
            "server_errors": server,
        }
        return chunk


@dataclass
class Load:
    rows: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    inserts: int = 0
    generate_s: float = 0.0
    insert_s: list[float] = field(default_factory=list)
    checked: int = 0
    mismatches: int = 0


def load(client: Any, traffic: Traffic, first_minute: int, minutes: int, chunk_minutes: int) -> Load:
    out = Load()
    last_note = time.monotonic()
    for start in range(first_minute, first_minute + minutes, chunk_minutes):
        t0 = time.perf_counter()
        gc.disable()  # the generation allocates millions of small objects: the collector would halve its speed
        try:
            chunk = traffic.chunk(
                start, min(chunk_minutes, first_minute + minutes - start), check=start == first_minute
            )
        finally:
            gc.enable()
        t1 = time.perf_counter()
        insert_batch(client, chunk.tables, f"bench:{start}")
        t2 = time.perf_counter()
        out.generate_s += t1 - t0
        out.insert_s.append(t2 - t1)
        out.requests += chunk.requests
        out.inserts += 1
        out.checked += chunk.checked
        out.mismatches += chunk.mismatches
        for table, rows in chunk.tables.items():
            out.rows[table] = out.rows.get(table, 0) + len(rows)
        if time.monotonic() - last_note > 15:
            last_note = time.monotonic()
            done = (start + chunk_minutes - first_minute) / minutes
            progress(
                f"  {done:.0%}: {out.rows['requests']:,} rows, generate {out.generate_s:.0f} s, "
                f"insert {sum(out.insert_s):.0f} s"
            )
    return out


# --------------------------------------------------------------------------------------------
# The queries.


@dataclass
class Timing:
    name: str
    cold_ms: float
    warm_ms: list[float]
    rows: int = 0
    engine_ms: float | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.warm_ms) if self.warm_ms else self.cold_ms

    @property
    def max_ms(self) -> float:
        return max(self.warm_ms) if self.warm_ms else self.cold_ms


VIEW_ARGS = "app={app:String}, env='', from={from:DateTime}, to={to:DateTime}"


def report_parameters(window: Window) -> dict[str, Any]:
    """What ``build_report`` passes (every env: the env is the literal '' in the SQL)."""
    return {"app": APP, **window.parameters(), "apdex_t": 0.5, "limit": 21}


@dataclass
class Query:
    name: str
    run: Callable[[], int]  # returns the number of result rows
    sql: str | None = None
    parameters: Mapping[str, Any] | None = None


def sql_query(runner: ClientRunner, name: str, sql: str, parameters: Mapping[str, Any]) -> Query:
    def run() -> int:  # what report._query does
        out = runner.raw(sql, parameters, fmt="JSONEachRow", readonly=True)
        return len([json.loads(line) for line in out.decode().splitlines() if line.strip()])

    return Query(name, run, sql, parameters)


def windows(now: dt.datetime) -> dict[str, Window]:
    return {since: resolve_window(now, since) for since in ("1h", "30d", "365d")}


def report_queries(runner: ClientRunner, wins: Mapping[str, Window]) -> list[Query]:
    queries = []
    for since, window in wins.items():
        label = {"1h": "last hour", "30d": "30 days", "365d": "12 months"}[since]
        parameters = report_parameters(window)
        for section in SECTIONS:
            sql = section_sql(section, window.level, every_env=True)
            queries.append(sql_query(runner, f"{label} ({window.level.name}): {section}", sql, parameters))
        queries.append(
            Query(
                f"{label}: whole `build_report` ({len(SECTIONS)} queries + apps)",
                lambda window=window: len(build_report(runner, APP, window)["endpoints"]),
            )
        )
    return queries


# The overview of `endpoint_overview_hourly`, with the expressions of its UDFs as parameters: the
# same SQL as the view (migration 0008) when given the UDFs, for the variants that leave work out.
OVERVIEW_SQL = """
SELECT method, route, n AS requests,
    n / greatest(dateDiff('minute', {{from:DateTime}}, {{to:DateTime}}), 1) AS requests_per_minute,
    n_client AS client_errors, n_server AS server_errors,
    n_client / n AS client_error_rate, n_server / n AS server_error_rate,
    {p50} AS p50, {p75} AS p75, {p95} AS p95, {p99} AS p99, {apdex} AS apdex,
    duration_total / n AS mean_duration, request_bytes / n AS mean_request_size,
    response_bytes / n AS mean_response_size
FROM
(
    SELECT method, route, sum(requests) AS n,
        sumIf(requests, status BETWEEN 400 AND 499
              AND (app, method, route) NOT IN (SELECT app, method, route FROM expected_client_errors)) AS n_client,
        sumIf(requests, status >= 500) AS n_server, {buckets} AS buckets,
        sum(duration_sum) AS duration_total, sum(request_size_sum) AS request_bytes,
        sum(response_size_sum) AS response_bytes
    FROM {table}
    WHERE app = {{app:String}} AND ('' = '' OR env = '')
      AND {column} >= {{from:DateTime}} AND {column} < {{to:DateTime}}
    GROUP BY method, route
)
ORDER BY requests DESC, route, method LIMIT {{limit:UInt64}}
"""
UDFS = {
    **{f"p{round(q * 100)}": f"tallyhub_quantile({q}, buckets, n)" for q in (0.5, 0.75, 0.95, 0.99)},
    "apdex": "tallyhub_apdex({apdex_t:Float64}, buckets, n)",
}
# The same results in O(k log k) per row instead of O(k^2): the UDFs look every bucket up by key
# (buckets[k], a linear search in a Map) inside arrayMap over the keys.
_ZEROS = "(n - arraySum(mapValues(buckets)))"
_SORTED_COUNTS = "arraySort((v, k) -> k, mapValues(buckets), mapKeys(buckets))"
_QUANTILE = (
    "if(n = 0, nan, if({q} * n <= " + _ZEROS + ", 0., pow(2., (arraySort(mapKeys(buckets))[arrayFirstIndex("
    "c -> c >= {q} * n - " + _ZEROS + ", arrayCumSum(" + _SORTED_COUNTS + "))] + 0.5) / 32)))"
)
_LE = (
    "("
    + _ZEROS
    + " + arraySum((k, v) -> if(pow(2., (k + 0.5) / 32) <= {t}, v, 0), mapKeys(buckets), mapValues(buckets)))"
)
LINEAR = {
    **{f"p{round(q * 100)}": _QUANTILE.format(q=q) for q in (0.5, 0.75, 0.95, 0.99)},
    "apdex": "if(n = 0, nan, ("
    + _LE.format(t="{apdex_t:Float64}")
    + " + "
    + _LE.format(t="4 * {apdex_t:Float64}")
    + ") / (2 * n))",
}
# Neither percentiles nor Apdex, but the histograms still merged (an unused sumMap would be optimized away).
NO_PERCENTILES = {name: "0" for name in UDFS} | {"p50": "length(buckets)"}


def overview_sql(
    table: str, column: str, functions: Mapping[str, str], buckets: str = "sumMap(duration_buckets)"
) -> str:
    return OVERVIEW_SQL.format(table=table, column=column, buckets=buckets, **functions)


def whole_days(wins: Mapping[str, Window]) -> dict[str, Any]:
    """The parameters of 30 whole days up to the end of today (as the daily rollup can answer)."""
    to_day = wins["365d"].end
    return {
        **report_parameters(wins["30d"]),
        "from": int((to_day - dt.timedelta(days=30)).timestamp()),
        "to": int(to_day.timestamp()),
    }


def extra_queries(runner: ClientRunner, wins: Mapping[str, Window]) -> list[Query]:
    month, year, days = report_parameters(wins["30d"]), report_parameters(wins["365d"]), whole_days(wins)
    return [
        sql_query(runner, "12-month trend: `traffic_daily`", f"SELECT * FROM traffic_daily({VIEW_ARGS})", year),
        sql_query(
            runner,
            "30-day endpoint overview from the minute table (`endpoint_overview`)",
            section_sql("endpoints", MINUTE, every_env=True),
            month,
        ),
        sql_query(
            runner,
            "30-day overview, hourly, as the view (its SQL written out, with the UDFs)",
            overview_sql("requests_hourly", "hour", UDFS),
            month,
        ),
        sql_query(
            runner,
            "30-day overview, hourly, the UDFs rewritten without the per-key Map lookups",
            overview_sql("requests_hourly", "hour", LINEAR),
            month,
        ),
        sql_query(
            runner,
            "30-day overview, hourly, no percentiles / Apdex (sums + sumMap)",
            overview_sql("requests_hourly", "hour", NO_PERCENTILES),
            month,
        ),
        sql_query(
            runner,
            "30-day overview, hourly, sums only (no sumMap)",
            overview_sql("requests_hourly", "hour", dict.fromkeys(UDFS, "0"), buckets="0"),
            month,
        ),
        sql_query(
            runner,
            "30-day overview from the daily rollup (30 whole days), with the UDFs",
            overview_sql("requests_daily", "day", UDFS),
            days,
        ),
    ]


def same_results(runner: ClientRunner, a: Query, b: Query) -> bool:
    """Same endpoints, counts, percentiles and Apdex (the means may differ in the last bit: float sums
    in another order)."""

    def rows(q: Query) -> list[Any]:
        out = runner.raw(q.sql or "", q.parameters, fmt="JSONCompactEachRow", readonly=True)
        return [[*r[:3], *r[8:13]] for r in (json.loads(line) for line in out.decode().splitlines() if line.strip())]

    return rows(a) == rows(b)


def window_rows(client: Any, wins: Mapping[str, Window]) -> list[str]:
    """How many rows each report window covers, per table."""
    out = []
    for since, table, column in (("1h", "requests", "minute"), ("30d", "requests", "minute"),
                                 ("30d", "requests_hourly", "hour"), ("365d", "requests_daily", "day")):  # fmt: skip
        n = client.command(
            f"SELECT count() FROM {table} WHERE app = {{app:String}} AND {column} >= {{from:DateTime}} "
            f"AND {column} < {{to:DateTime}}",
            parameters={"app": APP, **wins[since].parameters()},
        )
        out.append(f"{since} in `{table}`: {int(n):,}")
    return out


def timing_table(timings: list[Timing]) -> list[str]:
    out = [
        "| query | rows out | cold ms | median ms | max ms | runs | engine ms (1 run) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        engine = "-" if t.engine_ms is None else f"{t.engine_ms:,.1f}"
        out.append(
            f"| {t.name} | {t.rows:,} | {t.cold_ms:,.1f} | **{t.median_ms:,.1f}** | {t.max_ms:,.1f} | "
            f"{len(t.warm_ms)} | {engine} |"
        )
    return out


def run_queries(client: Any, queries: list[Query], runs: int, slow_ms: float) -> list[Timing]:
    """Each query once (cold), then ``runs`` rounds of all of them in turn (interleaved: a slower or
    faster phase of this shared VM hits them alike), 3 rounds only for those whose cold run took
    ``slow_ms`` or more; then each once more, untimed, for the engine's own elapsed time (chDB's)."""
    timings = []
    for query in queries:
        t0 = time.perf_counter()
        rows = query.run()
        timings.append(Timing(query.name, (time.perf_counter() - t0) * 1000, [], rows))
    for round_ in range(runs):
        for query, timing in zip(queries, timings, strict=True):
            if round_ >= 3 and timing.cold_ms >= slow_ms:
                continue
            t0 = time.perf_counter()
            query.run()
            timing.warm_ms.append((time.perf_counter() - t0) * 1000)
    for query, timing in zip(queries, timings, strict=True):
        if query.sql is not None:
            parameters = dict(query.parameters or {})
            summary = client.query(query.sql, parameters=parameters, settings={"readonly": 1}).summary
            timing.engine_ms = int(summary.get("elapsed_ns", 0)) / 1e6
        progress(f"  {query.name}: cold {timing.cold_ms:.0f} ms, median {timing.median_ms:.0f} ms")
    return timings


# --------------------------------------------------------------------------------------------
# Storage.


def parts(client: Any) -> dict[str, tuple[int, int, int, int, int]]:
    """table -> (active parts, rows, bytes on disk, compressed, uncompressed)."""
    result = client.query(
        "SELECT table, count(), sum(rows), sum(bytes_on_disk), sum(data_compressed_bytes), "
        "sum(data_uncompressed_bytes) FROM system.parts WHERE database = currentDatabase() AND active "
        "GROUP BY table"
    ).result_rows
    return {r[0]: tuple(int(x) for x in r[1:]) for r in result}


def storage_table(found: Mapping[str, tuple[int, int, int, int, int]], minute_rows: int) -> list[str]:
    out = [
        "| table | parts | rows | on disk MB | compressed MB | uncompressed MB | ratio | bytes/row on disk | "
        "bytes per minute-row |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    total = 0
    for table in TABLES:
        if table not in found:
            continue
        n_parts, rows, disk, compressed, uncompressed = found[table]
        total += disk
        out.append(
            f"| `{table}` | {n_parts} | {rows:,} | {disk / 1e6:,.1f} | {compressed / 1e6:,.1f} | "
            f"{uncompressed / 1e6:,.1f} | {uncompressed / max(compressed, 1):.1f}x | {disk / max(rows, 1):,.1f} | "
            f"{disk / max(minute_rows, 1):,.1f} |"
        )
    out.append(f"| all of these | | | {total / 1e6:,.1f} | | | | | {total / max(minute_rows, 1):,.1f} |")
    return out


def column_table(client: Any) -> list[str]:
    result = client.query(
        "SELECT column, sum(column_data_compressed_bytes) AS c, sum(column_data_uncompressed_bytes) AS u, "
        "sum(rows) FROM system.parts_columns WHERE database = currentDatabase() AND table = 'requests' AND active "
        "GROUP BY column ORDER BY c DESC"
    ).result_rows
    total = sum(r[1] for r in result) or 1
    out = [
        "| `requests` column | compressed MB | share | bytes/row | uncompressed bytes/row |",
        "|---|---:|---:|---:|---:|",
    ]
    for column, compressed, uncompressed, rows in result:
        out.append(
            f"| `{column}` | {compressed / 1e6:,.2f} | {compressed / total:.0%} | {compressed / max(rows, 1):.2f} | "
            f"{uncompressed / max(rows, 1):.1f} |"
        )
    return out


def optimize(client: Any) -> list[str]:
    out = []
    for table in TABLES:
        t0 = time.perf_counter()
        client.command(f"OPTIMIZE TABLE {table} FINAL")
        out.append(f"{table} {time.perf_counter() - t0:.1f} s")
        progress(f"  OPTIMIZE TABLE {table} FINAL: {out[-1]}")
    return out


# Experiments, not in tallyhub: coarser rollups for the two queries over the targets, filled from the
# existing rollups with INSERT ... SELECT (tallyhub would keep them with materialized views).
ENDPOINT_ROLLUP = """
CREATE TABLE x_endpoint_{level}
(
    {column}          DateTime('UTC') CODEC(Delta, ZSTD),
    app               LowCardinality(String),
    env               LowCardinality(String),
    method            LowCardinality(String),
    route             String,
    status            UInt16,
    requests          SimpleAggregateFunction(sum, UInt64),
    duration_sum      SimpleAggregateFunction(sum, Float64),
    duration_buckets  SimpleAggregateFunction(sumMap, Map(Int32, UInt64)),
    request_size_sum  SimpleAggregateFunction(sum, Float64),
    response_size_sum SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM({column})
ORDER BY (app, env, {column}, route, method, status)
"""
ENDPOINT_ROLLUP_FILL = """
INSERT INTO x_endpoint_{level}
SELECT {column}, app, env, method, route, status, sum(requests), sum(duration_sum), sumMap(duration_buckets),
       sum(request_size_sum), sum(response_size_sum)
FROM requests_{level} GROUP BY {column}, app, env, method, route, status
"""
APP_DAILY = """
CREATE TABLE x_app_daily
(
    day              DateTime('UTC') CODEC(Delta, ZSTD),
    app              LowCardinality(String),
    env              LowCardinality(String),
    status           UInt16,
    requests         SimpleAggregateFunction(sum, UInt64),
    duration_buckets SimpleAggregateFunction(sumMap, Map(Int32, UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (app, env, day, status)
"""
APP_DAILY_FILL = """
INSERT INTO x_app_daily
SELECT day, app, env, status, sum(requests), sumMap(duration_buckets) FROM requests_daily GROUP BY day, app, env, status
"""
TREND_SQL = """
SELECT time, n AS requests, n_server AS server_errors, {p95} AS p95
FROM
(
    SELECT day AS time, sum(requests) AS n, sumIf(requests, status >= 500) AS n_server, {buckets} AS buckets
    FROM {table}
    WHERE app = {{app:String}} AND ('' = '' OR env = '') AND day >= {{from:DateTime}} AND day < {{to:DateTime}}
    GROUP BY time
)
ORDER BY time
"""


def experiment(client: Any, create: str, fill: str, table: str) -> str:
    t0 = time.perf_counter()
    client.command(create)
    client.command(fill)
    client.command(f"OPTIMIZE TABLE {table} FINAL")
    _, rows, disk, _, _ = parts(client)[table]
    return f"`{table}`: {rows:,} rows, {disk / 1e6:,.1f} MB on disk, filled in {time.perf_counter() - t0:.1f} s"


def fill_year(client: Any) -> int:
    """Copy the daily rollup's rows 11 times, 30 days further back each: 12 x 30 days of day rows."""
    columns = (
        "app, env, service, consumer, method, route, status, requests, duration_sum, duration_min, duration_max, "
        "duration_buckets, request_size_sum, request_size_buckets, response_size_sum, response_size_buckets"
    )
    before = int(client.command("SELECT count() FROM requests_daily"))
    client.command(
        f"INSERT INTO requests_daily (day, {columns}) SELECT day - toIntervalDay(30 * k), {columns} "
        f"FROM requests_daily ARRAY JOIN range(1, 12) AS k WHERE app = '{APP}'"
    )
    return int(client.command("SELECT count() FROM requests_daily")) - before


def column_alternatives(client: Any, days: int = 7) -> list[str]:
    """Bytes per row of the costliest columns of `requests`, and of other encodings of the same values,
    on the last ``days`` days (copied in the same order into a scratch table, merged)."""
    client.command(
        "CREATE TABLE x_columns (app LowCardinality(String), env LowCardinality(String), minute DateTime('UTC'), "
        "route String, method LowCardinality(String), status UInt16, "
        "duration_f64 Float64, duration_gorilla Float64 CODEC(Gorilla, ZSTD), duration_f32 Float32, "
        "duration_us UInt32 CODEC(T64, ZSTD), min_bucket Int16, "
        "consumer_lc LowCardinality(String), route_lc LowCardinality(String), instance_lc LowCardinality(String)) "
        "ENGINE = MergeTree ORDER BY (app, env, minute, route, method, status)"
    )
    client.command(
        "INSERT INTO x_columns SELECT app, env, minute, route, method, status, duration_sum, duration_sum, "
        "duration_sum, toUInt32(round(duration_sum * 1e6)), toInt16(ceil(log2(duration_min) * 32) - 1), "
        f"consumer, route, instance FROM requests WHERE minute >= now() - INTERVAL {days} DAY"
    )
    client.command("OPTIMIZE TABLE x_columns FINAL")
    size = {
        (table, column): compressed / max(rows, 1)
        for table, column, compressed, rows in client.query(
            "SELECT table, column, sum(column_data_compressed_bytes), sum(rows) FROM system.parts_columns "
            "WHERE database = currentDatabase() AND table IN ('requests', 'x_columns') AND active "
            "GROUP BY table, column"
        ).result_rows
    }
    single = client.command("SELECT avg(requests = 1) FROM requests")
    client.command("DROP TABLE x_columns")
    rows = [
        ("a duration as stored: `Float64` (`duration_sum`, `_min`, `_max` alike)", "x_columns", "duration_f64"),
        ("... `Float64 CODEC(Gorilla, ZSTD)`", "x_columns", "duration_gorilla"),
        ("... `Float32`", "x_columns", "duration_f32"),
        ("... integer microseconds, `UInt32 CODEC(T64, ZSTD)`", "x_columns", "duration_us"),
        ("... its scale-5 bucket index, `Int16` (what min/max are good for at 2 %)", "x_columns", "min_bucket"),
        ("`consumer` as stored (`String`)", "requests", "consumer"),
        ("... `LowCardinality(String)`", "x_columns", "consumer_lc"),
        ("`route` as stored (`String`)", "requests", "route"),
        ("... `LowCardinality(String)`", "x_columns", "route_lc"),
        ("`instance` as stored (`String`)", "requests", "instance"),
        ("... `LowCardinality(String)`", "x_columns", "instance_lc"),
    ]
    out = [
        f"Other encodings of the largest columns (the last {days} days of `requests` copied into a scratch table "
        f"in the same order; {float(single):.0%} of the rows hold a single request, whose min = max = sum):",
        "",
        "| column, encoded as | compressed bytes/row |",
        "|---|---:|",
    ]
    out += [f"| {label} | {size.get((table, column), float('nan')):.2f} |" for label, table, column in rows]
    return out


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=30.0, help="days of minute data ending now (default 30)")
    parser.add_argument(
        "--rows-per-minute",
        type=float,
        default=300.0,
        help="active (endpoint, status, consumer, instance) series per minute on average, i.e. `requests` rows "
        "per minute (default 300)",
    )
    parser.add_argument("--chunk-minutes", type=int, default=60, help="minutes of data per insert (default 60)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per query after the cold one (default 7)")
    parser.add_argument(
        "--runs-before", type=int, default=3, help="the same, for the queries before OPTIMIZE (default 3)"
    )
    parser.add_argument(
        "--slow-ms", type=float, default=1500.0, help="queries whose cold run exceeds this get 3 runs (default 1500)"
    )
    parser.add_argument("--no-year", dest="year", action="store_false", help="skip the 12-month daily-rollup step")
    parser.add_argument("--quick", action="store_true", help="3 days, 150 rows per minute, 3 runs per query")
    parser.add_argument("--wait-idle", type=float, default=10.0, help="minutes to wait for other benchmarks to end")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary chDB directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.days, args.rows_per_minute = min(args.days, 3.0), min(args.rows_per_minute, 150.0)
        args.runs = args.runs_before = 3
    started = time.monotonic()
    idle = wait_until_idle(args.wait_idle)
    progress(idle)
    work = Path(tempfile.mkdtemp(prefix="tallyhub-storage-bench-"))
    client = open_client(f"chdb://{work}", "tallyhub", create=True)
    # The report's queries go through a read-only client of their own, as in the hub (see open_client).
    reader = open_client(f"chdb://{work}", "tallyhub", readonly=True)
    try:
        return run(args, client, reader, idle, started)
    finally:
        reader.close()
        client.close()
        if args.keep:
            progress(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, client: Any, reader: Any, idle: str, started: float) -> int:
    migrate(client)
    create_app(ClientRunner(client), APP, hashlib.sha256(b"bench-key").hexdigest())
    runner = ClientRunner(client, reader)
    clickhouse = client.command("SELECT version()")
    max_threads = client.command("SELECT getSetting('max_threads')")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    end_minute = int(now.timestamp()) // 60  # the current minute is not in the data
    minutes = int(args.days * 1440)
    first_minute = end_minute - minutes

    progress("calibrating the request rate")
    traffic = Traffic(args.rows_per_minute, args.seed)
    progress(
        f"{len(traffic.endpoints)} endpoints, {traffic.consumers} consumers, {traffic.cells:,} (endpoint, status, "
        f"consumer) series x {traffic.instances_per_deploy} instances; {traffic.rate:,.0f} requests/min on average "
        f"for {args.rows_per_minute:g} active series/min"
    )
    progress(
        f"generating and inserting {args.days:g} days ({minutes:,} minutes), one insert per {args.chunk_minutes} min"
    )
    t0 = time.perf_counter()
    other = OtherLoad()
    loaded = load(client, traffic, first_minute, minutes, args.chunk_minutes)
    other.phase("load")
    load_s = time.perf_counter() - t0
    n_rows = loaded.rows["requests"]
    insert_s = sum(loaded.insert_s)
    progress(f"loaded {n_rows:,} rows in {load_s:.0f} s (generate {loaded.generate_s:.0f} s, insert {insert_s:.0f} s)")

    wins = windows(now)
    queries = report_queries(runner, wins) + extra_queries(runner, wins)
    live_parts = parts(client)
    progress("queries before OPTIMIZE")
    before = run_queries(reader, queries, args.runs_before, args.slow_ms)
    other.phase("queries before OPTIMIZE")
    progress("OPTIMIZE TABLE ... FINAL")
    optimized = optimize(client)
    merged_parts = parts(client)
    other.phase("OPTIMIZE")
    progress("queries after OPTIMIZE")
    after = run_queries(reader, queries, args.runs, args.slow_ms)
    other.phase("queries after OPTIMIZE")
    explain = "\n".join(
        row[0]
        for row in client.query(
            "EXPLAIN indexes = 1 SELECT * FROM endpoint_overview_hourly(app='bench', env='', "
            "from={from:DateTime}, to={to:DateTime}, apdex_t=0.5)",
            parameters=wins["30d"].parameters(),
        ).result_rows
    ).splitlines()
    columns = column_table(client)
    covered = window_rows(client, wins)
    named = {q.name: q for q in queries}
    same = same_results(
        runner,
        named["30-day overview, hourly, as the view (its SQL written out, with the UDFs)"],
        named["30-day overview, hourly, the UDFs rewritten without the per-key Map lookups"],
    )
    progress("experiment: rollups per endpoint (without consumer and service)")
    experiments = [
        experiment(
            client,
            ENDPOINT_ROLLUP.format(level=level, column=column),
            ENDPOINT_ROLLUP_FILL.format(level=level, column=column),
            f"x_endpoint_{level}",
        )
        for level, column in (("hourly", "hour"), ("daily", "day"))
    ]
    month, year_parameters, days = report_parameters(wins["30d"]), report_parameters(wins["365d"]), whole_days(wins)
    tried = run_queries(
        reader,
        [
            sql_query(
                runner, f"30-day endpoint overview from `{table}`, {how}", overview_sql(table, column, udfs), window
            )
            for table, column, window in (
                ("x_endpoint_hourly", "hour", month),
                ("requests_daily", "day", days),
                ("x_endpoint_daily", "day", days),
            )
            for how, udfs in (("with the UDFs", UDFS), ("UDFs rewritten", LINEAR))
            if (table, how) != ("requests_daily", "with the UDFs")  # in the table above
        ],
        args.runs,
        args.slow_ms,
    )
    alternatives = column_alternatives(client)
    year: list[Timing] = []
    year_rows = 0
    if args.year:
        progress("12 months of daily rows (copied back 11 x 30 days)")
        year_rows = fill_year(client)
        year_queries = [q for q in report_queries(runner, {"365d": wins["365d"]}) if "consumers" not in q.name]
        year_queries += [q for q in extra_queries(runner, wins) if q.name.startswith("12-month")]
        year_queries += [
            sql_query(
                runner,
                "12-month trend, `traffic_daily`'s SQL with the p95 UDF rewritten",
                TREND_SQL.format(p95=LINEAR["p95"], buckets="sumMap(duration_buckets)", table="requests_daily"),
                year_parameters,
            ),
            sql_query(
                runner,
                "12-month trend without p95 (no sumMap), from `requests_daily`",
                TREND_SQL.format(p95="0", buckets="0", table="requests_daily"),
                year_parameters,
            ),
        ]
        year = run_queries(reader, year_queries, args.runs, args.slow_ms)
        progress("experiment: a daily rollup per app and status")
        experiments.append(experiment(client, APP_DAILY, APP_DAILY_FILL, "x_app_daily"))
        tried += run_queries(
            reader,
            [
                sql_query(
                    runner,
                    "12-month trend from `x_app_daily`, with the p95 UDF",
                    TREND_SQL.format(p95=UDFS["p95"], buckets="sumMap(duration_buckets)", table="x_app_daily"),
                    year_parameters,
                ),
                sql_query(
                    runner,
                    "12-month trend from `x_app_daily`, p95 rewritten",
                    TREND_SQL.format(p95=LINEAR["p95"], buckets="sumMap(duration_buckets)", table="x_app_daily"),
                    year_parameters,
                ),
            ],
            args.runs,
            args.slow_ms,
        )

    # ---- the report
    other.phase("experiments and 12 months")
    by_name = {t.name: t for t in after}
    overview = by_name["30 days (hour): endpoints"]
    trend = next(t for t in (year or after) if t.name.startswith("12-month trend"))
    wall = time.monotonic() - started
    command = " ".join(["python benchmarks/storage.py", *sys.argv[1:]])
    out = [
        "## Storage and queries: `storage.py`",
        "",
        f"Run of {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, `{command}`, {wall / 60:.1f} min.",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}, "
        f"load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())} at the end; before: {idle}; "
        f"CPU cores used by other processes on average during: {', '.join(other.phases)}",
        f"- {versions()}; ClickHouse {clickhouse} (embedded chDB), max_threads "
        f"{max_threads}",
        f"- Data: {args.days:g} days ending {now:%Y-%m-%d %H:%M} UTC for app `{APP}`, env `{ENV}`: "
        f"{len(traffic.endpoints)} endpoints, 5 statuses, {traffic.consumers} consumers, "
        f"{traffic.instances_per_deploy} instances replaced every 3 days; {traffic.cells:,} possible (endpoint, "
        f"status, consumer) series (x2 instances), **{n_rows / minutes:,.0f} active series = `requests` rows per "
        f"minute** on average (asked {args.rows_per_minute:g}), {loaded.requests / minutes:,.0f} requests per minute "
        f"({loaded.requests:,} in all, {loaded.requests / n_rows:.1f} per row)",
        "- Rows inserted: "
        + ", ".join(f"`{t}` {n:,}" for t, n in loaded.rows.items())
        + f"; bucket indices checked against `bucket_index` on {loaded.checked:,} values: "
        f"{loaded.mismatches} mismatches",
        f"- Load: {loaded.inserts} `insert_batch` calls ({args.chunk_minutes} min of data each); generation "
        f"{loaded.generate_s:.0f} s ({n_rows / loaded.generate_s:,.0f} rows/s, numpy), **insert {insert_s:.0f} s "
        f"= {n_rows / insert_s:,.0f} `requests` rows/s** (with the other tables and both materialized views; "
        f"per insert median {statistics.median(loaded.insert_s) * 1000:.0f} ms, max "
        f"{max(loaded.insert_s) * 1000:.0f} ms); end to end {n_rows / load_s:,.0f} rows/s",
        f"- Report windows (`resolve_window` at {now:%H:%M}): "
        + "; ".join(f"{s}: {w.start:%Y-%m-%d %H:%M} to {w.end:%m-%d %H:%M} ({w.level.name})" for s, w in wins.items())
        + ". Rows in the windows (after OPTIMIZE): " + ", ".join(covered),
        "",
        f"**30-day endpoint overview: median {overview.median_ms:.0f} ms after OPTIMIZE (target "
        f"{TARGET_30D_MS:.0f} ms: {'met' if overview.median_ms <= TARGET_30D_MS else 'missed'}), "
        f"{by_name_before(before, overview.name).median_ms:.0f} ms before. 12-month trend (`traffic_daily`"
        f"{', 12 months of day rows' if year else ', 30 days of data'}): median {trend.median_ms:.0f} ms (target "
        f"{TARGET_12M_MS:.0f} ms: {'met' if trend.median_ms <= TARGET_12M_MS else 'missed'}). Storage: "
        f"{merged_parts['requests'][2] / n_rows:.1f} bytes on disk per minute-row in `requests`.**",
        "",
        "### Queries right after the load (unmerged parts)",
        "",
        "Active parts: " + ", ".join(f"`{t}` {live_parts[t][0]}" for t in TABLES if t in live_parts),
        "",
        *timing_table(before),
        "",
        "### Queries after `OPTIMIZE TABLE ... FINAL`",
        "",
        "OPTIMIZE: " + ", ".join(optimized) + ". Active parts: "
        + ", ".join(f"`{t}` {merged_parts[t][0]}" for t in TABLES if t in merged_parts),
        "",
        *timing_table(after),
        "",
        f"The rewritten percentile/Apdex expressions give the same rows as the UDFs: {'yes' if same else 'NO'}.",
        "",
    ]  # fmt: skip
    if year:
        out += [
            f"### 12 months of daily rows ({year_rows:,} day rows copied back 11 x 30 days, not merged)",
            "",
            *timing_table(year),
            "",
        ]
    out += [
        "### Experiments: coarser rollups (not in tallyhub)",
        "",
        "Filled from the rollups with INSERT ... SELECT, then OPTIMIZE: " + "; ".join(experiments) + ". "
        "The daily ones over 30 whole days (to the end of today), the hourly one over the report's window.",
        "",
        *timing_table(tried),
        "",
        "### Storage",
        "",
        f"Right after the load ({sum(p[0] for p in live_parts.values())} active parts):",
        "",
        *storage_table(live_parts, n_rows),
        "",
        "After OPTIMIZE FINAL:",
        "",
        *storage_table(merged_parts, n_rows),
        "",
        *columns,
        "",
        *alternatives,
        "",
        "<details><summary>EXPLAIN indexes = 1 of the 30-day overview</summary>",
        "",
        "```",
        *(line[:160] for line in explain if not line.startswith("Output:")),
        "```",
        "",
        "</details>",
    ]
    print("\n".join(out))
    return 0


def by_name_before(timings: list[Timing], name: str) -> Timing:
    return next(t for t in timings if t.name == name)


if __name__ == "__main__":
    raise SystemExit(main())
