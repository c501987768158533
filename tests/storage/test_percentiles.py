"""Percentiles from the stored histograms, through the real pipeline (tallyhub's client
aggregates → OTLP → processor → ClickHouse → rollups → `tallyhub_quantile`), against the exact
percentiles of the generated durations: within 2 % at the minute, hour and day levels."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.receiver import KIND_METRICS
from tallyhub.collector_processor.store import Processor
from tallyhub.instrumentation.aggregator import RequestAggregator
from tallyhub.storage.writer import insert_batch

DAY = int(time.time()) // 86400 * 86400 - 86400  # yesterday, 00:00 UTC
QUANTILES = (0.50, 0.75, 0.95, 0.99)
N = 12_000


def uniform(rng: random.Random) -> float:
    return rng.uniform(0.005, 0.5)


def log_normal(rng: random.Random) -> float:
    return rng.lognormvariate(math.log(0.05), 1.0)


def bimodal(rng: random.Random) -> float:
    return abs(rng.gauss(0.02, 0.003)) if rng.random() < 0.7 else abs(rng.gauss(0.8, 0.08))


DISTRIBUTIONS = {"/uniform": uniform, "/log-normal": log_normal, "/bimodal": bimodal}


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


@pytest.fixture(scope="module")
def stored(chdb_url: str, tmp_path_factory) -> tuple:
    """Three hours of requests for each distribution, sent the way a client sends them (a
    collection every 10 minutes), processed into the tables; returns (client, generated values)."""
    from tallyhub.storage.backend import open_client
    from tallyhub.storage.migrate import migrate

    client = open_client(chdb_url, "percentiles", create=True)
    migrate(client)
    directory: Path = tmp_path_factory.mktemp("percentiles")
    queue = DurableQueue(directory / "q")
    processor = Processor(queue, lambda tables, token: insert_batch(client, tables, token), directory / "rejected")
    rng = random.Random(42)
    now = [DAY * 10**9]
    aggregator = RequestAggregator(Resource.create({}), InstrumentationScope("tallyhub"), lambda: now[0])
    values: dict[str, list[tuple[float, float]]] = {route: [] for route in DISTRIBUTIONS}
    start = DAY + 9 * 3600  # 09:00 to 12:00
    for i in range(N):
        at = start + i * (3 * 3600 / N)
        for route, draw in DISTRIBUTIONS.items():
            duration = draw(rng)
            values[route].append((at, duration))
            aggregator.record("GET", route, 200, duration, 0, 10, at)
        if int(at) // 600 != int(at + 3 * 3600 / N) // 600:  # a collection every 10 minutes
            now[0] = int((at + 1) * 1e9)
            queue.append(KIND_METRICS, "shop", encode_metrics(aggregator.collect()).SerializeToString(), 0)
    now[0] = (start + 3 * 3600 + 1) * 10**9
    data = aggregator.collect()
    if data is not None:
        queue.append(KIND_METRICS, "shop", encode_metrics(data).SerializeToString(), 0)
    while queue.depth():
        assert processor.process(queue.next_batch(50, 1 << 30, wait_s=0))
    yield client, values
    client.close()


LEVELS = {
    # level: (table, time column, the window [from, to) as seconds since DAY)
    "minute": ("requests", "minute", (10 * 3600 + 7 * 60, 10 * 3600 + 8 * 60)),
    "hour": ("requests_hourly", "hour", (10 * 3600, 11 * 3600)),
    "day": ("requests_daily", "day", (0, 86400)),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("route", DISTRIBUTIONS)
def test_percentiles_within_two_percent(stored, level: str, route: str) -> None:
    client, values = stored
    table, column, (begin, end) = LEVELS[level]
    window = [d for at, d in values[route] if DAY + begin <= at < DAY + end]
    assert len(window) >= 60
    quantiles = ", ".join(f"tallyhub_quantile({q}, sumMap(duration_buckets), sum(requests))" for q in QUANTILES)
    ((count, *estimates),) = client.query(
        f"SELECT sum(requests), {quantiles} FROM {table} WHERE route = {{route:String}} "
        f"AND {column} >= toDateTime({{begin:UInt32}}) AND {column} < toDateTime({{end:UInt32}})",
        parameters={"route": route, "begin": DAY + begin, "end": DAY + end},
    ).result_rows
    assert count == len(window)
    for q, estimate in zip(QUANTILES, estimates, strict=True):
        truth = exact(window, q)
        assert abs(estimate - truth) / truth <= 0.02, (q, estimate, truth)
