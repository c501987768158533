"""Keys and files with a running hub: revoked and rotated keys, read-only queries beside writes,
what only the hub's user may read."""

from __future__ import annotations

import stat
import time

import grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub

from .conftest import wait_for


def export(hub, key: str) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{hub.grpc_port}") as channel:
        try:
            MetricsServiceStub(channel).Export(
                ExportMetricsServiceRequest(), metadata=[("x-tallyhub-app-key", key)], timeout=10
            )
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_a_revoked_key_is_refused_within_seconds_and_a_rotated_one_replaces_it(hub) -> None:
    key = hub.cli("apps", "create", "shop").stdout.strip()
    assert export(hub, key) == grpc.StatusCode.OK
    hub.cli("apps", "revoke", "shop")
    revoked_at = time.monotonic()
    wait_for(lambda: export(hub, key) == grpc.StatusCode.UNAUTHENTICATED, 10, "the revoked key refused")
    assert time.monotonic() - revoked_at < 5
    assert hub.cli("apps", "list").stdout.split("\t")[3].startswith("revoked")

    new = hub.cli("apps", "rotate", "shop").stdout.strip()
    assert export(hub, new) == grpc.StatusCode.OK  # at once: an unknown key reloads the ring
    assert export(hub, key) == grpc.StatusCode.UNAUTHENTICATED
    newer = hub.cli("apps", "rotate", "shop").stdout.strip()
    # within a second of the last look-up an unknown key waits for the ring's next reload (2 s)
    wait_for(lambda: export(hub, newer) == grpc.StatusCode.OK, 10, "the newer key accepted")
    wait_for(lambda: export(hub, new) == grpc.StatusCode.UNAUTHENTICATED, 10, "the rotated-away key refused")


def test_writes_work_after_read_only_queries_and_files_stay_out_of_reach(hub, tmp_path) -> None:
    assert hub.sql("SELECT count() FROM apps") == [["0"]]
    hub.cli("report", "nobody", check=False)
    hub.cli("apps", "create", "shop")
    hub.cli("sql", "--write", "INSERT INTO expected_client_errors (app, method, route) SELECT 'shop', 'GET', '/a'")
    assert hub.sql("SELECT count() FROM expected_client_errors") == [["1"]]
    values = "INSERT INTO expected_client_errors (app, method, route) VALUES ('shop', 'GET', '/b')"
    refused = hub.cli("sql", values, check=False)
    assert refused.returncode == 1
    assert refused.stderr.count("Cannot execute query in readonly mode") == 1
    assert "this query changes data: run it again with --write" in refused.stderr
    hub.cli("sql", "--write", values)  # no FORMAT appended to VALUES
    assert hub.sql("SELECT route FROM expected_client_errors ORDER BY route") == [["/a"], ["/b"]]

    out = tmp_path / "out.tsv"
    refused = hub.cli("sql", f"SELECT * FROM apps INTO OUTFILE '{out}'", check=False)
    assert refused.returncode == 1 and "INTO OUTFILE is refused in read-only queries" in refused.stderr
    refused = hub.cli("sql", f"DESCRIBE file('{hub.data_dir / 'hub.json'}', 'JSONEachRow')", check=False)
    assert refused.returncode == 1 and "table function file() is refused" in refused.stderr
    assert not out.exists()
    hub.cli("apps", "create", "other")  # still writable

    assert stat.S_IMODE(hub.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((hub.data_dir / "hub.json").stat().st_mode) == 0o600
