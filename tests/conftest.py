"""Shared fixtures. chDB hosts one engine path per process, so every in-process test shares one
data directory and gets a database of its own."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from tallyhub.storage.backend import ClientRunner, open_client
from tallyhub.storage.migrate import migrate

pytest_plugins = ("tests.alerts.receivers",)
"""Webhook and SMTP receivers on loopback (fixtures ``receiver``, ``plain_smtp``, …), for the alerts'
tests wherever they are."""

# Hubs that tests start (`tallyhub serve` in a subprocess) put their dashboard on a free port, never
# on the default 8125 that a developer's own hub may hold; the hub prints where ("dashboard: …").
os.environ.setdefault("TALLYHUB_DASHBOARD_ADDRESS", "127.0.0.1:0")


SLOW = ("tests/e2e/", "tests/demo/", "tests/dashboard/test_browser.py", "tests/deploy/test_wheel.py")
"""Tests that start real processes (hubs, apps, a browser): marked ``slow``, so that ``-m "not slow"``
is the quick loop for a change to one module."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def database() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ch(chdb_url: str, database: str) -> Iterator[Client]:
    """A migrated, empty tallyhub database on the shared embedded engine."""
    client = open_client(chdb_url, database, create=True)
    migrate(client)
    yield client
    # SYNC: at once; a dropped Atomic database otherwise lingers for minutes and slows the shared engine
    client.command(f"DROP DATABASE IF EXISTS `{database}` SYNC")
    client.close()


@pytest.fixture
def runner(ch: Client, chdb_url: str, database: str) -> Iterator[ClientRunner]:
    """A ``ClientRunner`` on ``ch``, with a read-only client of its own for read-only queries."""
    reader = open_client(chdb_url, database, readonly=True)
    yield ClientRunner(ch, reader)
    reader.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
