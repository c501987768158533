"""Resilience of tallyhub's client: the app's request latency with the hub up, down and slow, and the
client's memory through hours of outage.

Run: ``python benchmarks/resilience.py`` (about 4 minutes on a 2-core VM, after waiting for an idle
machine); ``--quick`` for a short run; ``--help`` for the options. It prints Markdown (progress on stderr).

1. Latency. One real uvicorn server (one worker, asyncio + h11) per scenario, every one serving the same
   FastAPI app (``make_app`` below, ``--factory``): bare (no monitoring: the stock alternative); tallyhub
   with its hub up (a real ``tallyhub serve``, temporary data directory), down (the endpoint is a free
   port nobody listens on), slow (a gRPC server of this script, ``--slow-hub-port``, in a subprocess, that
   answers every OTLP export OK only after sleeping 5 s) and a stub hub (the same server answering OK at
   once and storing nothing: the client's sends succeed, and no hub works on the same CPUs); and the
   stock OpenTelemetry path (FastAPIInstrumentor, the SDK and its OTLP gRPC exporter) with the same hub up
   and down. Every app exports every second (``OTEL_METRIC_EXPORT_INTERVAL=1000``). This process drives
   closed-loop load through a few keep-alive connections (one thread, non-blocking sockets, requests
   prepared as bytes) for N seconds per round and scenario; the rounds interleave the scenarios, in a
   shuffled order every round, after a warm-up round. Reported per scenario: requests, p50/p90/p99/max of
   the latency seen by the client, the same-round differences to the hub-up scenario, each round's p50,
   the app's CPU per request, and the evidence that the hub really was up, down or slow (the apps' logs,
   the stub servers' logs, what the hub stored).
2. Memory. In process and without network: a ``Delivery`` with the default ``MemorySpool`` (16 MiB cap,
   1 h retry window) and a simulated clock, fed through ``SpoolTransport`` by a real ``RequestAggregator``
   (one collection per simulated minute), its sender pointed at a dead port, for 10 simulated hours; each
   configuration in a fresh subprocess, measured with tracemalloc and /proc/self/status; the same batches
   without cap and retry window for comparison.

No timed assertions: it measures and reports.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import random
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
from machine import machine, progress, source_digest, versions

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VARIANT_ENV = "TALLYHUB_RESILIENCE_VARIANT"
"""Which app ``make_app`` builds: ``bare``, ``tallyhub`` or ``otel``."""
OTLP_SERVICES = (
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "opentelemetry.proto.collector.logs.v1.LogsService",
)
MIB = 1024 * 1024

# --------------------------------------------------------------------------------------------
# The app every latency scenario serves: ``uvicorn --factory --app-dir benchmarks resilience:make_app``.


class Item(pydantic.BaseModel):
    name: str
    price: float
    tags: list[str] = []


def make_app() -> Any:
    """The FastAPI app, with tallyhub's middleware, the stock OpenTelemetry instrumentation or nothing,
    after ``$TALLYHUB_RESILIENCE_VARIANT``; both read the OTEL_* variables (endpoint, headers, interval)."""
    from fastapi import FastAPI

    variant = os.environ.get(VARIANT_ENV, "bare")
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict:
        return {"id": item_id, "name": "widget", "price": 9.5}

    @app.post("/items", status_code=201)
    async def create_item(item: Item) -> Item:
        return item

    if variant == "tallyhub":
        from tallyhub.instrumentation.starlette import TallyhubMiddleware

        app.add_middleware(TallyhubMiddleware)
    elif variant == "otel":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.trace import NoOpTracerProvider

        reader = PeriodicExportingMetricReader(OTLPMetricExporter())  # interval: OTEL_METRIC_EXPORT_INTERVAL
        FastAPIInstrumentor.instrument_app(
            app, meter_provider=MeterProvider(metric_readers=[reader]), tracer_provider=NoOpTracerProvider()
        )
    elif variant != "bare":
        raise ValueError(f"unknown variant {variant!r}")
    return app


# --------------------------------------------------------------------------------------------
# The slow hub: ``python benchmarks/resilience.py --slow-hub-port N``.


def serve_slow_hub(port: int, delay_s: float) -> int:
    """Answer every OTLP export (metrics, logs) OK with an empty response, after sleeping ``delay_s``."""
    from concurrent import futures

    import grpc

    calls = 0
    lock = threading.Lock()

    def handler(signal_name: str) -> grpc.RpcMethodHandler:
        def export(request: bytes, context: grpc.ServicerContext) -> bytes:
            nonlocal calls
            with lock:
                calls += 1
                n = calls
            print(f"{time.strftime('%H:%M:%S')} export #{n} ({signal_name}): {len(request)} bytes", flush=True)
            time.sleep(delay_s)
            return b""  # an empty Export*ServiceResponse: full success

        return grpc.unary_unary_rpc_method_handler(export)  # raw bytes in and out

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(service, {"Export": handler(name)})
            for service, name in zip(OTLP_SERVICES, ("metrics", "logs"), strict=True)
        ]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"slow hub ready on 127.0.0.1:{port}: every export answered OK after {delay_s:g} s", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop(0)
    print(f"slow hub stopped: {calls} export calls", flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# Processes.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def system_ticks() -> tuple[int, int, int, int]:
    """(busy, interrupts, steal, total) clock ticks of all CPUs since boot, from /proc/stat; interrupts
    (irq + softirq: here mostly the loopback network) are in busy but charged to no process."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, irq + softirq, steal, busy + idle + iowait + steal


