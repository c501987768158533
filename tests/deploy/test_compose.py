"""deploy/compose.yaml and what it refers to, checked without Docker: the compose-spec schema,
every service, volume, secret, mounted file and build context it names exists, images are pinned,
health checks use 127.0.0.1, and every variable it needs is one deploy/make-secrets.sh writes."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tallyhub.alerts.rules import rules_from_toml
from tallyhub.collector_processor.receive.auth import parse_app_keys

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BIN = Path(sys.executable).parent


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def secrets_made(tmp_path_factory) -> Path:
    """A copy of deploy/ after deploy/make-secrets.sh ran in it (twice: the second run keeps the first's)."""
    copy = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("secrets", ".env"))
    first = subprocess.run([str(copy / "make-secrets.sh")], capture_output=True, text=True, check=True)
    assert "wrote" in first.stdout
    made = {p: p.read_text() for p in (copy / ".env", copy / "secrets" / "app-keys")}
    second = subprocess.run([str(copy / "make-secrets.sh")], capture_output=True, text=True, check=True)
    assert second.stdout == "" and {p: p.read_text() for p in made} == made
    return copy


@pytest.mark.parametrize("name", ["compose.yaml", "compose.cluster.yaml"])
def test_the_compose_files_are_valid_compose_spec(name: str) -> None:
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(DEPLOY / name)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_everything_the_compose_file_names_exists(secrets_made: Path) -> None:
    spec = compose()
    services = spec["services"]
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown {needed}"
        for secret in service.get("secrets", []):
            assert secret in spec["secrets"], f"{name}: undeclared secret {secret}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (secrets_made / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in spec["volumes"], f"{name}: undeclared volume {source}"
        build = service.get("build")
        if build:
            context = secrets_made / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: no Dockerfile"
    for secret in spec["secrets"].values():
        assert (secrets_made / secret["file"]).is_file()


def test_images_are_pinned_and_health_checks_use_127_0_0_1() -> None:
    for name, service in compose()["services"].items():
        image = service["image"]
        tag = image.rpartition(":")[2]
        assert ":" in image and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned"
        test = " ".join(service.get("healthcheck", {}).get("test", []))
        assert "localhost" not in test, f"{name}: Docker 26 resolves localhost to ::1"
        if not service.get("healthcheck", {}).get("disable"):
            assert "127.0.0.1" in test, f"{name} has no health check"


def test_the_variables_it_needs_are_the_ones_make_secrets_writes(secrets_made: Path) -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    needed = set(re.findall(r"\$\{(\w+):\?", text))
    written = dict(line.split("=", 1) for line in (secrets_made / ".env").read_text().splitlines())
    assert needed == set(written) and all(len(value) >= 24 for value in written.values())
    keys = parse_app_keys((secrets_made / "secrets" / "app-keys").read_text(), "app-keys")
    assert list(keys) == ["demo"]
    assert stat.S_IMODE((secrets_made / ".env").stat().st_mode) == 0o600
    assert stat.S_IMODE((secrets_made / "secrets").stat().st_mode) == 0o700
    assert stat.S_IMODE((secrets_made / "secrets" / "app-keys").stat().st_mode) == 0o644  # the hub's uid reads it


def test_the_hub_and_the_demo_share_the_app_keys_secret() -> None:
    services = compose()["services"]
    for name in ("hub", "demo"):
        assert services[name]["secrets"] == ["app-keys"]
        assert services[name]["environment"]["TALLYHUB_APP_KEYS_FILE"] == "/run/secrets/app-keys"
    assert services["demo"]["command"][:3] == ["demo", "--hub", "http://hub:4317"]
    assert services["hub"]["environment"]["TALLYHUB_STORAGE_URL"].startswith("clickhouse://tallyhub@clickhouse:8123/")


def test_the_cluster_overlay_names_what_exists_and_the_hubs_cluster(secrets_made: Path) -> None:
    base, overlay = compose(), yaml.safe_load((DEPLOY / "compose.cluster.yaml").read_text())
    services = {**base["services"], **overlay["services"]}
    volumes = {**base["volumes"], **overlay["volumes"]}
    for name, service in overlay["services"].items():
        for needed in service.get("depends_on", {}):
            assert needed in services, f"{name} depends on unknown {needed}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert (secrets_made / source).exists() if source.startswith(".") else source in volumes, mount
    keepers = [name for name in overlay["services"] if name.startswith("keeper-")]
    servers = [name for name in overlay["services"] if name.startswith("clickhouse-s")]
    assert len(keepers) % 2 == 1 and len(servers) == 4
    assert overlay["services"]["hub"]["environment"]["TALLYHUB_CLUSTER"] == "tallyhub"
    shards = {services[s]["environment"]["CLICKHOUSE_SHARD"] for s in servers}
    replicas = {services[s]["environment"]["CLICKHOUSE_REPLICA"] for s in servers}
    assert shards == {"1", "2"} and len(replicas) == 4  # each server its own replica name


def test_the_hub_reads_the_example_alert_rules(secrets_made: Path) -> None:
    hub = compose()["services"]["hub"]
    mounted = {target: source for source, target, *_ in (v.split(":") for v in hub["volumes"])}
    rules_file = secrets_made / mounted[hub["environment"]["TALLYHUB_ALERT_RULES"]]
    rules = rules_from_toml(rules_file.read_text(), str(rules_file))
    assert [(rule.name, rule.metric) for rule in rules] == [
        ("demo-down", "heartbeat"),
        ("demo-errors", "error_rate"),
        ("demo-slow-search", "p95"),
    ]


def test_make_secrets_adds_the_webhook_secret_to_an_older_env(tmp_path: Path) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("secrets", ".env"))
    (copy / ".env").write_text("TALLYHUB_CLICKHOUSE_PASSWORD=x\n")
    made = subprocess.run([str(copy / "make-secrets.sh")], capture_output=True, text=True, check=True)
    assert "added TALLYHUB_WEBHOOK_SECRET" in made.stdout
    lines = (copy / ".env").read_text().splitlines()
    assert lines[0] == "TALLYHUB_CLICKHOUSE_PASSWORD=x" and lines[1].startswith("TALLYHUB_WEBHOOK_SECRET=")
