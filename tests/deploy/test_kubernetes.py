"""deploy/kubernetes, checked without a cluster: the manifests against Kubernetes' own schemas
(strict, oldest and newest supported versions), the operator's resources structurally, and that
the names the pieces use for one another agree (Secret, cluster, Keeper and ClickHouse services)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tallyhub.alerts.rules import rules_from_toml
from tallyhub.collector_processor.receive.auth import parse_app_keys

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent
VERSIONS = ("1.30.0", "1.37.0")  # the oldest and newest this deploy is checked against


def kustomization() -> dict:
    return yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((KUBERNETES / name).read_text()) if d]


def by_kind() -> dict[str, dict]:
    return {d["kind"]: d for name in kustomization()["resources"] for d in documents(name)}


def env(container: dict) -> dict[str, str]:
    """The container's variables with a value (those from a Secret: ``secret:NAME/KEY``)."""
    return {
        e["name"]: e["value"] if "value" in e else "secret:{name}/{key}".format(**e["valueFrom"]["secretKeyRef"])
        for e in container["env"]
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_the_manifests_are_valid_for_kubernetes(version: str) -> None:
    core = [
        str(KUBERNETES / name)
        for name in kustomization()["resources"]
        if all(d["apiVersion"].count(".altinity.com") == 0 for d in documents(name))
    ]
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", version, *core], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") >= 5


def test_the_secret_files_are_what_make_secrets_writes(tmp_path: Path) -> None:
    copy = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, copy, ignore=shutil.ignore_patterns("secrets"))
    subprocess.run([str(copy / "make-secrets.sh")], check=True, capture_output=True)
    for generator in kustomization()["secretGenerator"]:
        for entry in generator["files"]:
            assert (copy / entry.split("=", 1)[1]).is_file(), entry
    assert list(parse_app_keys((copy / "secrets" / "app-keys").read_text(), "app-keys")) == ["demo"]
    assert "\n" not in (copy / "secrets" / "clickhouse-password").read_text()  # a password, not a line


def test_the_hub_is_non_root_probed_and_finds_its_secret_and_clickhouse() -> None:
    kinds = by_kind()
    hub = kinds["StatefulSet"]
    pod = hub["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["grpc"]["port"] == 4317
    assert hub["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    variables = env(container)
    secret_files = {
        entry.split("=")[0]
        for generator in kustomization()["secretGenerator"]
        if generator["name"] == "tallyhub"
        for entry in generator["files"]
    }
    (secret_volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert secret_volume["secret"]["secretName"] == "tallyhub"
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == secret_volume["name"])
    for variable in ("TALLYHUB_CLICKHOUSE_PASSWORD_FILE", "TALLYHUB_APP_KEYS_FILE"):
        directory, _, file = variables[variable].rpartition("/")
        assert directory == mount and file in secret_files
    installation = kinds["ClickHouseInstallation"]
    assert variables["TALLYHUB_STORAGE_URL"].startswith(
        f"clickhouse://tallyhub@clickhouse-{installation['metadata']['name']}:8123/"
    )
    assert variables["TALLYHUB_CLUSTER"] == installation["spec"]["configuration"]["clusters"][0]["name"]
    services = [d for d in documents("hub/services.yaml")]
    assert [s["spec"].get("clusterIP") for s in services] == [None, "None"]
    assert hub["spec"]["serviceName"] == services[1]["metadata"]["name"]


def test_the_operators_resources_hold_together() -> None:
    kinds = by_kind()
    installation, keeper = kinds["ClickHouseInstallation"], kinds["ClickHouseKeeperInstallation"]
    assert installation["apiVersion"] == "clickhouse.altinity.com/v1"
    assert keeper["apiVersion"] == "clickhouse-keeper.altinity.com/v1"
    configuration = installation["spec"]["configuration"]
    (cluster,) = configuration["clusters"]
    assert cluster["layout"] == {"shardsCount": 2, "replicasCount": 2}
    (keeper_cluster,) = keeper["spec"]["configuration"]["clusters"]
    assert keeper_cluster["layout"]["replicasCount"] % 2 == 1
    (node,) = configuration["zookeeper"]["nodes"]
    assert node["host"] == f"keeper-{keeper['metadata']['name']}"
    secret = next(g for g in kustomization()["secretGenerator"] if g["name"] == "tallyhub-clickhouse")
    keys = {entry.split("=")[0] for entry in secret["files"]}
    users = configuration["users"]
    for user in ("tallyhub", "grafana"):
        name, _, key = users[f"{user}/k8s_secret_password"].partition("/")
        assert name == secret["name"] and key in keys
    assert users["grafana/profile"] == "grafana_readonly"
    assert configuration["profiles"]["grafana_readonly/readonly"] >= 1
    assert "<ttl>event_date + INTERVAL" in configuration["files"]["config.d/system-logs.xml"]
    templates = installation["spec"]["templates"]["podTemplates"] + keeper["spec"]["templates"]["podTemplates"]
    for template in templates:
        assert template["spec"]["securityContext"]["runAsNonRoot"]
        assert all(":latest" not in c["image"] and ":" in c["image"] for c in template["spec"]["containers"])


def test_the_hub_reads_its_alert_rules_and_webhook_secret() -> None:
    pod = by_kind()["StatefulSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    variables = env(container)
    (generator,) = kustomization()["configMapGenerator"]
    (volume,) = [v for v in pod["volumes"] if v.get("configMap", {}).get("name") == generator["name"]]
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume["name"])
    directory, _, file = variables["TALLYHUB_ALERT_RULES"].rpartition("/")
    (entry,) = generator["files"]
    assert directory == mount and entry.split("=")[0] == file
    rules = rules_from_toml((KUBERNETES / entry.split("=")[1]).read_text(), entry)
    assert [rule.name for rule in rules] == ["demo-down"]
    secret_files = {
        e.split("=")[0] for g in kustomization()["secretGenerator"] if g["name"] == "tallyhub" for e in g["files"]
    }
    assert variables["TALLYHUB_WEBHOOK_SECRET"] == "secret:tallyhub/webhook-secret" and "webhook-secret" in secret_files