OTHER_WORK = ("benchmarks/", "pytest", "tallyhub serve", "uvicorn")
"""Command lines that tell of other benchmarks or tests on the machine (reported, not waited for: a
benchmark that is itself waiting for an idle machine uses no CPU)."""
IDLE_BUSY_CORES = 0.3


def other_work() -> list[str]:
    """Command lines of other benchmarks, tests, hubs and servers running on this machine."""
    mine, pid = set(), os.getpid()
    while pid > 1 and pid not in mine:  # this process and its ancestors
        mine.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rpartition(")")[2].split()[1])
        except OSError:
            break
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in mine:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if any(word in cmdline for word in OTHER_WORK):
            found.append(f"{name}: {cmdline[:120]}")
    return found


def busy_cores(seconds: float = 5.0) -> float:
    """Busy cores of the machine over ``seconds`` (this process is idle meanwhile)."""
    b0, _, _, t0 = system_ticks()
    time.sleep(seconds)
    b1, _, _, t1 = system_ticks()
    return (b1 - b0) / max(t1 - t0, 1) * (os.cpu_count() or 1)


def wait_until_idle(minutes: float) -> str:
    """Wait (polling every 15 s, up to ``minutes``) until the CPUs are idle; say what was found."""
    started = time.monotonic()
    while True:
        busy = busy_cores()
        waited = time.monotonic() - started
        after = f" after waiting {waited:.0f} s" if waited > 10 else ""
        if busy < IDLE_BUSY_CORES:
            return f"idle{after} ({busy:.2f} busy cores over 5 s)"
        found = other_work()
        if waited >= minutes * 60:
            running = "; ".join(found) if found else "no other benchmark or test found"
            return f"NOT IDLE{after}: {busy:.2f} busy cores over 5 s; running: {running}"
        progress(f"waiting for an idle machine: {busy:.2f} busy cores; {found[0] if found else ''}")
        time.sleep(10)


def own_ticks(procs: list[subprocess.Popen]) -> int:
    """CPU ticks of this process and of the processes it started (those still running)."""
    times = os.times()
    return round((times.user + times.system) / TICK_S) + sum(cpu_ticks(p.pid) for p in procs if p.poll() is None)


class Processes:
    """Every process this benchmark starts; each in a session of its own, stopped (its group) at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env={**os.environ, **env},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(procs: list[subprocess.Popen], timeout_s: float = 30.0) -> None:
        """SIGTERM (graceful: final exports, the hub's queue), then SIGKILL for what is still running."""
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.1))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        self.stop(self.procs, 15.0)
        for proc in self.procs:  # anything left in their groups (none expected)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


# --------------------------------------------------------------------------------------------
# Load.

POST_BODY = json.dumps({"name": "widget", "price": 9.5, "tags": ["a", "b"]}).encode()


def http_request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: resilience-bench\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


# (request bytes, expected status): 7 reads, 2 creates, 1 validation error (422) in 10.
PLAN: list[tuple[bytes, int]] = [
    *[(http_request("GET", f"/items/{i}"), 200) for i in range(7)],
    *[(http_request("POST", "/items", POST_BODY), 201) for _ in range(2)],
    (http_request("GET", "/items/abc"), 422),
]


@dataclass
class Round:
    latencies_ns: list[int]
    errors: int
    seconds: float
    app_cpu_s: float
    hub_cpu_s: float

    @property
    def requests(self) -> int:
        return len(self.latencies_ns)


def drive(port: int, seconds: float, clients: int, app_pid: int, hub_pid: int | None) -> Round:
    """Closed-loop load: ``clients`` keep-alive connections, each sending its next request as soon as the
    previous response is complete, for ``seconds``. One thread, non-blocking sockets and a selector, the
    requests prepared as bytes: the generator stays light, and no GIL hand-over between client threads
    (5 ms switch interval) lands in the measured latencies."""
    socks = []
    for _ in range(clients):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        socks.append(sock)
    selector = selectors.DefaultSelector()
    state = []  # per connection: [next plan index, sent at (ns), buffer, expected status]
    latencies: list[int] = []
    errors = 0
    app0, hub0 = cpu_ticks(app_pid), cpu_ticks(hub_pid) if hub_pid else 0
    started = time.perf_counter_ns()
    end = started + int(seconds * 1e9)
    for i, sock in enumerate(socks):
        request, expected = PLAN[(i * 3) % len(PLAN)]
        selector.register(sock, selectors.EVENT_READ, i)
        state.append([i * 3 + 1, time.perf_counter_ns(), b"", expected])
        sock.sendall(request)
    open_conns = clients
    while open_conns:
        for key, _ in selector.select(timeout=30):
            i = key.data
            sock = socks[i]
            st = state[i]
            data = sock.recv(65536)
            if not data:  # the server closed the connection (not expected)
                errors += 1
                selector.unregister(sock)
                open_conns -= 1
                continue
            buf = st[2] + data
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                st[2] = buf
                continue
            length_at = buf.find(b"content-length:", 0, head_end)
            length = int(buf[length_at + 15 : buf.index(b"\r\n", length_at)]) if length_at >= 0 else 0
            if len(buf) < head_end + 4 + length:
                st[2] = buf
                continue
            now = time.perf_counter_ns()
            latencies.append(now - st[1])
            if int(buf[9:12]) != st[3]:
                errors += 1
            st[2] = buf[head_end + 4 + length :]
            if now >= end:
                selector.unregister(sock)
                open_conns -= 1
                continue
            request, st[3] = PLAN[st[0] % len(PLAN)]
            st[0] += 1
            st[1] = time.perf_counter_ns()
            sock.sendall(request)
    elapsed = (time.perf_counter_ns() - started) / 1e9
    app1, hub1 = cpu_ticks(app_pid), cpu_ticks(hub_pid) if hub_pid else 0
    selector.close()
    for sock in socks:
        sock.close()
    return Round(latencies, errors, elapsed, (app1 - app0) * TICK_S, (hub1 - hub0) * TICK_S)


