"""End-to-end ingest of the hub: data points per second from receipt to ClickHouse on one core, and
receipt-to-queryable latency.

    python benchmarks/ingest.py            # ~3.5-4 min on 2 cores
    python benchmarks/ingest.py --quick    # ~1.5 min: shorter phases, fewer payloads
    python benchmarks/ingest.py --help

1. Waits (up to ``--wait-idle`` minutes, polling every 30 s) until no other benchmark runs and the CPUs are
   idle; says in the output what it found.
2. Starts a real hub (``python -m tallyhub serve``, embedded chDB in a temporary data directory) pinned to
   one CPU (``sched_setaffinity`` before exec: every thread of the hub, ClickHouse's included, inherits
   it), and pins this process (the load generator) to the other one.
3. Precomputes ``--payloads`` distinct exports as tallyhub's client sends them: one resource each
   (``service.name``, its own ``service.instance.id``), ``--routes`` x ``--statuses`` series with
   ``--requests-per-series`` requests each, recorded through a real ``RequestAggregator``, collected as
   delta exponential histograms of the three request metrics and encoded with the OTLP encoder; the data
   points of each are counted from the encoded request.
4. Phase ``saturated``: ``--senders`` threads, each with its own gRPC channel, send raw unary exports
   (``request_serializer=None``, ``x-tallyhub-app-key``, a fresh ``x-tallyhub-batch-id`` per export) as
   fast as the hub acknowledges, for ``--seconds``; then it waits until the hub has processed every
   export it acknowledged. Receipt → ClickHouse = data points acknowledged / (all stored - first send).
5. Phases ``paced-*``: the same senders at fixed rates, by default ``--paced-fractions`` of that
   end-to-end rate, for ``--paced-seconds`` each.
6. In every phase a probe thread sends a one-request export on a unique route (``/probe/<phase>/<n>``)
   every ``--probe-interval`` s under a second app, and a poller asks the hub's loopback query endpoint
   (url and token from ``hub.json``, as ``tallyhub sql`` does) every ``--poll-interval`` s which probes the
   ``requests`` table shows: latency = the answer of the first query that shows a probe - its send time.
7. Unless ``--no-profile``: after the hub stopped, the receiver, the conversion and the insert are timed
   one by one in this process on the same exports (cProfile for the conversion and the insert).

Stored data points = 3 x the rows the phase added to ``requests`` (one row per series and export, merging
its three metrics' points), checked against the acknowledged points and requests. Markdown goes to stdout
(the machine, each phase, the profile, a summary), progress to stderr.
"""

from __future__ import annotations

import os
import sys

from machine import cpu_model, progress


def _pin_self() -> str:
    """Pin this process to CPU 0 before any thread exists (threads inherit the calling thread's mask)."""
    if "--help" in sys.argv or "-h" in sys.argv:
        return ""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or "--no-pin" in sys.argv:
            return f"not pinned (CPUs allowed: {cpus})"
        os.sched_setaffinity(0, {cpus[0]})
        return f"CPU {cpus[0]}"
    except (AttributeError, OSError) as exc:
        return f"not pinned ({exc})"


SELF_PINNING = _pin_self()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import datetime as dt  # noqa: E402
import io  # noqa: E402
import itertools  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import grpc  # noqa: E402
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics  # noqa: E402
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (  # noqa: E402
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # noqa: E402

from tallyhub import __version__  # noqa: E402
from tallyhub.collector_processor.query_api import HubRunner  # noqa: E402
from tallyhub.collector_processor.receive.auth import generate_key, hash_key  # noqa: E402
from tallyhub.instrumentation.aggregator import RequestAggregator  # noqa: E402
from tallyhub.storage.apps import create_app  # noqa: E402
from tallyhub.wire import DURATION  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
METRICS_EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LOAD_APP = "ingest-load"
PROBE_APP = "ingest-probe"
OTEL_COLLECTOR_DP_PER_CORE = 20_000
"""The OpenTelemetry Collector's published sizing: about 20 000 data points per second per core."""
TARGET_DP_S = 150_000
"""Data points/s from receipt to ClickHouse, per CPU the hub may use (issue 14)."""
TARGET_P99_S = 2.0
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
OTHER_BENCHMARKS = ("resilience:make_app",)
"""Besides any ``benchmarks/*.py``: what other benchmarks run (the apps resilience.py serves)."""
IDLE_BUSY_CORES = 0.3
"""The machine counts as idle below this many busy cores (sampled over 3 s, this process excluded)."""


# --------------------------------------------------------------------------------------------
# The machine.


def versions() -> str:
    names = ["chdb", "clickhouse-connect", "grpcio", "protobuf", "opentelemetry-sdk"]
    out = [f"tallyhub {__version__}"]
    for name in names:
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    with contextlib.suppress(Exception):
        from google.protobuf.internal import api_implementation

        out[-2] += f" ({api_implementation.Type()})"
    return ", ".join(out)


def other_benchmarks() -> dict[int, str]:
    """pid -> command line of the other benchmark processes on this machine (this repo's ``benchmarks/*.py``
    and the apps they start), this process and its ancestors excepted."""
    found = {}
    mine = own_lineage()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in mine:
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if re.search(r"benchmarks/\w+\.py", cmdline) or any(name in cmdline for name in OTHER_BENCHMARKS):
            found[int(proc.name)] = cmdline[:160]
    return found


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


def busy_cores(seconds: float = 3.0) -> float:
    """Busy cores of the machine over ``seconds``, this process's own CPU excluded."""
    (b0, _, t0), c0 = system_ticks(), os.times()
    time.sleep(seconds)
    (b1, _, t1), c1 = system_ticks(), os.times()
    own = (c1.user + c1.system - c0.user - c0.system) / TICK_S
    return max(b1 - b0 - own, 0) / max(t1 - t0, 1) * (os.cpu_count() or 1)


def wait_until_idle(minutes: float) -> str:
    """Wait (polling every 30 s, up to ``minutes``) while another benchmark runs or the CPUs are busy."""
    deadline = time.monotonic() + minutes * 60
    started = time.monotonic()
    confirmed = False
    while True:
        candidates = other_benchmarks()
        before = {pid: cpu_ticks(pid) for pid in candidates}
        busy = busy_cores()
        # A benchmark that waits for the machine too (resilience.py --wait-idle ...) uses no CPU: not running.
        found = [f"{pid}: {cmd}" for pid, cmd in candidates.items() if cpu_ticks(pid) - before[pid] > 0.05 * 3 / TICK_S]
        waited = f" (after waiting {time.monotonic() - started:.0f} s)" if time.monotonic() - started > 10 else ""
        if not found and busy < IDLE_BUSY_CORES and not confirmed:
            confirmed = True  # look again in a few seconds: another waiting benchmark may have seen the same
            time.sleep(random.uniform(2.0, 6.0))
            continue
        if not found and busy < IDLE_BUSY_CORES:
            return f"no other benchmark running, {busy:.2f} busy cores over 3 s{waited}"
        confirmed = False
        if time.monotonic() >= deadline:
            what = "; ".join(found) if found else "no other benchmark"
            return f"NOT IDLE after {minutes:g} min of waiting: {what}, {busy:.2f} busy cores over 3 s"
        progress(f"waiting for the machine to be idle: {found[0] if found else f'{busy:.2f} busy cores'}")
        time.sleep(30)


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads) and of its child processes (the hub's receiver
    processes), in clock ticks."""
    total = 0
    for each in (pid, *children(pid)):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total


def children(pid: int) -> list[int]:
    """The running child processes of a process."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def thread_ticks(pid: int) -> dict[str, int]:
    """CPU ticks per thread of a process and its children, keyed by ``tid:name`` (Python threads are
    named ``python``, ClickHouse's after their pool; a receiver process's threads ``receiver process``)."""
    out = {}
    for each in (pid, *children(pid)):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{each}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    head, _, rest = (task / "stat").read_text().rpartition(")")
                    fields = rest.split()
                    name = head.partition("(")[2] if each == pid else "receiver process"
                    out[f"{task.name}:{name}"] = int(fields[11]) + int(fields[12])
    return out


