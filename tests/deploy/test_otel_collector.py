"""deploy/otel-collector: the gateways reference only components they define (and use all they
define), keep what the hub has not taken in a file-backed queue, and never mix two apps' data in one
batch under one key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tallyhub.wire import APP_KEY_HEADER

COLLECTOR = Path(__file__).resolve().parents[2] / "deploy" / "otel-collector"
SECTIONS = ("receivers", "processors", "exporters")


def config(name: str) -> dict:
    return yaml.safe_load((COLLECTOR / name).read_text())


@pytest.mark.parametrize("name", ["gateway.yaml", "gateway-one-app.yaml"])
def test_every_component_is_defined_and_used(name: str) -> None:
    spec = config(name)
    used: dict[str, set[str]] = {section: set() for section in SECTIONS}
    for pipeline in spec["service"]["pipelines"].values():
        for section in SECTIONS:
            used[section].update(pipeline[section])
    for section in SECTIONS:
        assert used[section] == set(spec[section]), section
    extensions = set(spec["service"]["extensions"])
    assert extensions == set(spec["extensions"])
    for exporter in spec["exporters"].values():
        assert exporter["sending_queue"]["storage"] in extensions  # the queue survives restarts
        assert exporter["retry_on_failure"]["max_elapsed_time"] == "1h"  # as long as tallyhub's client
        authenticator = exporter.get("auth", {}).get("authenticator")
        assert authenticator is None or authenticator in extensions
    assert set(spec["service"]["pipelines"]) == {"metrics", "logs"}  # the start-up events are logs


def test_the_gateway_passes_each_apps_key_through_and_batches_per_key() -> None:
    spec = config("gateway.yaml")
    (header,) = spec["extensions"]["headers_setter"]["headers"]
    assert header["key"] == header["from_context"] == APP_KEY_HEADER
    assert all(protocol["include_metadata"] for protocol in spec["receivers"]["otlp"]["protocols"].values())
    assert spec["processors"]["batch"]["metadata_keys"] == [APP_KEY_HEADER]


def test_the_one_app_gateway_takes_its_key_from_the_environment() -> None:
    headers = config("gateway-one-app.yaml")["exporters"]["otlp_grpc/tallyhub"]["headers"]
    assert headers == {APP_KEY_HEADER: "${env:HUB_APP_KEY}"}