def quantile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# --------------------------------------------------------------------------------------------
# The latency scenarios.


@dataclass
class Scenario:
    key: str
    title: str
    variant: str  # bare / tallyhub / otel
    hub: str  # up / down / slow / none
    port: int = 0
    proc: subprocess.Popen | None = None
    log: Path | None = None
    app_name: str = ""
    sent: int = 0  # every request answered, warm-up and readiness probes included
    rounds: list[Round] = field(default_factory=list)


SCENARIOS = [
    ("bare", "no monitoring (bare app)", "bare", "none"),
    ("up", "tallyhub, hub up", "tallyhub", "up"),
    ("down", "tallyhub, hub down", "tallyhub", "down"),
    ("slow", "tallyhub, hub slow", "tallyhub", "slow"),
    ("stub", "tallyhub, stub hub (OK at once, stores nothing)", "tallyhub", "stub"),
    ("otel-up", "stock OpenTelemetry, hub up", "otel", "up"),
    ("otel-down", "stock OpenTelemetry, hub down", "otel", "down"),
]


class Hub:
    def __init__(self, procs: Processes, work: Path) -> None:
        self.data_dir = work / "hub-data"
        self.log = work / "hub.log"
        self.port = free_port()
        # Its OTLP/HTTP receiver (hubs that have one) on a free port too, not on the default 4318.
        self.env = {"TALLYHUB_DATA_DIR": str(self.data_dir), "TALLYHUB_HTTP_ADDRESS": f"127.0.0.1:{free_port()}"}
        self.proc = procs.start(
            [
                sys.executable,
                "-m",
                "tallyhub",
                "serve",
                "--grpc-address",
                f"127.0.0.1:{self.port}",
                "--query-address",
                f"127.0.0.1:{free_port()}",
                "--dashboard-address",
                "off",
            ],
            self.log,
            self.env,
        )

    def wait_ready(self) -> None:
        if not wait_until(lambda: "hub ready" in self.log.read_text() or self.proc.poll() is not None, 120, 0.2):
            raise RuntimeError(f"the hub did not start in 120 s; see {self.log}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"the hub exited: {self.log.read_text()[-2000:]}")

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "tallyhub", *args],
            cwd=REPO,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"tallyhub {' '.join(args)}: {result.stderr}")
        return result.stdout

    def stored(self) -> dict[str, int]:
        out = self.cli("sql", "--format", "TabSeparated", "SELECT app, sum(requests) FROM requests GROUP BY app")
        return {app: int(n) for app, n in (line.split("\t") for line in out.splitlines() if line.strip())}


def start_app(procs: Processes, work: Path, sc: Scenario, endpoint: str, key: str) -> None:
    sc.port = free_port()
    sc.log = work / f"app-{sc.key}.log"
    env = {
        VARIANT_ENV: sc.variant,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-tallyhub-app-key={key}",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_SERVICE_NAME": f"resilience-{sc.key}",
    }
    if sc.variant == "otel":  # what the hub stores: delta exponential histograms, the stable HTTP names
        env |= {
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
            "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": "base2_exponential_bucket_histogram",
            "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
        }
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "--app-dir", str(HERE), "resilience:make_app"]
    cmd += ["--host", "127.0.0.1", "--port", str(sc.port), "--workers", "1", "--no-access-log"]
    sc.proc = procs.start(cmd, sc.log, env)


def wait_app(sc: Scenario) -> None:
    assert sc.proc is not None and sc.log is not None

    def up() -> bool:
        if sc.proc.poll() is not None:
            raise RuntimeError(f"the {sc.key} app exited: {sc.log.read_text()[-2000:]}")
        conn = http.client.HTTPConnection("127.0.0.1", sc.port, timeout=5)
        try:
            conn.request("GET", "/items/0")
            response = conn.getresponse()
            response.read()
        except OSError:
            return False
        finally:
            conn.close()
        sc.sent += 1
        return response.status == 200

    if not wait_until(up, 60, 0.2):
        raise RuntimeError(f"the {sc.key} app did not answer in 60 s; see {sc.log}")