THREAD_LABELS = {
    "Unknown": "`Unknown` (the processor thread: chDB renames a thread that inserts)",
    "python": "`python` (the hub's other Python threads: gRPC handlers, query endpoint)",
    "MergeMutate": "`MergeMutate` (ClickHouse's background merges)",
    "receiver process": "receiver processes (`--receivers`: gRPC, checks)",
}


def by_thread_name(before: dict[str, int], after: dict[str, int]) -> Counter[str]:
    """Ticks spent per thread name between two ``thread_ticks`` (threads that ended in between are missed)."""
    spent: Counter[str] = Counter()
    for key, ticks in after.items():
        spent[key.partition(":")[2]] += ticks - before.get(key, 0)
    return spent


def system_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) ticks of all CPUs since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal, user + nice + system + idle + iowait + irq + softirq + steal


def interrupt_ticks() -> int:
    """irq + softirq ticks of all CPUs since boot (loopback networking, block I/O completions)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return sum((values + [0] * 8)[5:7])


def process_ticks() -> dict[int, tuple[str, bool, int]]:
    """pid -> (command line or name, is a kernel thread, utime + stime ticks) of every process now."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            head, _, rest = (proc / "stat").read_text().rpartition(")")
            fields = rest.split()
            kernel = int(proc.name) == 2 or fields[1] == "2"
            name = head.partition("(")[2]
            if not kernel:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                name = f"`{cmdline[:70].replace('|', '/')}`" if cmdline else name
            out[int(proc.name)] = (name, kernel, int(fields[11]) + int(fields[12]))
    return out


def elsewhere(
    before: dict[int, tuple[str, bool, int]], after: dict[int, tuple[str, bool, int]], exclude: set[int]
) -> tuple[int, Counter[str]]:
    """(kernel-thread ticks, other processes' ticks by name) between two ``process_ticks``; processes that
    started and ended in between are missed."""
    kernel, others = 0, Counter()
    for pid, (name, is_kernel, ticks) in after.items():
        if pid in exclude:
            continue
        spent = ticks - before.get(pid, (name, is_kernel, 0))[2]
        if is_kernel:
            kernel += spent
        elif spent > 0:
            others[name] += spent
    return kernel, others


def thread_affinities(pid: int | str) -> tuple[int, set[str]]:
    """(threads, the distinct ``Cpus_allowed_list`` values among them) of a process."""
    lists = set()
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    for task in tasks:
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    lists.add(line.split(":", 1)[1].strip())
    return len(tasks), lists


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --------------------------------------------------------------------------------------------
# Exports, as tallyhub's client makes them.

RESOURCES = ("orders", "customers", "products", "invoices", "carts", "payments", "shipments", "users")
SHAPES = (
    "/api/v1/{r}",
    "/api/v1/{r}/{{id}}",
    "/api/v1/{r}/{{id}}/items",
    "/api/v1/{r}/search",
    "/api/v1/{r}/{{id}}/events",
)
STATUSES = (200, 201, 400, 404, 500)


@dataclass(frozen=True)
class Export:
    payload: bytes
    points: int
    """Data points in the encoded request (over all its metrics)."""
    requests: int
    """Requests counted by its duration histograms (what `sum(requests)` adds up to once stored)."""


def routes(n: int) -> list[str]:
    out = [shape.format(r=r) for shape in SHAPES for r in RESOURCES]
    while len(out) < n:
        out.append(f"/api/v2/extra/{len(out)}/{{id}}")
    return out[:n]


def count_export(payload: bytes) -> tuple[int, int]:
    """(data points, requests) of an encoded ExportMetricsServiceRequest."""
    request = ExportMetricsServiceRequest.FromString(payload)
    points = requests = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                data_points = getattr(metric, metric.WhichOneof("data")).data_points
                points += len(data_points)
                if metric.name == DURATION:
                    requests += sum(p.count for p in data_points)
    return points, requests


def build_export(
    index: int, route_names: list[str], statuses: tuple[int, ...], per_series: int, rng: random.Random
) -> Export:
    resource = Resource.create(
        {
            "service.name": f"shop-{RESOURCES[index % len(RESOURCES)]}",
            "service.instance.id": str(uuid.UUID(int=rng.getrandbits(128))),
            "deployment.environment.name": "bench",
        }
    )
    aggregator = RequestAggregator(resource, InstrumentationScope("tallyhub", __version__))
    now = time.time()
    for r, route in enumerate(route_names):
        median_s = 0.002 * (1.25 ** (r % 24))  # 2 ms .. ~0.4 s by route
        for status in statuses:
            method = "POST" if status == 201 else "GET"
            for _ in range(per_series):
                request_size = int(rng.lognormvariate(6, 0.8)) if method == "POST" else 0
                response_size = int(rng.lognormvariate(7.5, 1.0)) if status < 500 else 120
                duration = median_s * rng.lognormvariate(0, 0.6)
                aggregator.record(method, route, status, duration, request_size, response_size, now)
    data = aggregator.collect()
    assert data is not None
    payload = encode_metrics(data).SerializeToString()
    points, requests = count_export(payload)
    return Export(payload, points, requests)


def build_sdk_export(
    index: int, route_names: list[str], statuses: tuple[int, ...], per_series: int, rng: random.Random
) -> Export:
    """The same traffic recorded by the OpenTelemetry SDK itself, as an app instrumented by OpenTelemetry
    (not tallyhub) exports it: the semantic conventions' HTTP server histograms, with exponential
    bucket aggregation and delta temporality (cumulative exports, the SDK's default, are converted by the
    Python converters, whose rate the stage table shows)."""
    from opentelemetry.sdk.metrics import Histogram, MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation

    reader = InMemoryMetricReader(
        preferred_temporality={Histogram: AggregationTemporality.DELTA},
        preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation()},
    )
    resource = Resource.create(
        {
            "service.name": f"shop-{RESOURCES[index % len(RESOURCES)]}",
            "service.instance.id": str(uuid.UUID(int=rng.getrandbits(128))),
            "deployment.environment.name": "bench",
        }
    )
    meter = MeterProvider(resource=resource, metric_readers=[reader]).get_meter("bench")
    duration = meter.create_histogram("http.server.request.duration", unit="s")
    request_size = meter.create_histogram("http.server.request.body.size", unit="By")
    response_size = meter.create_histogram("http.server.response.body.size", unit="By")
    for r, route in enumerate(route_names):
        median_s = 0.002 * (1.25 ** (r % 24))
        for status in statuses:
            method = "POST" if status == 201 else "GET"
            attrs = {"http.request.method": method, "http.route": route, "http.response.status_code": status}
            for _ in range(per_series):
                duration.record(median_s * rng.lognormvariate(0, 0.6), attrs)
                request_size.record(int(rng.lognormvariate(6, 0.8)) if method == "POST" else 0, attrs)
                response_size.record(int(rng.lognormvariate(7.5, 1.0)) if status < 500 else 120, attrs)
    data = reader.get_metrics_data()
    assert data is not None
    payload = encode_metrics(data).SerializeToString()
    points, requests = count_export(payload)
    return Export(payload, points, requests)


