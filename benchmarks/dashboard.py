"""Dashboard: the server time of each dashboard page on embedded chDB, over the storage benchmark's
data (``storage.py``: 200 endpoints, 30 days of minute data, then 12 months of day rows), next to
`tallyhub report` for the same windows.

    python benchmarks/dashboard.py                        # ~10 min on 2 cores (~6 of them the data)
    python benchmarks/dashboard.py --data-dir /tmp/dash   # keep the data there; the next run reuses it
    python benchmarks/dashboard.py --quick                # ~1.5 min: 3 days, 150 rows per minute, 3 runs
    python benchmarks/dashboard.py --help

What it does:

1. The data, as ``storage.py`` makes it (its functions, imported): a fresh chDB, ``migrate``, the app,
   ``--days`` of per-minute data ending now through ``insert_batch``, ``OPTIMIZE ... FINAL``, then the
   daily rollup's rows copied 11 times, 30 days further back each (``fill_year``: 12 months of day
   rows; the minute tables and the hourly rollup keep ``--days``). With ``--data-dir`` the chDB
   directory is kept and reused by the next run with the same ``--days``, ``--rows-per-minute`` and
   ``--seed`` (the time the data ends is stored with it and is the "now" of every window).
2. Each page is the API call it makes (``dashboard/static/js/pages.js``: one each): apps overview
   ``/api/apps``, traffic, latency, endpoints, endpoint detail (``/api/endpoint`` for the busiest
   endpoint), errors, consumers, instances. Its server time is the handler of
   ``tallyhub.dashboard.api.GETS`` called with the runner the hub builds (``TrustedRunner`` on a writer
   client and a read-only one, ``open_client(url, db)`` and ``open_client(url, db, readonly=True)``),
   for the ranges 24h, 7d, 30d and 12mo; and with a ``ClientRunner`` on the same clients, which runs
   ``check_read_only`` (two parser queries) before each read, as the dashboard did before. The same
   pages through HTTP: the Starlette app of ``create_app(Dashboard(runner))`` served by the hub's
   ``DashboardServer`` on a loopback port, with a session from ``Sessions.open``, over one keep-alive
   connection (the body read, not parsed). And
   `tallyhub report` (``build_report``, as ``storage.py`` times it) for ``--since`` 24h, 7d, 30d and 365d.
3. One warm-up round, then ``--runs`` rounds of everything in turn (interleaved: a slower or faster
   phase of this shared VM hits them all alike); median and p95 (nearest rank) of the rounds.

Markdown on stdout, progress on stderr. No assertion on any time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from machine import machine, progress, versions

from storage import APP, OtherLoad, Traffic, fill_year, load, optimize, wait_until_idle
from tallyhub.dashboard.api import GETS
from tallyhub.dashboard.app import Dashboard, create_app
from tallyhub.dashboard.server import DashboardServer
from tallyhub.dashboard.sessions import COOKIE, Sessions
from tallyhub.storage.apps import create_app as create_tallyhub_app
from tallyhub.storage.backend import ClientRunner, TrustedRunner, open_client
from tallyhub.storage.migrate import migrate
from tallyhub.storage.report_queries import build_report
from tallyhub.storage.window import resolve_window

DATABASE = "tallyhub"
MARKER = "dashboard-bench.json"
RANGES = {"24h": "24h", "7d": "7d", "30d": "30d", "12mo": "365d"}  # dashboard range: report --since
BUDGET_MS = {"30d": 300.0, "12mo": 500.0}
PAGES = ("apps", "traffic", "latency", "endpoints", "endpoint", "errors", "consumers", "instances")
PAGE_NAMES = {"apps": "apps overview", "endpoint": "endpoint detail"}


# --------------------------------------------------------------------------------------------
# The data: storage.py's, in a chDB directory kept between runs with --data-dir.


@dataclass
class Data:
    work: Path
    now: dt.datetime
    """The end of the data: the "now" of every window."""
    built: str
    """How the data came to be: built by this run (with its timings), or reused."""


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {"days": args.days, "rows_per_minute": args.rows_per_minute, "seed": args.seed, "year": True}


def reuse(work: Path, settings: Mapping[str, Any]) -> Data | None:
    try:
        stored = json.loads((work / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if stored.get("settings") != dict(settings):
        return None
    now = dt.datetime.fromtimestamp(stored["now"], dt.UTC)
    return Data(work, now, f"reused from {work} (built {stored['built']})")


def build(client: Any, work: Path, args: argparse.Namespace, other: OtherLoad) -> Data:
    """storage.py's data through ``client``, on the empty ``work``: the load, OPTIMIZE FINAL, then 12
    months of day rows."""
    migrate(client)
    create_tallyhub_app(ClientRunner(client), APP, hashlib.sha256(b"bench-key").hexdigest())
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    end_minute = int(now.timestamp()) // 60  # the current minute is not in the data
    minutes = int(args.days * 1440)
    progress("calibrating the request rate")
    traffic = Traffic(args.rows_per_minute, args.seed)
    progress(f"generating and inserting {args.days:g} days, {args.rows_per_minute:g} rows per minute")
    t0 = time.perf_counter()
    loaded = load(client, traffic, end_minute - minutes, minutes, 60)
    other.phase("load")
    optimize(client)
    year_rows = fill_year(client)
    other.phase("OPTIMIZE, 12 months")
    built = (
        f"{now:%Y-%m-%d %H:%M} UTC in {time.perf_counter() - t0:.0f} s: {loaded.rows['requests']:,} minute rows, "
        f"{year_rows:,} day rows copied back"
    )
    (work / MARKER).write_text(json.dumps({"settings": settings_of(args), "now": int(now.timestamp()), "built": built}))
    return Data(work, now, f"built {built}")


# --------------------------------------------------------------------------------------------
# What is timed.


@dataclass
class Timed:
    name: str
    run: Callable[[], object]
    ms: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.ms)
        return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


def page_query(page: str, range_: str, endpoint: Mapping[str, str]) -> dict[str, str]:
    """The query string the page sends (``apiParams`` in dashboard/static/js/main.js)."""
    query = {"range": range_} if page == "apps" else {"app": APP, "range": range_}
    return query | dict(endpoint) if page == "endpoint" else query


class HttpClient:
    """GETs on the dashboard over one keep-alive connection, with a session cookie."""

    def __init__(self, server: DashboardServer, session: str) -> None:
        self.connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
        self.headers = {"Cookie": f"{COOKIE}={session}"}

    def get(self, page: str, query: Mapping[str, str]) -> int:
        self.connection.request("GET", f"/api/{page}?{urlencode(query)}", headers=self.headers)
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/api/{page}: HTTP {response.status}: {body[:200]!r}")
        return len(body)


def rounds(items: list[Timed], runs: int) -> None:
    """One warm-up round, then ``runs`` rounds of every item in turn."""
    for round_ in range(runs + 1):
        t_round = time.perf_counter()
        for item in items:
            t0 = time.perf_counter()
            item.run()
            if round_:
                item.ms.append((time.perf_counter() - t0) * 1000)
        progress(f"  round {round_}/{runs}{' (warm-up)' if not round_ else ''}: {time.perf_counter() - t_round:.1f} s")


def busiest_endpoint(runner: ClientRunner, now: dt.datetime) -> dict[str, str]:
    (top, *_) = GETS["endpoints"](runner, {"app": APP, "range": "30d"}, now)["endpoints"]
    return {"method": top["method"], "route": top["route"]}


# --------------------------------------------------------------------------------------------


def table(timed: Mapping[str, Timed], http: Mapping[str, Timed], with_check: Mapping[str, Timed]) -> list[str]:
    head = " | ".join(f"{r} median / p95" for r in RANGES)
    out = [f"| page (API call) | {head} |", "|---|" + "---:|" * len(RANGES)]

    def cells(key: Callable[[str], str], source: Mapping[str, Timed]) -> str:
        return " | ".join(
            f"{source[key(r)].median:,.0f} / {source[key(r)].p95:,.0f}" if key(r) in source else "-" for r in RANGES
        )

    for page in PAGES:
        label = f"{PAGE_NAMES.get(page, page)} (`/api/{page}`)"
        out.append(f"| {label} | {cells(lambda r, p=page: f'{p} {r}', timed)} |")
    out.append(f"| **slowest page** | {' | '.join(slowest(timed, r) for r in RANGES)} |")
    for page in PAGES:
        out.append(f"| {PAGE_NAMES.get(page, page)}, through HTTP | {cells(lambda r, p=page: f'{p} {r}', http)} |")
    for page in PAGES:
        label = f"{PAGE_NAMES.get(page, page)}, `ClientRunner` (with `check_read_only`)"
        out.append(f"| {label} | {cells(lambda r, p=page: f'{p} {r}', with_check)} |")
    reports = " | ".join(f"{timed[f'report {r}'].median:,.0f} / {timed[f'report {r}'].p95:,.0f}" for r in RANGES)
    out.append(f"| `tallyhub report --since {'/'.join(RANGES.values())}` (whole `build_report`) | {reports} |")
    return out


def slowest(timed: Mapping[str, Timed], range_: str) -> str:
    worst = max((timed[f"{page} {range_}"] for page in PAGES), key=lambda t: t.median)
    budget = BUDGET_MS.get(range_)
    verdict = "" if budget is None else (" (met)" if worst.median <= budget else f" (**{worst.median / budget:.1f}x**)")
    return f"{worst.median:,.0f}{verdict}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=float, default=30.0, help="days of minute data ending now (default 30)")
    parser.add_argument(
        "--rows-per-minute", type=float, default=300.0, help="`requests` rows per minute on average (default 300)"
    )
    parser.add_argument("--runs", type=int, default=7, help="timed rounds after the warm-up (default 7)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="3 days, 150 rows per minute, 3 runs")
    parser.add_argument(
        "--data-dir", type=Path, help="keep the chDB data here and reuse it when built with the same settings"
    )
    parser.add_argument("--wait-idle", type=float, default=10.0, help="minutes to wait for other benchmarks to end")
    args = parser.parse_args(argv)
    if args.quick:
        args.days, args.rows_per_minute, args.runs = min(args.days, 3.0), min(args.rows_per_minute, 150.0), 3
    started = time.monotonic()
    idle = wait_until_idle(args.wait_idle)
    progress(idle)
    work = args.data_dir or Path(tempfile.mkdtemp(prefix="tallyhub-dashboard-bench-"))
    other = OtherLoad()
    data = reuse(work, settings_of(args))
    if data is None:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    url = f"chdb://{work}"
    # As the hub's dashboard runner (collector_processor/hub.py); both stay open to the end: closing
    # chDB's last client stops the embedded engine, which may not start again in the same process.
    runner = TrustedRunner(open_client(url, DATABASE, create=True), open_client(url, DATABASE, readonly=True))
    try:
        if data is None:
            data = build(runner.client, work, args, other)
        else:
            migrate(runner.client)  # reused data gets the schema of the code as it is
        progress(f"data {data.built}")
        return run(args, runner, data, idle, other, started)
    finally:
        for client in (runner.client, runner.reader):
            if client is not None:
                client.close()
        if args.data_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(
    args: argparse.Namespace, runner: TrustedRunner, data: Data, idle: str, other: OtherLoad, started: float
) -> int:
    checked = ClientRunner(runner.client, runner.reader)  # the same clients, with check_read_only
    sessions = Sessions()
    server = DashboardServer(create_app(Dashboard(runner, sessions, now=lambda: data.now)), "127.0.0.1:0")
    server.start()
    try:
        endpoint = busiest_endpoint(runner, data.now)
        web = HttpClient(server, sessions.open("bench"))
        timed: dict[str, Timed] = {}
        http: dict[str, Timed] = {}
        with_check: dict[str, Timed] = {}
        for range_, since in RANGES.items():
            for page in PAGES:
                query = page_query(page, range_, endpoint)
                name = f"{page} {range_}"
                timed[name] = Timed(name, lambda p=page, q=query: GETS[p](runner, q, data.now))
                http[name] = Timed(name, lambda p=page, q=query: web.get(p, q))
                with_check[name] = Timed(name, lambda p=page, q=query: GETS[p](checked, q, data.now))
            window = resolve_window(data.now, since)
            timed[f"report {range_}"] = Timed(range_, lambda w=window: build_report(runner, APP, w))
        progress(f"{len(timed) + len(http) + len(with_check)} timed calls a round, busiest endpoint {endpoint}")
        other.phase("setup")
        rounds([*timed.values(), *http.values(), *with_check.values()], args.runs)
        other.phase("measurement")
    finally:
        server.stop()
    took = time.monotonic() - started
    print(f"Run of {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, `python benchmarks/dashboard.py` ({took:.0f} s)")
    print()
    print(f"- Machine: {machine()}; {versions(('chdb', 'chdb-core', 'clickhouse-connect', 'starlette', 'uvicorn'))}")
    print(f"- Data: {data.built}; {args.days:g} days, {args.rows_per_minute:g} rows per minute, seed {args.seed}")
    print(f"- Busiest endpoint (the endpoint page's): `{endpoint['method']} {endpoint['route']}`")
    print(f"- Load: at the start {idle}; other processes' busy cores by phase: {', '.join(other.phases)}")
    print(f"- Milliseconds, median / p95 of {args.runs} rounds after a warm-up")
    print()
    print("\n".join(table(timed, http, with_check)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