def count_lines(text: str, needle: str) -> int:
    return sum(needle in line for line in text.splitlines())


def log_evidence(sc: Scenario) -> str:
    """What the app's log says about delivery."""
    text = sc.log.read_text(errors="replace") if sc.log else ""
    parts = []
    checks = (
        [
            ("did not take a batch", "'the hub did not take a batch' (logged at most once a minute)"),
            ("dropped", "'dropped'"),
            ("not delivered at shutdown", "'not delivered at shutdown'"),
        ]
        if sc.variant == "tallyhub"
        else [
            ("Transient error", "'Transient error … retrying'"),
            ("Failed to export", "'Failed to export'"),
        ]
    )
    if sc.variant != "bare":
        for needle, label in checks:
            parts.append(f"{label}: {count_lines(text, needle)}")
    parts.append(f"tracebacks: {count_lines(text, 'Traceback')}")
    return ", ".join(parts)


def first_line(text: str, needle: str, width: int = 200) -> str:
    for line in text.splitlines():
        if needle in line:
            line = line.strip()
            return line[line.find("tallyhub:") :][:width] if "tallyhub:" in line else line[:width]
    return ""


def run_latency(args: argparse.Namespace, work: Path, procs: Processes) -> str:
    out: list[str] = []
    scenarios = [Scenario(*s) for s in SCENARIOS if args.stock or s[2] != "otel"]
    down_port = free_port()  # nobody listens here
    stubs = {"slow": args.slow_delay, "stub": 0.0}  # gRPC servers of this script: OK after that many seconds
    stub_ports = {name: free_port() for name in stubs}
    stub_logs = {name: work / f"{name}-hub.log" for name in stubs}
    t0 = time.monotonic()
    progress(f"starting the hub, the slow and stub hubs and {len(scenarios)} apps ...")
    hub = Hub(procs, work)
    stub_procs = [
        procs.start(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--slow-hub-port",
                str(stub_ports[name]),
                "--slow-delay",
                str(delay),
            ],
            stub_logs[name],
            {},
        )
        for name, delay in stubs.items()
    ]
    endpoints = {"none": f"http://127.0.0.1:{down_port}", "down": f"http://127.0.0.1:{down_port}"}
    endpoints |= {name: f"http://127.0.0.1:{port}" for name, port in stub_ports.items()}
    for sc in scenarios:
        if sc.hub != "up":
            start_app(procs, work, sc, endpoints[sc.hub], "thk_none")
    hub.wait_ready()
    endpoints["up"] = f"http://127.0.0.1:{hub.port}"
    for sc in scenarios:
        if sc.hub == "up":
            sc.app_name = f"bench-{sc.key}"
            key = hub.cli("apps", "create", sc.app_name).split()[0]
            start_app(procs, work, sc, endpoints["up"], key)
    for name, proc in zip(stubs, stub_procs, strict=True):
        log, started = stub_logs[name], proc

        def ready(log: Path = log, started: subprocess.Popen = started) -> bool:
            return "slow hub ready" in log.read_text() or started.poll() is not None

        if not wait_until(ready, 60) or proc.poll() is not None:
            raise RuntimeError(f"the {name} hub did not start; see {stub_logs[name]}")
    for sc in scenarios:
        wait_app(sc)
    setup_s = time.monotonic() - t0
    hub_pid = hub.proc.pid

    def one_round(sc: Scenario, seconds: float) -> Round:
        assert sc.proc is not None
        r = drive(sc.port, seconds, args.clients, sc.proc.pid, hub_pid)
        sc.sent += r.requests
        return r

    progress(f"up in {setup_s:.0f} s; warm-up: {args.warmup:g} s per scenario")
    for sc in scenarios:
        one_round(sc, args.warmup)
    t_load = time.monotonic()
    sys0, own0 = system_ticks(), own_ticks(procs.procs)
    rng = random.Random(args.seed)
    for r in range(args.rounds):
        order = scenarios[:]
        rng.shuffle(order)  # no scenario always follows the same one, or runs first, or last
        for sc in order:
            sc.rounds.append(one_round(sc, args.seconds))
        progress(f"round {r + 1}/{args.rounds} done ({time.monotonic() - t_load:.0f} s)")
    load_s = time.monotonic() - t_load
    sys1, own1 = system_ticks(), own_ticks(procs.procs)
    total = (sys1[3] - sys0[3]) or 1
    busy, irqs, steal = ((sys1[i] - sys0[i]) / total for i in range(3))
    own = (own1 - own0) / total
    others = max(busy - own - irqs, 0)
    cpus = os.cpu_count() or 1
    machine_load = (
        f"CPU during the measured rounds (all {cpus} cores = 100 %): {busy * 100:.0f} % busy: this benchmark's "
        f"processes {own * 100:.0f} %, interrupts (loopback network) {irqs * 100:.0f} %, other processes "
        f"{others * 100:.0f} %; steal (the hypervisor's other guests) {steal * 100:.1f} %."
    )
    if others > 0.05:
        machine_load += " Other processes used the CPU during the run: the comparisons are noisier than usual."

    progress("stopping the apps (SIGTERM: their last export) ...")
    Processes.stop([sc.proc for sc in scenarios if sc.proc is not None], 40)
    stored: dict[str, int] = {}
    expected = {sc.app_name: sc.sent for sc in scenarios if sc.app_name}

    def all_stored() -> bool:
        stored.update(hub.stored())
        return all(stored.get(name, 0) >= sent for name, sent in expected.items())

    wait_until(all_stored, 60, 1.0)  # the hub writes its queue to ClickHouse in the background
    Processes.stop([hub.proc, *stub_procs], 30)
    received = {}
    for name in stubs:
        text = stub_logs[name].read_text(errors="replace")
        received[name] = f"{count_lines(text, '(metrics)')} metrics and {count_lines(text, '(logs)')} logs exports"

    # ---- the report
    out.append("## Latency under load: hub up, down, slow\n")
    out.append(
        f"One uvicorn worker per scenario (asyncio + h11), the same FastAPI app; {args.clients} keep-alive "
        f"connections in closed loop from the benchmark process; {args.rounds} rounds x {args.seconds:g} s "
        f"per scenario, interleaved (a shuffled order every round, seed {args.seed}), after {args.warmup:g} s "
        f"of warm-up each; "
        f"requests: 70 % `GET /items/{{id}}` (200), 20 % `POST /items` (201, JSON body), 10 % `GET /items/abc` "
        f"(422). Every app exports every 1 s. Set-up {setup_s:.0f} s, load {load_s:.0f} s. {machine_load}\n"
    )
    ref = next((sc for sc in scenarios if sc.key == "up"), scenarios[0])
    out.append(
        "| scenario | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | p50 - p50(hub up), same round: "
        "median [min .. max] ms | p99 - p99(hub up), same round: median [min .. max] ms | app CPU µs/request "
        "| hub CPU % (of all cores) | errors |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|")
    for sc in scenarios:
        lat = sorted(x for r in sc.rounds for x in r.latencies_ns)
        reqs = len(lat)
        secs = sum(r.seconds for r in sc.rounds)
        cpu = sum(r.app_cpu_s for r in sc.rounds)
        hub_cpu = sum(r.hub_cpu_s for r in sc.rounds)
        if sc is ref:
            d50 = d99 = "(reference)"
        else:
            d50 = paired(sc, ref, 0.5)
            d99 = paired(sc, ref, 0.99)
        out.append(
            f"| {sc.title} | {reqs} | {reqs / secs:.0f} | {quantile(lat, 0.5) / 1e6:.2f} | "
            f"{quantile(lat, 0.9) / 1e6:.2f} | {quantile(lat, 0.99) / 1e6:.2f} | {lat[-1] / 1e6:.1f} | {d50} | {d99} "
            f"| {cpu / reqs * 1e6:.0f} | {hub_cpu / secs * 100:.0f} | {sum(r.errors for r in sc.rounds)} |"
        )
    out.append("")
    out.append("Each round's p50, ms:\n")
    out.append("| scenario | " + " | ".join(f"{i + 1}" for i in range(args.rounds)) + " |")
    out.append("|---|" + "---:|" * args.rounds)
    for sc in scenarios:
        cells = [f"{quantile(sorted(r.latencies_ns), 0.5) / 1e6:.2f}" for r in sc.rounds]
        out.append(f"| {sc.title} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Was the hub really up, down, slow?\n")
    out.append("| scenario | endpoint | app log (whole run, shutdown included) | exit status | stored by the hub |")
    out.append("|---|---|---|---:|---|")
    for sc in scenarios:
        where = {
            "none": "-",
            "up": f"`tallyhub serve` on :{hub.port}",
            "down": f":{down_port}, nobody listening",
            "slow": f"slow hub on :{stub_ports['slow']}: {received['slow']} received, each answered OK after "
            f"{args.slow_delay:g} s",
            "stub": f"stub on :{stub_ports['stub']}: {received['stub']} received, each answered OK at once",
        }[sc.hub]
        if sc.app_name:
            got = stored.get(sc.app_name, 0)
            diff = "all of them, exactly" if got == sc.sent else f"{got - sc.sent:+d}"
            kept = f"{got} of the {sc.sent} requests sent ({diff})"
        else:
            kept = "-"
        status = sc.proc.returncode if sc.proc is not None else "-"
        out.append(f"| {sc.title} | {where} | {log_evidence(sc)} | {status} | {kept} |")
    out.append("")
    for sc in scenarios:
        if sc.app_name and sc.variant == "otel" and stored.get(sc.app_name, 0) < sc.sent:
            out.append(
                f"- {sc.title}: {sc.sent - stored.get(sc.app_name, 0)} requests missing at the hub. uvicorn ends "
                "its process by re-raising the SIGTERM after its graceful shutdown (exit status -15), so the "
                "SDK's `atexit` shutdown, which makes the last collection and export, does not run: what was "
                "recorded since the last periodic export is lost. tallyhub's middleware flushes in the ASGI "
                "lifespan shutdown, before that."
            )
    for sc in scenarios:
        text = sc.log.read_text(errors="replace") if sc.log else ""
        for needle in ("did not take a batch", "not delivered at shutdown", "Transient error", "Traceback"):
            line = first_line(text, needle)
            if line:
                out.append(f"- {sc.key}, first `{needle}` line: `{line}`")
    out.append("")
    return "\n".join(out)