def probe_export(route: str) -> Export:
    """One request on a unique route: one series, three data points."""
    resource = Resource.create({"service.name": "probe", "service.instance.id": "probe"})
    aggregator = RequestAggregator(resource, InstrumentationScope("tallyhub", __version__))
    aggregator.record("GET", route, 200, 0.001, 0, 10, time.time())
    data = aggregator.collect()
    assert data is not None
    payload = encode_metrics(data).SerializeToString()
    return Export(payload, *count_export(payload))


# --------------------------------------------------------------------------------------------
# The hub.


class HubProcess:
    def __init__(self, work: Path, cpus: set[int] | None, receivers: int = 0) -> None:
        self.data_dir = work / "hub-data"
        self.log = work / "hub.log"
        self.grpc_port = free_port()
        self.cpus = cpus
        cmd = [sys.executable, "-m", "tallyhub", "serve", "--grpc-address", f"127.0.0.1:{self.grpc_port}"]
        cmd += ["--receivers", str(receivers)]
        cmd += ["--http-address", "", "--query-address", f"127.0.0.1:{free_port()}", "--log-level", "WARNING"]
        cmd += ["--dashboard-address", "off"]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, "TALLYHUB_DATA_DIR": str(self.data_dir)},
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus is not None else None,
        )
        self.runner: HubRunner | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 120.0) -> HubRunner:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the hub exited ({self.proc.returncode}): {self.log_tail()}")
            runner = HubRunner.find(self.data_dir)
            if runner is not None:
                runner.timeout_s = 120.0
                self.runner = runner
                return runner
            time.sleep(0.2)
        raise RuntimeError(f"the hub did not start in {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def status(self) -> dict[str, Any]:
        assert self.runner is not None
        return self.runner.status()

    def sql(self, query: str, **parameters: Any) -> list[list[str]]:
        assert self.runner is not None
        out = self.runner.raw(query, parameters, readonly=True).decode()
        return [line.split("\t") for line in out.splitlines() if line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                progress("the hub did not stop in 90 s: killing it")
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def counter(status: dict[str, Any], name: str) -> int:
    return int(status["counters"].get(name, 0))


def stored_per_app(hub: HubProcess) -> dict[str, tuple[int, int]]:
    """app -> (rows, sum(requests)) of the `requests` table."""
    rows = hub.sql("SELECT app, count(), sum(requests) FROM requests GROUP BY app")
    return {app: (int(n), int(r)) for app, n, r in rows}


# --------------------------------------------------------------------------------------------
# Load.


def channel(target: str) -> grpc.Channel:
    # Its own connection per sender (as separate client processes would have), not a shared subchannel.
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", 64 * 1024 * 1024)]
    return grpc.insecure_channel(target, options=options)


@dataclass
class Probe:
    route: str
    sent_ns: int
    points: int
    acked_ns: int = 0
    seen_query_ns: int = 0
    """When the first query that showed it was sent."""
    seen_ns: int = 0
    """When that query's answer came back."""


@dataclass
class Sample:
    t_ns: int
    status: dict[str, Any]
    hub_ticks: int


@dataclass
class Phase:
    name: str
    seconds: float
    rate_dp_s: float | None
    """None: closed loop (as fast as the hub acknowledges)."""
    exports: int = 0
    points: int = 0
    requests: int = 0
    rejected_points: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    send_latencies_ns: list[int] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    poll_queries: int = 0
    poll_query_ns: list[int] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    start_ns: int = 0
    load_end_ns: int = 0
    stored_ns: int = 0
    """When the hub had processed every export it acknowledged (the first status poll that showed it)."""
    drained: bool = False
    status_start: dict[str, Any] = field(default_factory=dict)
    status_load_end: dict[str, Any] = field(default_factory=dict)
    status_end: dict[str, Any] = field(default_factory=dict)
    ticks_start: int = 0
    ticks_load_end: int = 0
    ticks_end: int = 0
    threads_start: dict[str, int] = field(default_factory=dict)
    threads_end: dict[str, int] = field(default_factory=dict)
    self_cpu_s: float = 0.0
    system_start: tuple[int, int, int] = (0, 0, 0)
    system_end: tuple[int, int, int] = (0, 0, 0)
    interrupts: int = 0
    processes_start: dict[int, tuple[str, bool, int]] = field(default_factory=dict)
    processes_end: dict[int, tuple[str, bool, int]] = field(default_factory=dict)
    hub_children: set[int] = field(default_factory=set)
    """The hub's receiver processes during the phase (their CPU is the hub's)."""
    stored_before: dict[str, tuple[int, int]] = field(default_factory=dict)
    stored_after: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def probe_points(self) -> int:
        return sum(p.points for p in self.probes if p.acked_ns)

    @property
    def acked_exports(self) -> int:
        return self.exports + sum(1 for p in self.probes if p.acked_ns)


def run_phase(
    hub: HubProcess,
    args: argparse.Namespace,
    exports: list[Export],
    keys: dict[str, str],
    name: str,
    seconds: float,
    rate_dp_s: float | None,
) -> Phase:
    phase = Phase(name, seconds, rate_dp_s)
    target = f"127.0.0.1:{hub.grpc_port}"
    lock = threading.Lock()
    stop_load = threading.Event()
    stop_poll = threading.Event()
    mean_points = statistics.fmean(e.points for e in exports)
    slots = itertools.count()
    prefix = f"/probe/{name}/"

    def sender(index: int) -> None:
        ch = channel(target)
        call = ch.unary_unary(
            METRICS_EXPORT, request_serializer=None, response_deserializer=ExportMetricsServiceResponse.FromString
        )
        n = index
        try:
            while not stop_load.is_set():
                if rate_dp_s:
                    with lock:
                        slot = next(slots)
                    due = phase.start_ns + int(slot * mean_points / rate_dp_s * 1e9)
                    delay = (due - time.perf_counter_ns()) / 1e9
                    if delay > 0 and stop_load.wait(delay):
                        break
                export = exports[n % len(exports)]
                n += args.senders
                metadata = (("x-tallyhub-app-key", keys[LOAD_APP]), ("x-tallyhub-batch-id", uuid.uuid4().hex))
                t0 = time.perf_counter_ns()
                try:
                    response = call(export.payload, timeout=60, metadata=metadata)
                except grpc.RpcError as error:
                    with lock:
                        phase.errors[error.code().name] += 1
                    stop_load.wait(0.05)
                    continue
                t1 = time.perf_counter_ns()
                with lock:
                    phase.exports += 1
                    phase.points += export.points
                    phase.requests += export.requests
                    phase.rejected_points += response.partial_success.rejected_data_points
                    phase.send_latencies_ns.append(t1 - t0)
        finally:
            ch.close()

    def prober() -> None:
        ch = channel(target)
        call = ch.unary_unary(
            METRICS_EXPORT, request_serializer=None, response_deserializer=ExportMetricsServiceResponse.FromString
        )
        interval_ns = int(args.probe_interval * 1e9)
        next_ns = phase.start_ns + interval_ns // 2
        try:
            for n in itertools.count():
                if stop_load.wait(max(next_ns - time.perf_counter_ns(), 0) / 1e9):
                    break
                next_ns += interval_ns
                export = probe_export(f"{prefix}{n}")
                metadata = (("x-tallyhub-app-key", keys[PROBE_APP]), ("x-tallyhub-batch-id", uuid.uuid4().hex))
                probe = Probe(f"{prefix}{n}", time.perf_counter_ns(), export.points)
                with lock:
                    phase.probes.append(probe)
                try:
                    call(export.payload, timeout=60, metadata=metadata)
                    probe.acked_ns = time.perf_counter_ns()
                except grpc.RpcError as error:
                    with lock:
                        phase.errors[f"probe {error.code().name}"] += 1
        finally:
            ch.close()

    def poller() -> None:
        while not stop_poll.is_set():
            q0 = time.perf_counter_ns()
            try:
                visible = {row[0] for row in hub.sql(PROBE_QUERY, app=PROBE_APP, prefix=prefix)}
            except Exception as exc:  # report it, and keep polling
                with lock:
                    phase.errors[f"poll {type(exc).__name__}"] += 1
                visible = set()
            q1 = time.perf_counter_ns()
            with lock:
                phase.poll_queries += 1
                phase.poll_query_ns.append(q1 - q0)
                for probe in phase.probes:
                    if not probe.seen_ns and probe.route in visible:
                        probe.seen_query_ns, probe.seen_ns = q0, q1
            stop_poll.wait(max(args.poll_interval - (q1 - q0) / 1e9, 0.0))

    def sampler() -> None:
        while not stop_poll.is_set():
            t = time.perf_counter_ns()
            with contextlib.suppress(Exception):
                phase.samples.append(Sample(t, hub.status(), cpu_ticks(hub.pid)))
            stop_poll.wait(1.0)

    phase.stored_before = stored_per_app(hub)
    phase.status_start = hub.status()
    phase.ticks_start = cpu_ticks(hub.pid)
    phase.threads_start = thread_ticks(hub.pid)
    phase.system_start = system_ticks()
    phase.processes_start = process_ticks()
    phase.interrupts = interrupt_ticks()
    self_start = os.times()
    phase.start_ns = time.perf_counter_ns()
    threads = [threading.Thread(target=sender, args=(i,), name=f"sender-{i}") for i in range(args.senders)]
    threads.append(threading.Thread(target=prober, name="prober"))
    watchers = [threading.Thread(target=poller, name="poller"), threading.Thread(target=sampler, name="sampler")]
    for thread in threads + watchers:
        thread.start()
    try:
        stop_load.wait(seconds)
    finally:
        stop_load.set()
        for thread in threads:
            thread.join()
    phase.load_end_ns = time.perf_counter_ns()
    phase.ticks_load_end = cpu_ticks(hub.pid)
    phase.status_load_end = hub.status()
    progress(
        f"{name}: load stopped; {phase.exports} exports acknowledged, "
        f"{phase.status_load_end['queue']['queued exports']} queued; waiting until all are stored"
    )
    # Drain: until the hub processed every export it acknowledged (status polled every 0.1 s).
    expected = counter(phase.status_start, "exports processed") + phase.acked_exports
    deadline = time.monotonic() + args.drain_timeout
    while time.monotonic() < deadline:
        status = hub.status()
        if counter(status, "exports processed") >= expected:
            phase.stored_ns = time.perf_counter_ns()
            phase.drained = True
            break
        time.sleep(0.1)
    phase.ticks_end = cpu_ticks(hub.pid)
    phase.hub_children = set(children(hub.pid))
    phase.threads_end = thread_ticks(hub.pid)
    phase.system_end = system_ticks()
    phase.processes_end = process_ticks()
    phase.interrupts = interrupt_ticks() - phase.interrupts
    self_end = os.times()
    phase.self_cpu_s = (self_end.user + self_end.system) - (self_start.user + self_start.system)
    if not phase.drained:
        progress(f"{name}: NOT drained after {args.drain_timeout:.0f} s")
    # Let the poller find the last probes (they are stored now: one or two polls).
    deadline = time.monotonic() + min(10.0, args.drain_timeout)
    while time.monotonic() < deadline:
        with lock:
            if all(p.seen_ns or not p.acked_ns for p in phase.probes):
                break
        time.sleep(0.05)
    stop_poll.set()
    for thread in watchers:
        thread.join()
    phase.status_end = hub.status()
    phase.stored_after = stored_per_app(hub)
    return phase


PROBE_QUERY = "SELECT DISTINCT route FROM requests WHERE app = {app:String} AND startsWith(route, {prefix:String})"


def hub_cores_while(hub: HubProcess, seconds: float, interval_s: float | None) -> float:
    """The hub's CPU (cores) over ``seconds`` with no load, polling the probe query every ``interval_s`` (None:
    not at all)."""
    t0, c0 = time.perf_counter(), cpu_ticks(hub.pid)
    while time.perf_counter() - t0 < seconds:
        if interval_s is None:
            time.sleep(seconds)
            continue
        hub.sql(PROBE_QUERY, app=PROBE_APP, prefix="/probe/none/")
        time.sleep(interval_s)
    return (cpu_ticks(hub.pid) - c0) * TICK_S / (time.perf_counter() - t0)


def warm_up(hub: HubProcess, exports: list[Export], keys: dict[str, str], count: int) -> None:
    """A few exports through the whole pipeline (first inserts, first parts) before anything is timed."""
    ch = channel(f"127.0.0.1:{hub.grpc_port}")
    try:
        call = ch.unary_unary(
            METRICS_EXPORT, request_serializer=None, response_deserializer=ExportMetricsServiceResponse.FromString
        )
        for i in range(count):
            metadata = (("x-tallyhub-app-key", keys[LOAD_APP]), ("x-tallyhub-batch-id", uuid.uuid4().hex))
            call(exports[i % len(exports)].payload, timeout=60, metadata=metadata)
        probe = probe_export("/probe/warm-up/0")
        metadata = (("x-tallyhub-app-key", keys[PROBE_APP]), ("x-tallyhub-batch-id", uuid.uuid4().hex))
        call(probe.payload, timeout=60, metadata=metadata)
    finally:
        ch.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if hub.status()["queue"]["queued exports"] == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("the warm-up exports were not stored within 120 s")


# --------------------------------------------------------------------------------------------
# Reading a phase.


@dataclass
class Reading:
    acked_dp_s: float
    acked_exports_s: float
    e2e_dp_s: float
    """Every data point acknowledged in the phase / (all stored - first send)."""
    stored_during_load_dp_s: float
    drain_dp_s: float
    hub_cores_load: float
    hub_cores_e2e: float
    dp_per_hub_cpu_s: float
    stored_points: int
    acked_points: int


def read_phase(phase: Phase) -> Reading:
    load_s = (phase.load_end_ns - phase.start_ns) / 1e9
    acked_points = phase.points + phase.probe_points
    e2e_s = ((phase.stored_ns if phase.drained else time.perf_counter_ns()) - phase.start_ns) / 1e9
    rows = {
        app: phase.stored_after.get(app, (0, 0))[0] - phase.stored_before.get(app, (0, 0))[0]
        for app in (LOAD_APP, PROBE_APP)
    }
    # Every stored row of these apps is one series of one export: three data points (duration, request
    # size, response size) merged into one row.
    stored_points = 3 * sum(rows.values())
    rows_load = counter(phase.status_load_end, "rows inserted") - counter(phase.status_start, "rows inserted")
    rows_end = counter(phase.status_end, "rows inserted") - counter(phase.status_load_end, "rows inserted")
    drain_s = max(((phase.stored_ns or phase.load_end_ns) - phase.load_end_ns) / 1e9, 1e-9)
    hub_cpu_e2e = (phase.ticks_end - phase.ticks_start) * TICK_S
    return Reading(
        acked_dp_s=phase.points / load_s,
        acked_exports_s=phase.exports / load_s,
        e2e_dp_s=acked_points / e2e_s,
        stored_during_load_dp_s=3 * rows_load / load_s,
        drain_dp_s=3 * rows_end / drain_s if phase.drained and rows_end else float("nan"),
        hub_cores_load=(phase.ticks_load_end - phase.ticks_start) * TICK_S / load_s,
        hub_cores_e2e=hub_cpu_e2e / e2e_s,
        dp_per_hub_cpu_s=stored_points / hub_cpu_e2e if hub_cpu_e2e else float("nan"),
        stored_points=stored_points,
        acked_points=acked_points,
    )


def fmt_s(ns: float) -> str:
    return f"{ns / 1e9:.2f}"


def report_phase(phase: Phase, r: Reading, exports: list[Export], hub: HubProcess) -> list[str]:
    out: list[str] = []
    load_s = (phase.load_end_ns - phase.start_ns) / 1e9
    mode = (
        "closed loop: as fast as the hub acknowledges"
        if phase.rate_dp_s is None
        else f"paced at {phase.rate_dp_s:,.0f} data points/s offered"
    )
    out.append(f"### Phase `{phase.name}` ({mode}, {load_s:.1f} s of load)")
    out.append("")
    s0, s1 = phase.status_start, phase.status_load_end
    acked_hub = counter(s1, "exports acknowledged") - counter(s0, "exports acknowledged")
    fsyncs = s1["queue"]["fsyncs"] - s0["queue"]["fsyncs"]
    busy = phase.system_end[0] - phase.system_start[0]
    steal = phase.system_end[1] - phase.system_start[1]
    total = max(phase.system_end[2] - phase.system_start[2], 1)
    send_ms = [ns / 1e6 for ns in phase.send_latencies_ns]
    out.append("| measure | value |")
    out.append("|---|---:|")
    out.append(f"| exports acknowledged (load app) | {phase.exports:,} ({r.acked_exports_s:,.1f}/s) |")
    out.append(f"| data points acknowledged, at receipt | **{r.acked_dp_s:,.0f} /s** ({phase.points:,}) |")
    out.append(
        "| export call, send → acknowledgement, p50 / p99 ms | "
        f"{quantile(send_ms, 0.5):.1f} / {quantile(send_ms, 0.99):.1f} |"
    )
    out.append(
        "| **receipt → ClickHouse**, data points stored / s (first send → all acknowledged stored) | "
        f"**{r.e2e_dp_s:,.0f} /s** ({'all stored after' if phase.drained else 'NOT drained after'} "
        f"{((phase.stored_ns or phase.load_end_ns) - phase.start_ns) / 1e9:.1f} s) |"
    )
    out.append(f"| stored during the load / s | {r.stored_during_load_dp_s:,.0f} |")
    drain_ns = (phase.stored_ns or phase.load_end_ns) - phase.load_end_ns
    drain_rate = f"{r.drain_dp_s:,.0f}" if drain_ns > 1e9 else "- (too short to tell)"
    out.append(f"| stored during the drain / s (no receipts) | {drain_rate} ({fmt_s(drain_ns)} s) |")
    out.append(
        f"| queue at the end of the load: exports / lag s | {s1['queue']['queued exports']:,} / "
        f"{s1['queue']['lag s']} |"
    )
    out.append(
        f"| fsyncs / exports acknowledged by the hub (group commit) | {fsyncs:,} / {acked_hub:,} "
        f"({acked_hub / max(fsyncs, 1):.1f} exports per fsync) |"
    )
    out.append(
        "| hub CPU: cores used during the load / first send → all stored | "
        f"{r.hub_cores_load:.2f} / {r.hub_cores_e2e:.2f} |"
    )
    out.append(f"| data points stored per hub CPU-second | **{r.dp_per_hub_cpu_s:,.0f}** |")
    cores = os.cpu_count() or 1
    phase_s = max(((phase.stored_ns or phase.load_end_ns) - phase.start_ns) / 1e9, 1e-9)
    kernel, others = elsewhere(phase.processes_start, phase.processes_end, {os.getpid(), hub.pid, *phase.hub_children})
    per_core = cores / total  # ticks -> cores over the phase
    named = ", ".join(f"{name} {n * per_core:.2f}" for name, n in others.most_common(3)) or "none"
    rest = busy - kernel - phase.interrupts - sum(others.values()) - (phase.ticks_end - phase.ticks_start)
    rest -= round(phase.self_cpu_s / TICK_S)
    out.append(
        "| other CPU, first send → all stored, in cores: load generator (this process) / kernel threads "
        "(writeback, journal, ...) / irq + softirq / other processes (top 3) / short-lived processes and rounding "
        f"/ steal | {phase.self_cpu_s / phase_s:.2f} / {kernel * per_core:.2f} / {phase.interrupts * per_core:.2f} / "
        f"{sum(others.values()) * per_core:.2f} ({named}) / {rest * per_core:.2f} / {steal / total * 100:.1f} % |"
    )
    stored_requests = sum(
        phase.stored_after.get(a, (0, 0))[1] - phase.stored_before.get(a, (0, 0))[1] for a in (LOAD_APP, PROBE_APP)
    )
    acked_requests = phase.requests + sum(1 for p in phase.probes if p.acked_ns)
    out.append(
        f"| check: data points stored (3 x rows) / acknowledged; requests stored / sent | {r.stored_points:,} / "
        f"{r.acked_points:,}; {stored_requests:,} / {acked_requests:,} |"
    )
    spent = by_thread_name(phase.threads_start, phase.threads_end)
    hub_ticks = max(phase.ticks_end - phase.ticks_start, 1)
    split = ", ".join(
        f"{THREAD_LABELS.get(name, name)} {n / hub_ticks * 100:.0f} %" for name, n in spent.most_common(6) if n
    )
    out.append(f"| hub CPU by thread (OS thread names; threads that ended during the phase are missed) | {split} |")
    errors = ", ".join(f"{k} {v}" for k, v in sorted(phase.errors.items())) or "none"
    out.append(f"| errors / partial-success rejections | {errors} / {phase.rejected_points} |")
    out.append("")
    acked_probes = [p for p in phase.probes if p.acked_ns]
    seen = [p for p in acked_probes if p.seen_ns]
    latencies = [(p.seen_ns - p.sent_ns) / 1e9 for p in seen]
    lower = [(p.seen_query_ns - p.sent_ns) / 1e9 for p in seen]
    poll_ms = statistics.median(phase.poll_query_ns) / 1e6 if phase.poll_query_ns else float("nan")
    out.append(
        f"Receipt → queryable, {len(seen)} of {len(acked_probes)} probes seen ({phase.poll_queries} polls, "
        f"median query {poll_ms:.0f} ms): **p50 {quantile(latencies, 0.5):.2f} s, "
        f"p99 {quantile(latencies, 0.99):.2f} s, "
        f"max {max(latencies, default=float('nan')):.2f} s** (send → answer of the first query showing it; "
        f"send → that query's start: p50 {quantile(lower, 0.5):.2f}, p99 {quantile(lower, 0.99):.2f} s)."
    )
    out.append("")
    # Over time: per ~5 s, from the status samples.
    rows = []
    step = max(1, round(5 / 1.0))
    picked = phase.samples[::step]
    if phase.samples and picked[-1] is not phase.samples[-1]:
        picked.append(phase.samples[-1])
    for a, b in itertools.pairwise(picked):
        dt_s = (b.t_ns - a.t_ns) / 1e9
        acked = counter(b.status, "exports acknowledged") - counter(a.status, "exports acknowledged")
        stored = counter(b.status, "rows inserted") - counter(a.status, "rows inserted")
        rows.append(
            f"| {(a.t_ns - phase.start_ns) / 1e9:.0f}-{(b.t_ns - phase.start_ns) / 1e9:.0f} | "
            f"{acked * statistics.fmean(e.points for e in exports) / dt_s:,.0f} | {3 * stored / dt_s:,.0f} | "
            f"{b.status['queue']['queued exports']:,} | {b.status['queue']['lag s']:.1f} | "
            f"{(b.hub_ticks - a.hub_ticks) * TICK_S / dt_s:.2f} |"
        )
    if rows:
        out.append("| s | received dp/s (approx.) | stored dp/s | queued exports | queue lag s | hub cores |")
        out.append("|---|---:|---:|---:|---:|---:|")
        out.extend(rows)
        out.append("")
    return out


# --------------------------------------------------------------------------------------------
# Where the time goes: the stages in this process, on the same payloads.


def profile_stages(exports: list[Export], batch: int, work: Path) -> list[str]:
    """Each stage of the hub's path in this process, on the same exports: CPU time (``process_time``: every
    thread of this process, chDB's included), so that a busy machine inflates it less than wall time. The
    compiled pass and the pure-Python converters (its reference, and the fallback) side by side."""
    from tallyhub.collector_processor.convert import metrics
    from tallyhub.collector_processor.convert.cumulative import DeltaState
    from tallyhub.collector_processor.convert.requests import rejected_points
    from tallyhub.collector_processor.queue import DurableQueue
    from tallyhub.collector_processor.receive.auth import KeyRing
    from tallyhub.collector_processor.receive.receiver import METRICS, Receiver
    from tallyhub.collector_processor.store import _merged, _values
    from tallyhub.storage.backend import open_client
    from tallyhub.storage.migrate import migrate
    from tallyhub.storage.writer import insert_batch

    out: list[str] = []
    key = generate_key()
    queue = DurableQueue(work / "queue")
    receiver = Receiver(KeyRing(lambda: {hash_key(key): "bench"}), queue)
    chosen = [exports[i % len(exports)] for i in range(batch)]
    mean_points = statistics.fmean(e.points for e in chosen)
    python_batch = max(1, batch // 10)  # the Python converters are slow: a tenth of the batch

    def best_ms(fn: Any, repeat: int = 3, clock: Any = time.process_time) -> float:
        best = float("inf")
        for _ in range(repeat):
            t0 = clock()
            fn()
            best = min(best, clock() - t0)
        return best * 1000

    def values_of(records: list[Any], compiled: bool) -> dict[str, Any]:
        deltas = DeltaState(started_ns=0)
        converted = [(r, metrics.metric_tables(r.payload, r.app, deltas, compiled=compiled)) for r in records]
        return {table: _values(rows) for table, rows in _merged(converted).items()}

    decode_ms = best_ms(lambda: [ExportMetricsServiceRequest.FromString(e.payload) for e in chosen]) / batch
    requests = [ExportMetricsServiceRequest.FromString(e.payload) for e in chosen]
    scan_ms = best_ms(lambda: [metrics.accepted_as_is(e.payload) for e in chosen]) / batch
    rejected_ms = best_ms(lambda: [rejected_points(r) for r in requests[:python_batch]]) / python_batch
    t0 = time.process_time()
    for e in chosen:
        receiver.accept(METRICS, e.payload, [("x-tallyhub-app-key", key), ("x-tallyhub-batch-id", uuid.uuid4().hex)])
    accept_ms = (time.process_time() - t0) * 1000 / batch
    records = queue.next_batch(batch, 1 << 40, 0)
    tables_ms = best_ms(lambda: values_of(records, True)) / batch
    python_ms = best_ms(lambda: values_of(records[:python_batch], False), repeat=1) / python_batch
    profile = cProfile.Profile()
    profile.enable()
    values_of(records[:python_batch], False)
    profile.disable()
    convert_top = top_functions(profile, 10)
    tables = values_of(records, True)
    python_rows = values_of(records, False)
    same = all(
        tables[t].block == python_rows[t].block if t == "requests" else tables[t] == python_rows[t] for t in tables
    )
    one = values_of(records[:1], True)
    tokens = itertools.count()
    queue_ms = best_ms(lambda: (queue.begin(records), queue.ack(records)), repeat=5)
    queue_wall_ms = best_ms(lambda: (queue.begin(records), queue.ack(records)), repeat=5, clock=time.perf_counter)
    client = open_client(f"chdb://{work / 'clickhouse'}", create=True)
    try:
        migrate(client)
        insert_batch(client, tables, "warm-up")
        insert_ms = best_ms(lambda: insert_batch(client, tables, f"run-{next(tokens)}")) / batch
        insert_one_ms = best_ms(lambda: insert_batch(client, one, f"run-{next(tokens)}"), repeat=5)
        rows_of = {t: [row.values() for row in rows] for t, rows in _python_rows(records, DeltaState(0)).items()}
        insert_rows_ms = best_ms(lambda: insert_batch(client, rows_of, f"run-{next(tokens)}")) / batch
        profile = cProfile.Profile()
        profile.enable()
        insert_batch(client, tables, "profiled")
        profile.disable()
        insert_top = top_functions(profile, 8)
    finally:
        client.close()
    big_ms = accept_ms + tables_ms + insert_ms + queue_ms / batch
    small_ms = accept_ms + tables_ms + insert_one_ms + queue_ms
    out.append(
        f"In this process (pinned like the load generator, the hub stopped), on {batch} of the same exports "
        f"({mean_points:.0f} data points, {statistics.fmean(len(e.payload) for e in chosen) / 1024:.0f} KiB "
        "encoded): CPU time of each stage (every thread of the process, chDB's included), best of 3 runs; the "
        f"pure-Python stages on {python_batch} of them. Compiled pass available: {metrics.COMPILED}; its `requests` "
        f"block byte-identical to the Python converters': {same}."
    )
    out.append("")
    out.append("| stage | CPU ms per export | data points/s if it alone had a core |")
    out.append("|---|---:|---:|")
    rows = [
        ("receiver: compiled check (`accepted_as_is`: wire format, UTF-8 and limits; no decode)", scan_ms),
        ("receiver, the reference: decode (`FromString`, upb)", decode_ms),
        ("receiver, the reference: limits checked in Python (`rejected_points`)", rejected_ms),
        ("receiver: whole `accept` (check, queue append + fsync; one export at a time)", accept_ms),
        ("processor: rows for every table, compiled pass (`metric_tables`)", tables_ms),
        ("processor: rows for every table, pure-Python converters (the reference)", python_ms),
        (f"processor: `insert_batch` of the compiled RowBinary block, in a batch of {batch} exports", insert_ms),
        (f"processor: `insert_batch` of the same rows as Python values (before), batch of {batch}", insert_rows_ms),
        ("processor: `insert_batch` of a batch of 1 export (the fixed cost of an insert)", insert_one_ms),
        (f"**all, in batches of {batch}**", big_ms),
        ("**all, in batches of 1** (light load: the processor takes what is queued)", small_ms),
    ]
    for label, ms in rows:
        out.append(f"| {label} | {ms:.2f} | {mean_points / ms * 1000:,.0f} |")
    out.append("")
    out.append(
        f"Per batch, the queue's `begin` + `ack` (cursor writes with fsyncs) take {queue_wall_ms:.1f} ms of wall time "
        f"({queue_ms:.1f} ms CPU): the processor thread waits for them without using the CPU. "
        "Not in the table: ClickHouse's background merges of the parts these inserts make (`MergeMutate` threads "
        "in the phases above)."
    )
    out.append("")
    out.append(f"The pure-Python converters on {python_batch} exports, cProfile (top functions by own time):")
    out.append("")
    out.append("```")
    out.extend(convert_top)
    out.append("```")
    out.append("")
    out.append(f"`insert_batch` of {batch} exports, cProfile (top functions by own time):")
    out.append("")
    out.append("```")
    out.extend(insert_top)
    out.append("```")
    out.append("")
    return out


def _python_rows(records: list[Any], deltas: Any) -> dict[str, list[Any]]:
    """The rows of the pure-Python converters as objects (what was inserted before the RowBinary blocks)."""
    from tallyhub.collector_processor.convert.requests import request_rows

    rows: list[Any] = []
    for record in records:
        rows.extend(request_rows(ExportMetricsServiceRequest.FromString(record.payload), record.app, deltas))
    return {"requests": rows}


def top_functions(profile: cProfile.Profile, n: int) -> list[str]:
    stream = io.StringIO()
    stats = pstats.Stats(profile, stream=stream)
    stats.sort_stats("tottime")
    total = stats.total_tt  # type: ignore[attr-defined]
    lines = [f"total {total * 1000:.0f} ms"]
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in entries[:n]:
        where = f"{Path(filename).parent.name}/{Path(filename).name}:{line}" if line else filename
        lines.append(
            f"{tottime * 1000:8.1f} ms own {tottime / total * 100:5.1f} %  {cumtime * 1000:8.1f} ms cum  "
            f"{ncalls:>8} calls  {func} ({where})"
        )
    return lines


# --------------------------------------------------------------------------------------------


def summary(phases: list[tuple[Phase, Reading]], target: float) -> list[str]:
    out = []
    for phase, r in phases:
        lat = [(p.seen_ns - p.sent_ns) / 1e9 for p in phase.probes if p.seen_ns]
        p50, p99, top = quantile(lat, 0.5), quantile(lat, 0.99), max(lat, default=float("nan"))
        if phase.rate_dp_s is None:
            out.append(
                f"- Throughput (`{phase.name}`): {r.acked_dp_s:,.0f} dp/s acknowledged at receipt; "
                f"**{r.e2e_dp_s:,.0f} dp/s receipt → ClickHouse** on {r.hub_cores_e2e:.2f} hub cores, "
                f"{r.dp_per_hub_cpu_s:,.0f} per hub CPU-second: {r.e2e_dp_s / target * 100:.0f} % of the "
                f"{target:,.0f} target ({'met' if r.e2e_dp_s >= target else 'missed'}); the OpenTelemetry "
                f"Collector's published sizing is ~{OTEL_COLLECTOR_DP_PER_CORE:,} dp/s per core. Receipt → queryable "
                f"while the backlog grows: p50 {p50:.1f} s, p99 {p99:.1f} s."
            )
        else:
            out.append(
                f"- Latency (`{phase.name}`, {r.acked_dp_s:,.0f} dp/s, hub {r.hub_cores_e2e:.2f} cores): receipt → "
                f"queryable p50 {p50:.2f} s, **p99 {p99:.2f} s**, max {top:.2f} s over {len(lat)} probes "
                f"(target {TARGET_P99_S:g} s: {'met' if p99 <= TARGET_P99_S else 'missed'})"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="seconds of closed-loop load in the saturated phase (default 15)"
    )
    parser.add_argument(
        "--paced-seconds", type=float, default=45.0, help="seconds of load in each paced phase (default 45)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="5 s saturated, 20 s paced phases, 16 payloads, a smaller profile"
    )
    parser.add_argument("--senders", type=int, default=4, help="concurrent gRPC senders (default 4)")
    parser.add_argument("--payloads", type=int, default=64, help="distinct precomputed exports (default 64)")
    parser.add_argument(
        "--exports",
        choices=("tallyhub", "otel-sdk"),
        default="tallyhub",
        help="whose exports: tallyhub's client's (default), or the OpenTelemetry SDK's own exponential histograms "
        "with delta temporality (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta; the same export sent "
        "again must count again, which a cumulative one would not)",
    )
    parser.add_argument("--routes", type=int, default=40, help="routes per export (default 40)")
    parser.add_argument("--statuses", type=int, default=5, help="statuses per route, up to 5 (default 5)")
    parser.add_argument("--requests-per-series", type=int, default=5, help="requests recorded per series (default 5)")
    parser.add_argument("--probe-interval", type=float, default=0.5, help="seconds between probes (default 0.5)")
    parser.add_argument("--poll-interval", type=float, default=0.25, help="seconds between probe polls (default 0.25)")
    parser.add_argument(
        "--paced-rates",
        help="comma-separated data points/s offered in the paced phases, one phase each (default: "
        "--paced-fractions of the end-to-end rate of the saturated phase)",
    )
    parser.add_argument("--paced-fractions", default="0.5,0.8", help="see --paced-rates (default 0.5,0.8)")
    parser.add_argument("--only", choices=["saturated", "paced"], help="run one phase only")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="max seconds to wait for the backlog")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the in-process profile")
    parser.add_argument("--profile-batch", type=int, default=100, help="exports in the profiled batch (default 100)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the hub and the load generator to CPUs")
    parser.add_argument(
        "--hub-cpus",
        type=int,
        default=1,
        choices=(1, 2),
        help="CPUs the hub may use: 1 (default; the load generator on the other) or 2 (all; the load generator "
        "shares one); the throughput target is 150 000 data points/s per CPU",
    )
    parser.add_argument(
        "--receivers", type=int, default=0, help="the hub's receiver processes (`tallyhub serve --receivers`)"
    )
    parser.add_argument("--wait-idle", type=float, default=15.0, help="minutes to wait for other benchmarks to end")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (hub log, data)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 5.0)
        args.paced_seconds = min(args.paced_seconds, 20.0)
        args.payloads = min(args.payloads, 16)
        args.profile_batch = min(args.profile_batch, 40)
    started = time.monotonic()
    idle = wait_until_idle(args.wait_idle)
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    hub_cpus: set[int] | None = None
    if args.hub_cpus >= 2:  # the hub on every CPU (the load generator, on its own, shares one with it)
        hub_cpus = set(range(os.cpu_count() or 1))
    elif not args.no_pin and SELF_PINNING.startswith("CPU "):
        others = [c for c in range(os.cpu_count() or 1) if c != int(SELF_PINNING[4:])]
        hub_cpus = {others[0]} if others else None
    target = TARGET_DP_S * max(1, args.hub_cpus)
    run_at = dt.datetime.now().astimezone()
    out: list[str] = [f"## Hub ingest, run of {run_at:%Y-%m-%d %H:%M %Z}", ""]
    out.append(
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores, Linux {platform.release()}; "
        f"Python {platform.python_version()} ({platform.python_implementation()}); {versions()}"
    )
    out.append(f"- Before the run: {idle}")
    command = " ".join(["python benchmarks/ingest.py", *(argv if argv is not None else sys.argv[1:])])
    out.append(f"- Command: `{command}`")
    rng = random.Random(args.seed)
    route_names = routes(args.routes)
    statuses = STATUSES[: max(1, min(args.statuses, len(STATUSES)))]
    progress(f"building {args.payloads} exports ({len(route_names)} routes x {len(statuses)} statuses) ...")
    build = build_export if args.exports == "tallyhub" else build_sdk_export
    exports = [build(i, route_names, statuses, args.requests_per_series, rng) for i in range(args.payloads)]
    mean_points = statistics.fmean(e.points for e in exports)
    out.append(
        f"- Exports: {len(exports)} distinct, {len(route_names) * len(statuses)} series x 3 metrics each "
        f"(delta exponential histograms, {args.requests_per_series} requests per series, recorded by "
        f"{'tallyhub' if args.exports == 'tallyhub' else 'the OpenTelemetry SDK'}): "
        f"{min(e.points for e in exports)}-{max(e.points for e in exports)} data points "
        f"({mean_points:.0f} on average), {statistics.fmean(len(e.payload) for e in exports) / 1024:.0f} KiB encoded "
        f"on average; {args.senders} senders"
    )
    work = Path(tempfile.mkdtemp(prefix="tallyhub-ingest-"))
    hub: HubProcess | None = None
    phases: list[tuple[Phase, Reading]] = []
    try:
        progress("starting the hub ...")
        hub = HubProcess(work, hub_cpus, args.receivers)
        hub.wait_ready()
        threads, masks = thread_affinities(hub.pid)
        _, self_masks = thread_affinities("self")
        pinning_line = len(out)
        out.append(
            f"- Pinning: hub (pid {hub.pid}, {threads} threads after start) allowed on CPU {', '.join(sorted(masks))}; "
            f"load generator on {SELF_PINNING} (its threads: {', '.join(sorted(self_masks))}; CPUs the run started "
            f"with: {allowed})"
        )
        keys = {}
        for app in (LOAD_APP, PROBE_APP):
            keys[app] = generate_key()
            assert hub.runner is not None
            create_app(hub.runner, app, hash_key(keys[app]))
        progress("warm-up ...")
        warm_up(hub, exports, keys, 3 * args.senders)
        out.append(f"- Warm-up: {3 * args.senders} exports stored before the phases")
        idle_cores = hub_cores_while(hub, 3.0, None)
        poll_cores = hub_cores_while(hub, 5.0, args.poll_interval)
        out.append(
            f"- The hub with no load: {idle_cores:.2f} cores; with only the probe poller "
            f"(every {args.poll_interval:g} s): {poll_cores:.2f} cores, part of every phase below"
        )
        out.append("")
        if args.only in (None, "saturated"):
            progress(f"phase saturated: {args.seconds:.0f} s, as fast as the hub acknowledges ...")
            phase = run_phase(hub, args, exports, keys, "saturated", args.seconds, None)
            phases.append((phase, read_phase(phase)))
        if args.only in (None, "paced"):
            if args.paced_rates:
                rates = [float(r) for r in args.paced_rates.split(",")]
            else:
                capacity = phases[0][1].e2e_dp_s if phases else TARGET_DP_S / 5
                rates = [float(f) * capacity for f in args.paced_fractions.split(",")]
            for rate in rates:
                name = f"paced-{rate / 1000:.0f}k"
                progress(f"phase {name}: {args.paced_seconds:.0f} s at {rate:,.0f} data points/s ...")
                phase = run_phase(hub, args, exports, keys, name, args.paced_seconds, rate)
                phases.append((phase, read_phase(phase)))
        after_threads, after_masks = thread_affinities(hub.pid)
        out[pinning_line] += (
            f"; at the end the hub had {after_threads} threads, allowed on CPU {', '.join(sorted(after_masks))}"
        )
        progress("stopping the hub ...")
        hub.stop()
        for phase, reading in phases:
            out.extend(report_phase(phase, reading, exports, hub))
        if args.profile:
            progress("profiling the stages in this process ...")
            out.append("### Where the time goes")
            out.append("")
            out.extend(profile_stages(exports, args.profile_batch, work / "profile"))
        out.append("### Summary")
        out.append("")
        out.extend(summary(phases, target))
        out.append(f"- Run time: {time.monotonic() - started:.0f} s")
        print("\n".join(out))
        return 0
    except BaseException:
        if hub is not None:
            progress(f"hub log (tail):\n{hub.log_tail()}")
        raise
    finally:
        if hub is not None:
            hub.stop()
        if args.keep:
            progress(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
