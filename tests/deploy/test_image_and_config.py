"""deploy/Dockerfile linted by hadolint and read for what a production image needs; ClickHouse's XML
configs parsed and checked; every TALLYHUB_*/OTEL_* variable the deploy files set is one tallyhub
reads (taken from the CLI's options and the package's code, not from a second list)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import click

from tallyhub.collector_processor.cli import main

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
LOG_TABLES = {"query_log", "part_log", "trace_log", "metric_log", "asynchronous_metric_log", "text_log"}


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def final_stage(text: str) -> str:
    return text[text.rindex("\nFROM ") :]


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--config", str(DEPLOY / ".hadolint.yaml"), str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_user_with_a_volume_ports_and_a_health_check() -> None:
    stage = final_stage(dockerfile())
    user = re.findall(r"^USER\s+(\S+)", stage, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^VOLUME \["/var/lib/tallyhub"\]', stage, re.M)
    assert "TALLYHUB_DATA_DIR=/var/lib/tallyhub" in stage
    assert set(re.search(r"^EXPOSE (.+)$", stage, re.M)[1].split()) >= {"4317", "4318", "8125"}
    assert re.search(r"^HEALTHCHECK .*\n?.*127\.0\.0\.1:4318/healthz", stage, re.M)
    assert "gcc" not in stage  # the compiler stays in the build stage
    assert all(":latest" not in line for line in dockerfile().splitlines() if line.startswith("FROM"))


def test_the_image_installs_this_version_of_tallyhub() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert f'"tallyhub[${{EXTRAS}}]=={version}"' in dockerfile()
    compose = (DEPLOY / "compose.yaml").read_text()
    assert f"image: tallyhub:{version}" in compose and f"image: tallyhub-demo:{version}" in compose


def variables_tallyhub_reads() -> set[str]:
    """The CLI's options' variables, and the names the package's code reads (the client's, the password's)."""
    names: set[str] = set()

    def walk(command: click.Command) -> None:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(main)
    for path in REPO.glob("[a-z]*/**/*.py"):
        if path.parts[len(REPO.parts)] not in ("tests", "benchmarks", "scripts", "build", "deploy"):
            names.update(re.findall(r"[\"']((?:TALLYHUB|OTEL)_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def test_every_variable_the_deploy_files_set_is_one_tallyhub_reads() -> None:
    known = variables_tallyhub_reads()
    assert {"TALLYHUB_STORAGE_URL", "TALLYHUB_APP_KEYS_FILE", "TALLYHUB_CLICKHOUSE_PASSWORD_FILE"} <= known
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in known
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix in ("", ".yaml", ".yml", ".sh", ".xml")]
    used: dict[str, set[str]] = {}
    for path in files:
        for name in re.findall(r"\b((?:TALLYHUB|OTEL)_[A-Z0-9_]+)\b", path.read_text()):
            used.setdefault(name, set()).add(str(path.relative_to(DEPLOY)))
    unknown = {name: sorted(where) for name, where in used.items() if name not in known}
    assert unknown == {}, "variables tallyhub does not read"
    assert "TALLYHUB_GRPC_ADDRESS" in used and "TALLYHUB_APP_KEYS_FILE" in used


def test_clickhouse_users_the_hub_writes_grafana_only_reads() -> None:
    root = ET.parse(DEPLOY / "clickhouse" / "users.d" / "tallyhub.xml").getroot()
    users = root.find("users")
    hub, grafana = users.find("tallyhub"), users.find("grafana")
    for user, variable in ((hub, "TALLYHUB_CLICKHOUSE_PASSWORD"), (grafana, "GRAFANA_CLICKHOUSE_PASSWORD")):
        assert user.find("password").get("from_env") == variable and not (user.find("password").text or "").strip()
    profile = root.find("profiles").find(grafana.findtext("profile"))
    assert int(profile.findtext("readonly")) >= 1
    assert [d.text for d in grafana.find("allow_databases")] == ["tallyhub"]
    assert hub.findtext("profile") == "default"


def test_clickhouse_system_logs_have_a_ttl() -> None:
    root = ET.parse(DEPLOY / "clickhouse" / "config.d" / "system-logs.xml").getroot()
    ttls = {table.tag: table.findtext("ttl") for table in root}
    assert set(ttls) >= LOG_TABLES
    assert all(re.fullmatch(r"event_date \+ INTERVAL \d+ DAY DELETE", ttl) for ttl in ttls.values())


def test_the_cluster_config_names_the_hubs_cluster_an_odd_keeper_count_and_the_macros() -> None:
    root = ET.parse(DEPLOY / "clickhouse" / "cluster" / "cluster.xml").getroot()
    (cluster,) = list(root.find("remote_servers"))
    assert cluster.tag == "tallyhub"
    shards = cluster.findall("shard")
    assert len(shards) == 2 and all(len(s.findall("replica")) == 2 for s in shards)
    assert all(s.findtext("internal_replication") == "true" for s in shards)
    assert len(root.find("zookeeper").findall("node")) % 2 == 1
    macros = root.find("macros")
    assert {m.tag for m in macros} == {"shard", "replica"}  # what storage/cluster.py's REPLICA_PATH uses
    keeper = ET.parse(DEPLOY / "clickhouse" / "cluster" / "keeper.xml").getroot()
    ids = [s.findtext("id") for s in keeper.find("keeper_server").find("raft_configuration")]
    assert ids == ["1", "2", "3"]