def paired(sc: Scenario, ref: Scenario, q: float) -> str:
    diffs = [
        (quantile(sorted(a.latencies_ns), q) - quantile(sorted(b.latencies_ns), q)) / 1e6
        for a, b in zip(sc.rounds, ref.rounds, strict=True)
    ]
    return f"{statistics.median(diffs):+.2f} [{min(diffs):+.2f} .. {max(diffs):+.2f}]"


# --------------------------------------------------------------------------------------------
# Memory through a long outage (each configuration in a subprocess: ``--memory-child NAME``).

T0_NS = 1_790_000_040 * 10**9  # a minute boundary
MINUTE_NS = 60 * 10**9
STATUSES = (200, 400, 401, 404, 500)
RESOURCES = ("users", "orders", "items", "invoices", "payments", "carts", "reviews", "shipments", "coupons", "teams")


def endpoints(n: int) -> list[tuple[str, str]]:
    """``n`` (method, route template) pairs, as a REST API has them."""
    shapes = [
        ("GET", "/{r}"),
        ("POST", "/{r}"),
        ("GET", "/{r}/{{id}}"),
        ("PUT", "/{r}/{{id}}"),
        ("DELETE", "/{r}/{{id}}"),
    ]
    shapes += [("GET", "/{r}/{{id}}/history"), ("POST", "/{r}/{{id}}/actions/{{action}}"), ("PATCH", "/{r}/{{id}}")]
    out = []
    version = 1
    while len(out) < n:
        for r in RESOURCES:
            for method, shape in shapes:
                out.append((method, f"/api/v{version}" + shape.format(r=r)))
        version += 1
    return out[:n]


