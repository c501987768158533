"""docs/operations.md against what it describes: the sizing figures are the benchmarks' own, the
image tags and ports it names are those of the deploy files."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "operations.md").read_text()


def test_the_sizing_figures_are_the_benchmarks() -> None:
    benchmarks = (REPO / "benchmarks" / "README.md").read_text()
    sizing = DOC[DOC.index("## Sizing") : DOC.index("## What CI checks")]
    table = [line for line in sizing.splitlines() if line.startswith("| ") and "---" not in line][1:]
    figures = [
        f for line in table for f in re.findall(r"\d+ \d{3}|\d+\.\d+ (?:B|MB)|\d+ (?:KiB|MiB)", line.split("|")[2])
    ]
    assert len(figures) >= 8
    # a decimal's unit may sit in the benchmark table's heading: the number alone must be there
    missing = [f for f in figures if (f.split()[0] if re.match(r"\d+\.\d+", f) else f) not in benchmarks]
    assert missing == [], "figures of docs/operations.md that benchmarks/README.md does not have"


def test_the_image_tags_and_ports_are_the_deploy_files() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    images = {service["image"] for service in compose["services"].values()}
    for tag in re.findall(r"\b(tallyhub(?:-demo|-grafana)?:\d+\.\d+\.\d+)\b", DOC):
        assert tag in images, tag
    published = {
        port.rpartition(":")[2] for service in compose["services"].values() for port in service.get("ports", [])
    }
    exposed = set(re.search(r"^EXPOSE (.+)$", (REPO / "deploy" / "Dockerfile").read_text(), re.M)[1].split())
    for port in set(re.findall(r"(?:port|:)(\d{4})\b", DOC)):
        assert port in published | exposed, port
    assert {"4317", "4318", "3000"} <= published
