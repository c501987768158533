"""deploy/grafana: every panel's query and variable, with the plugin's macros expanded, runs on chDB
against the real schema and data stored through the hub's own path, and returns the columns the
panel reads, at each level (minutes, hourly and daily rollups); the provisioning files hold what
Grafana needs (a fixed datasource uid, the password at the top level of secureJsonData)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.receiver import KIND_LOGS, KIND_METRICS
from tallyhub.collector_processor.store import Processor
from tallyhub.instrumentation.aggregator import RequestAggregator
from tallyhub.instrumentation.consumers import Consumer
from tallyhub.instrumentation.server_errors import ServerError
from tallyhub.instrumentation.validation_errors import ValidationError
from tallyhub.storage.writer import insert_batch
from tests.collector_processor import startup_events
from tests.deploy.grafana_macros import expand

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
NOW = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
DAY_S = 86400
# the request minutes, seconds before NOW: an hour, a day and 40 days ago
AGES_S = (3600, DAY_S + 600, 40 * DAY_S)
REQUESTS_PER_AGE = 5


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboards", GRAFANA / "dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DASHBOARDS = load_generator()


def export_of(age_s: int) -> bytes:
    """What tallyhub's client exports for requests that finished ``age_s`` seconds before NOW."""
    at_s = NOW.timestamp() - age_s
    resource = Resource.create({**startup_events.RESOURCE})
    agg = RequestAggregator(resource, InstrumentationScope("tallyhub"), clock=lambda: int(at_s * 1e9))
    acme = Consumer("acme", "Acme", "customers")
    for i in range(REQUESTS_PER_AGE):
        agg.record("GET", "/items/{item_id}", 200, 0.01 * (i + 1), 0, 100, at_s, acme)
    missing = ValidationError("body.sku", "Field required", "missing")
    agg.record("POST", "/items", 422, 0.02, 50, 80, at_s, acme, [missing])
    boom = ServerError("KeyError", "'sku'", "Traceback (most recent call last):\nKeyError: 'sku'", "f1")
    agg.record("POST", "/items", 500, 0.3, 50, 0, at_s, None, None, boom)
    return encode_metrics(agg.collect()).SerializeToString()


@pytest.fixture
def stored(ch, tmp_path: Path):
    """The app `shop`, env `prod`: requests an hour, a day and 40 days ago, and its start-up event."""
    queue = DurableQueue(tmp_path / "queue")
    received_ns = time.time_ns()
    for age_s in AGES_S:
        queue.append(KIND_METRICS, "shop", export_of(age_s), received_ns)
    started = startup_events.export(startup_events.log_record(time_ns=int((NOW.timestamp() - 2 * 3600) * 1e9)))
    queue.append(KIND_LOGS, "shop", started.SerializeToString(), received_ns)
    processor = Processor(queue, lambda tables, token: insert_batch(ch, tables, token), tmp_path / "rejected")
    assert processor.process(queue.next_batch(100, 1 << 30, wait_s=0))
    queue.close()
    return ch


def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "tallyhub-overview.json").read_text())


def run(ch, sql: str, hours: float, env: str = "__all") -> tuple[list[str], list[tuple]]:
    start = NOW - dt.timedelta(hours=hours)
    interval_s = max(int(hours * 3600 / 1000), 1)  # Grafana's: the range over the panel's ~1000 points
    result = ch.query(expand(sql, start, NOW, interval_s, {"app": "shop", "env": env}))
    return list(result.column_names), result.result_rows


def test_the_json_files_are_the_generators_output() -> None:
    """deploy/grafana/dashboards.py writes them: run it after a change."""
    assert dashboard() == json.loads(json.dumps(DASHBOARDS.overview()))


@pytest.mark.parametrize(
    ("hours", "requests"),
    [
        (6, REQUESTS_PER_AGE + 2),  # minutes: the last hour's requests
        (7 * 24, 2 * (REQUESTS_PER_AGE + 2)),  # hourly rollup: also the day-old ones
        (90 * 24, 3 * (REQUESTS_PER_AGE + 2)),  # daily rollup: all
    ],
    ids=["6h-minutes", "7d-hourly", "90d-daily"],
)
def test_every_panel_answers_with_the_columns_it_reads(stored, hours: float, requests: int) -> None:
    panels = {p["title"]: p for p in dashboard()["panels"]}
    for title, _kind, _sql, _grid, columns in DASHBOARDS.PANELS:
        (target,) = panels[title]["targets"]
        assert target["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": "tallyhub-clickhouse"}
        names, rows = run(stored, target["rawSql"], hours)
        assert names == columns, title
        assert rows, f"{title}: no rows over {hours} h"
    _, traffic = run(stored, DASHBOARDS.TRAFFIC, hours)
    assert sum(row[1] for row in traffic) == requests
    assert sum(row[3] for row in traffic) == requests // (REQUESTS_PER_AGE + 2)  # one 500 per age
    ((total, client_rate, server_rate, apdex),) = run(stored, DASHBOARDS.SUMMARY, hours)[1]
    assert total == requests and client_rate == pytest.approx(1 / 7) and server_rate == pytest.approx(1 / 7)
    assert 0.9 < apdex <= 1
    endpoints = {(row[0], row[1]): row for row in run(stored, DASHBOARDS.ENDPOINTS, hours)[1]}
    get = endpoints[("GET", "/items/{item_id}")]
    assert get[2] == requests // 7 * REQUESTS_PER_AGE and 20 <= get[5] <= 40  # p50 of 10..50 ms: ~30 ms
    consumers = run(stored, DASHBOARDS.CONSUMERS, hours)[1]
    assert [(c[0], c[1], c[2], c[3]) for c in consumers] == [("acme", "Acme", "customers", requests // 7 * 6)]


def test_an_env_that_sent_nothing_shows_nothing(stored) -> None:
    assert run(stored, DASHBOARDS.TRAFFIC, 6, env="staging")[1] == []
    assert run(stored, DASHBOARDS.TRAFFIC, 6, env="prod")[1] != []


def test_the_variables_list_the_apps_and_their_envs(stored) -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert run(stored, variables["app"]["query"], 6)[1] == [("shop",)]
    assert run(stored, variables["env"]["query"], 6)[1] == [("prod",)]
    assert variables["env"]["allValue"] == "__all" and not variables["app"]["includeAll"]


def test_the_datasource_is_provisioned_with_a_fixed_uid_and_its_password_at_the_top_level() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text())
    (source,) = provisioned["datasources"]
    assert source["uid"] == "tallyhub-clickhouse" and source["type"] == "grafana-clickhouse-datasource"
    assert source["jsonData"]["host"] == "$GRAFANA_CLICKHOUSE_HOST"
    assert source["jsonData"]["username"] == "grafana" and source["jsonData"]["defaultDatabase"] == "tallyhub"
    assert source["secureJsonData"] == {"password": "$GRAFANA_CLICKHOUSE_PASSWORD"}  # not under jsonData
    assert "password" not in source["jsonData"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "tallyhub.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    text = (GRAFANA / "dashboards" / "tallyhub-overview.json").read_text()
    assert "${DS_" not in text and "__inputs" not in text  # no import-time inputs: provisioned as it is