MEMORY_CONFIGS = {
    # name: (series, requests per series per minute, capped, minutes collected and encoded for real)
    "max-series": (2000, 1, True, 20),
    "typical": (200, 10, True, 65),
    "typical-unbounded": (200, 10, False, 30),
}
"""Real minutes: past the point where the spool is at its steady size (cap or window), so that the peak
includes a collection's transient objects on top of a full spool."""


def memory_child(config: str, hours: float, checkpoints: list[float], seed: int) -> int:
    import gc
    import logging
    import tracemalloc

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from tallyhub import __version__
    from tallyhub.instrumentation.aggregator import RequestAggregator
    from tallyhub.instrumentation.delivery import DEFAULT_RETRY_WINDOW_S, Delivery
    from tallyhub.instrumentation.sender import GrpcSender
    from tallyhub.instrumentation.spool import DEFAULT_MEMORY_BYTES, MemorySpool
    from tallyhub.instrumentation.transport import SpoolTransport

    n_series, per_series, capped, real_minutes = MEMORY_CONFIGS[config]
    warnings: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    log = logging.getLogger("tallyhub")
    log.addHandler(Collect(logging.WARNING))
    log.propagate = False

    now = [T0_NS]
    dead = f"http://127.0.0.1:{free_port()}"
    spool = MemorySpool(DEFAULT_MEMORY_BYTES if capped else 2**62)
    delivery = Delivery(
        spool,
        lambda: GrpcSender(dead, {"x-tallyhub-app-key": "thk_bench"}, timeout_s=10.0),
        DEFAULT_RETRY_WINDOW_S if capped else 10.0**9,
        clock=lambda: now[0],
    )
    transport = SpoolTransport(delivery)
    resource = Resource.create({"service.name": "billing-api", "service.version": "2.4.1"})
    aggregator = RequestAggregator(resource, InstrumentationScope("tallyhub", __version__), lambda: now[0])
    series = [(m, r, s) for m, r in endpoints(n_series // len(STATUSES) + 1) for s in STATUSES][:n_series]
    rng = random.Random(seed)
    checkpoint_minutes = {round(h * 60): h for h in checkpoints}
    minutes = round(hours * 60)
    rows = []

    def one_minute(aggregator: RequestAggregator) -> None:
        """A minute of requests on every series, then the collection (the export loop's)."""
        t = now[0] / 1e9
        for method, route, status in series:
            body = method in ("POST", "PUT", "PATCH")
            for _ in range(per_series):
                aggregator.record(
                    method,
                    route,
                    status,
                    rng.lognormvariate(-4.0, 1.0),  # median 18 ms
                    rng.randint(80, 4000) if body else 0,
                    rng.randint(40, 20000) if status < 400 else rng.randint(60, 400),
                    t + rng.random() * 59.9,
                )
        now[0] += MINUTE_NS

    class Keep:
        def __init__(self) -> None:
            self.batches: list[tuple[bytes, int]] = []

        def submit(self, kind: str, payload: bytes, points: int) -> None:
            self.batches.append((payload, points))

    # Templates for the minutes after the real ones, made before tracing starts (not counted).
    keep = Keep()
    template_aggregator = RequestAggregator(resource, InstrumentationScope("tallyhub", __version__), lambda: now[0])
    for _ in range(min(real_minutes, minutes)):
        one_minute(template_aggregator)
        SpoolTransport(keep).send_metrics(template_aggregator.collect())  # type: ignore[arg-type]
    templates = keep.batches
    now[0] = T0_NS
    batch_bytes: list[int] = []
    submit = delivery.submit

    def measured_submit(kind: str, payload: bytes, points: int) -> Any:
        batch_bytes.append(len(payload))
        return submit(kind, payload, points)

    delivery.submit = measured_submit  # type: ignore[method-assign]
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    for minute in range(1, minutes + 1):
        if minute <= real_minutes:  # requests recorded, collected, encoded and spooled for real
            one_minute(aggregator)
            transport.send_metrics(aggregator.collect())
        else:  # a copy of a real minute's payload: a new bytes object of the same size, a new batch
            now[0] += MINUTE_NS
            payload, points = templates[(minute - 1) % len(templates)]
            delivery.submit("metrics", bytes(memoryview(payload)), points)
        delivery.deliver_due()  # the delivery thread's attempt, when its backoff allows: fails (dead port)
        if minute in checkpoint_minutes:
            current, peak = tracemalloc.get_traced_memory()  # before anything here allocates
            held = list(spool.batches())
            oldest_min = (now[0] - held[0].created_ns) / MINUTE_NS if held else 0
            n_held = len(held)
            del held  # (kept, it would hold dropped batches alive until the next checkpoint)
            drop = {"cap": [0, 0], "window": [0, 0]}
            for reason, (b, p) in delivery.dropped.items():
                entry = drop["cap" if "spool was full" in reason else "window" if "retry window" in reason else reason]
                entry[0] += b
                entry[1] += p
            rows.append(
                {
                    "hours": checkpoint_minutes[minute],
                    "collected": minute,
                    "batch_kb": statistics.fmean(batch_bytes) / 1024,
                    "held": n_held,
                    "spool_mib": spool.size_bytes / MIB,
                    "oldest_min": oldest_min,
                    "dropped_cap": drop["cap"],
                    "dropped_window": drop["window"],
                    "delivered": delivery.delivered,
                    "traced_mib": current / MIB,
                    "traced_peak_mib": peak / MIB,
                    "rss_mib": proc_status("VmRSS") / 1024,
                    "hwm_mib": proc_status("VmHWM") / 1024,
                    "warnings": len(warnings),
                    "elapsed_s": time.perf_counter() - started,
                }
            )
    print(
        json.dumps(
            {
                "config": config,
                "series": len(series),
                "per_series": per_series,
                "points_per_batch": 3 * len(series),
                "cap_mib": spool.max_bytes / MIB if capped else None,
                "window_s": delivery.retry_window_s if capped else None,
                "rows": rows,
                "real_minutes": min(real_minutes, minutes),
                "warnings": {
                    kind: sum(kind in w for w in warnings)
                    for kind in ("did not take a batch", "older than the", "spool was full")
                    if any(kind in w for w in warnings)
                },
            }
        )
    )
    return 0


def proc_status(name: str) -> int:
    """A kB field of /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def run_memory(args: argparse.Namespace) -> str:
    checkpoints = sorted({h for h in (1, 2, 5, 10) if h <= args.hours} | {args.hours})
    out = ["## Memory through a long outage (simulated clock, no network)\n"]
    out.append(
        f"A `Delivery` with tallyhub's defaults (`MemorySpool`, 16 MiB cap; 1 h retry window) and a simulated "
        f"clock, its `GrpcSender` pointed at a dead port, fed through `SpoolTransport.send_metrics` by a real "
        f"`RequestAggregator`: one collection per simulated minute, then the delivery thread's `deliver_due()` "
        f"(an attempt whenever the backoff allows, which fails at once), for {args.hours:g} simulated hours. "
        f"Requests: lognormal durations (median 18 ms), body sizes for POST/PUT/PATCH, spread over each minute. "
        f"Each configuration runs in a fresh Python process: tracemalloc (started just before the first minute) "
        f"counts the Python heap allocated since and still held; RSS is the whole process (Python, gRPC, "
        f"protobuf, imports).\n"
    )
    # Two at a time (2 cores): the results are byte counts, not timings.
    progress(f"memory: {', '.join(MEMORY_CONFIGS)}, {args.hours:g} simulated hours each ...")
    pending = list(MEMORY_CONFIGS)
    running: dict[str, subprocess.Popen] = {}
    outputs: dict[str, tuple[int, str, str]] = {}
    try:
        while pending or running:
            while pending and len(running) < 2:
                config = pending.pop(0)
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--memory-child",
                    config,
                    "--hours",
                    str(args.hours),
                ]
                cmd += ["--checkpoints", ",".join(f"{h:g}" for h in checkpoints), "--seed", str(args.seed)]
                running[config] = subprocess.Popen(
                    cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            for config, proc in list(running.items()):
                if proc.poll() is not None:
                    stdout, stderr = proc.communicate()
                    outputs[config] = (proc.returncode, stdout, stderr)
                    del running[config]
            time.sleep(0.1)
    finally:
        for proc in running.values():  # interrupted: none left behind
            proc.kill()
            proc.wait()
    results = []
    for config in ("typical", "typical-unbounded", "max-series"):
        code, stdout, stderr = outputs[config]
        if code != 0:
            raise RuntimeError(f"memory child {config} failed: {stderr[-3000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    out.append(
        "| configuration | series | data points / batch | mean batch KiB | after | batches in spool | spool MiB "
        "(cap) | oldest held, min | dropped: cap (batches) | dropped: retry window (batches) | traced heap MiB "
        "(peak) | RSS MiB (peak) |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|")
    for res in results:
        name = {
            "typical": "tallyhub defaults, 200 series",
            "typical-unbounded": "same batches, no cap and no window (an unbounded list)",
            "max-series": "tallyhub defaults, 2000 series (the per-interval limit)",
        }[res["config"]]
        cap = f"{res['cap_mib']:.0f}" if res["cap_mib"] else "none"
        for row in res["rows"]:
            out.append(
                f"| {name} | {res['series']} | {res['points_per_batch']} | {row['batch_kb']:.1f} | {row['hours']:g} h "
                f"| {row['held']} | {row['spool_mib']:.2f} ({cap}) | {row['oldest_min']:.0f} | {row['dropped_cap'][0]} "
                f"| {row['dropped_window'][0]} | {row['traced_mib']:.1f} ({row['traced_peak_mib']:.1f}) "
                f"| {row['rss_mib']:.0f} ({row['hwm_mib']:.0f}) |"
            )
    out.append("")
    for res in results:
        last = res["rows"][-1]
        kinds = ", ".join(f"{n} x '{w}'" for w, n in res["warnings"].items())
        out.append(
            f"- {res['config']}: {res['real_minutes']} minutes collected for real, then copies; "
            f"{last['warnings']} warnings logged in {last['hours']:g} simulated hours ({kinds}); "
            f"{last['elapsed_s']:.0f} s of real time"
        )
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Machine and versions.

VERSIONED = [
    "tallyhub",
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "h11",
    "httptools",
    "uvloop",
    "grpcio",
    "protobuf",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-instrumentation-fastapi",
    "chdb",
]


def loadavg() -> str:
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        return " / ".join(f.read().split()[:3])
    return "unknown"


@contextlib.contextmanager
def terminated_on_sigterm() -> Iterator[None]:
    """A SIGTERM to the benchmark unwinds through the ``finally`` blocks (which stop its processes)."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="latency: rounds per scenario (default 10)")
    parser.add_argument("--seconds", type=float, default=2.0, help="latency: seconds of load per round (default 2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="latency: warm-up seconds per scenario (default 2)")
    parser.add_argument("--clients", type=int, default=4, help="latency: concurrent keep-alive clients (default 4)")
    parser.add_argument(
        "--slow-delay", type=float, default=5.0, help="seconds the slow hub sleeps before answering OK (default 5)"
    )
    parser.add_argument("--no-stock", dest="stock", action="store_false", help="leave out the stock OpenTelemetry apps")
    parser.add_argument("--hours", type=float, default=10.0, help="memory: simulated hours of outage (default 10)")
    parser.add_argument("--only", choices=["latency", "memory"], help="run one part only")
    parser.add_argument(
        "--quick", action="store_true", help="a short run (~1.5 min): 3 rounds x 1 s, 1 s warm-up, 2 simulated hours"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=10.0,
        help="minutes to wait at most for an idle machine before starting (default 10; 0: do not wait)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, hub data)")
    # internal modes
    parser.add_argument("--slow-hub-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", choices=list(MEMORY_CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints", default="1,2,5,10", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help="seed of the round orders and of the simulated requests")
    args = parser.parse_args(argv)

    if args.slow_hub_port:
        return serve_slow_hub(args.slow_hub_port, args.slow_delay)
    if args.memory_child:
        checkpoints = [float(h) for h in args.checkpoints.split(",")]
        return memory_child(args.memory_child, args.hours, checkpoints, args.seed)
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.hours = 3, 1.0, 1.0, 2.0
    if args.rounds < 1 or args.seconds <= 0 or args.clients < 1 or args.hours <= 0:
        parser.error("--rounds, --seconds, --clients and --hours must be positive")

    started = time.monotonic()
    idle = wait_until_idle(args.wait_idle) if args.wait_idle > 0 else "not checked (--wait-idle 0)"
    digest = source_digest()
    print("# Resilience benchmark\n")
    print(f"- Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"- Machine: {machine()}")
    print(f"- Versions: {versions(VERSIONED)}")
    print(f"- tallyhub instrumentation sources: sha256 {digest} (instrumentation/**/*.py)")
    command = " ".join(["python benchmarks/resilience.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"- Command: `{command}`")
    print(f"- Before the run: {idle}; load average (1 / 5 / 15 min) {loadavg()}")
    print()
    sys.stdout.flush()
    work = Path(tempfile.mkdtemp(prefix="tallyhub-resilience-"))
    procs = Processes()
    try:
        with terminated_on_sigterm():
            if args.only in (None, "latency"):
                print(run_latency(args, work, procs), flush=True)
            if args.only in (None, "memory"):
                print(run_memory(args), flush=True)
    finally:
        procs.stop_all()
        if args.keep:
            progress(f"logs and data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if source_digest() != digest:
        print(f"**The instrumentation sources changed during the run** (now sha256 {source_digest()}): rerun.\n")
    print(f"Total: {time.monotonic() - started:.0f} s; load average at the end: {loadavg()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
