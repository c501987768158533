"""App keys: which key an export carries, and the key ring that resolves it (revoked and rotated
keys on real chDB)."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub

from tallyhub.collector_processor.queue import DurableQueue
from tallyhub.collector_processor.receive.auth import (
    APP_KEY_HEADER,
    CONFLICTING_KEYS,
    KeyRing,
    generate_key,
    hash_key,
    key_from_metadata,
    parse_app_keys,
)
from tallyhub.collector_processor.receive.receiver import Receiver, start_grpc_server
from tallyhub.storage.apps import create_app, key_hashes, revoke_app, rotate_key
from tallyhub.storage.backend import ClientRunner

KEY, OTHER = generate_key(), generate_key()


def wait_until(predicate, timeout_s: float) -> float:
    """Seconds until ``predicate()`` held (polled every 10 ms); fails after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.01)
    return time.monotonic() - started


# --- the key an export carries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "key"),
    [
        ([(APP_KEY_HEADER, f" {KEY} ")], KEY),
        ([("authorization", f"Bearer {KEY}")], KEY),
        ([("authorization", f"bearer {KEY}")], KEY),
        ([(APP_KEY_HEADER, KEY), ("authorization", f"Bearer {KEY}")], KEY),  # the same key twice
        ([(APP_KEY_HEADER, KEY), (APP_KEY_HEADER, KEY)], KEY),
        ([(APP_KEY_HEADER, ""), ("authorization", f"Bearer {KEY}")], KEY),  # an empty header names no key
        ([("authorization", "Basic abc"), (APP_KEY_HEADER, KEY)], KEY),
        ([(APP_KEY_HEADER + "-bin", b"\x00"), ("user-agent", "x")], None),
        ([], None),
    ],
    ids=lambda value: "key" if value == KEY else None,  # the same ids in every run (pytest-xdist compares them)
)
def test_the_key_of_an_export(metadata, key) -> None:
    assert key_from_metadata(metadata) == key


@pytest.mark.parametrize(
    "metadata",
    [
        [(APP_KEY_HEADER, KEY), (APP_KEY_HEADER, OTHER)],
        [(APP_KEY_HEADER, KEY), ("authorization", f"Bearer {OTHER}")],
        [("authorization", f"Bearer {OTHER}"), (APP_KEY_HEADER, KEY)],
    ],
)
def test_two_different_keys_are_a_conflict_that_no_app_owns(metadata, caplog) -> None:
    with caplog.at_level(logging.WARNING, "tallyhub.auth"):
        assert key_from_metadata(metadata) == CONFLICTING_KEYS
    assert "2 different app keys" in caplog.text and "send one key" in caplog.text
    assert KEY not in caplog.text and OTHER not in caplog.text  # keys are never logged
    loads = []
    ring = KeyRing(lambda: loads.append(1) or {hash_key(KEY): "shop", hash_key(OTHER): "evil"})
    assert ring.app_for(CONFLICTING_KEYS) is None and loads == []  # refused without a look-up


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[grpc.Channel, DurableQueue]]:
    queue = DurableQueue(tmp_path / "queue")
    server, port = start_grpc_server(
        Receiver(KeyRing(lambda: {hash_key(KEY): "shop", hash_key(OTHER): "evil"}), queue), "127.0.0.1:0"
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel, queue
    channel.close()
    server.stop(None)
    queue.close()


def test_an_export_with_two_apps_keys_is_unauthenticated_and_stores_nothing(receiver) -> None:
    channel, queue = receiver
    with pytest.raises(grpc.RpcError) as caught:
        MetricsServiceStub(channel).Export(
            ExportMetricsServiceRequest(),
            metadata=[(APP_KEY_HEADER, KEY), ("authorization", f"Bearer {OTHER}")],
            timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert queue.depth() == 0


# --- the key ring -----------------------------------------------------------------------------------


def test_an_unknown_key_reloads_the_ring_at_most_once_a_second() -> None:
    keys = {hash_key(KEY): "shop"}
    loads = []
    ring = KeyRing(lambda: loads.append(1) or dict(keys), min_reload_s=0.3)
    assert ring.app_for(KEY) == "shop" and len(loads) == 1
    keys[hash_key(OTHER)] = "new"
    assert ring.app_for(OTHER) is None and len(loads) == 1  # too soon after the last reload
    time.sleep(0.3)
    assert ring.app_for(OTHER) == "new" and len(loads) == 2  # a new app's key works without waiting
    assert ring.app_for(None) is None and ring.app_for("") is None and len(loads) == 2


def test_a_started_ring_drops_a_removed_key_within_its_interval() -> None:
    keys = {hash_key(KEY): "shop"}
    ring = KeyRing(lambda: dict(keys), reload_s=0.2)
    ring.start()
    try:
        assert ring.app_for(KEY) == "shop"
        keys.clear()
        assert wait_until(lambda: ring.app_for(KEY) is None, 2.0) < 0.5
    finally:
        ring.stop()


def test_a_failed_reload_keeps_the_last_ring_and_warns_once(caplog) -> None:
    state = {"down": False, "loads": 0}

    def load() -> dict[str, str]:
        state["loads"] += 1
        if state["down"]:
            raise ConnectionError("ClickHouse is down")
        return {hash_key(KEY): "shop"}

    ring = KeyRing(load, reload_s=0.05)
    with caplog.at_level(logging.DEBUG, "tallyhub.auth"):
        ring.start()
        try:
            wait_until(lambda: ring.app_for(KEY) == "shop", 2.0)
            state["down"] = True
            loads = state["loads"]
            wait_until(lambda: state["loads"] >= loads + 3, 2.0)
            assert ring.app_for(KEY) == "shop"  # exports of known apps go on
            assert ring.app_for(OTHER) is None  # an unknown key is refused
            state["down"] = False
            wait_until(lambda: "reloaded again" in caplog.text, 2.0)
        finally:
            ring.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "could not reload the app keys" in warnings[0].getMessage()
    assert "ClickHouse is down" in warnings[0].getMessage()


def test_never_more_than_one_reload_at_a_time() -> None:
    running, most = [0], [0]
    lock = threading.Lock()

    def slow_load() -> dict[str, str]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        return {}

    ring = KeyRing(slow_load, reload_s=0.01, min_reload_s=0.0)
    ring.start()
    try:
        threads = [threading.Thread(target=lambda: [ring.app_for(generate_key()) for _ in range(10)]) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        ring.stop()
    assert most[0] == 1


# --- revoked and rotated keys, on chDB -------------------------------------------------------------------


def test_a_revoked_key_is_refused_within_the_reload_interval(runner: ClientRunner) -> None:
    create_app(runner, "shop", hash_key(KEY))
    ring = KeyRing(lambda: key_hashes(runner), reload_s=0.3)
    ring.start()
    try:
        assert ring.app_for(KEY) == "shop"
        revoke_app(runner, "shop")
        assert wait_until(lambda: ring.app_for(KEY) is None, 3.0) < 1.0
        assert ring.app_for(KEY) is None  # and stays refused
    finally:
        ring.stop()


def test_a_rotated_key_works_at_once_and_the_old_one_stops(runner: ClientRunner) -> None:
    create_app(runner, "shop", hash_key(KEY))
    ring = KeyRing(lambda: key_hashes(runner), reload_s=0.3, min_reload_s=0.0)
    ring.start()
    try:
        assert ring.app_for(KEY) == "shop"
        new = generate_key()
        rotate_key(runner, "shop", hash_key(new))
        assert ring.app_for(new) == "shop"  # an unknown key reloads the ring
        assert wait_until(lambda: ring.app_for(KEY) is None, 3.0) < 1.0
        assert ring.app_for(new) == "shop"
    finally:
        ring.stop()


def test_a_key_that_left_the_ring_costs_no_reload_so_a_new_app_is_never_kept_waiting() -> None:
    """A client that keeps sending its revoked key must not use up the reloads a new key needs."""
    keys = {hash_key(KEY): "shop"}
    loads = []
    ring = KeyRing(lambda: loads.append(1) or dict(keys), reload_s=0.05, min_reload_s=60.0)
    ring.start()
    try:
        wait_until(lambda: ring.app_for(KEY) == "shop", 2.0)
        keys.clear()  # revoked
        wait_until(lambda: ring.app_for(KEY) is None, 2.0)
    finally:
        ring.stop()
    loaded = len(loads)
    assert [ring.app_for(KEY) for _ in range(5)] == [None] * 5 and len(loads) == loaded
    keys[hash_key(OTHER)] = "new"
    assert ring.app_for(OTHER) == "new"  # its reload was not used up by the revoked key


def test_an_app_keys_file_is_name_equals_key_lines() -> None:
    key_a, key_b = generate_key(), generate_key()
    text = f"# apps of the shop\nshop = {key_a}\n\nshop-admin={key_b}\n"
    assert parse_app_keys(text, "keys.env") == {"shop": key_a, "shop-admin": key_b}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shop\n", "keys.env, line 1: expected NAME=KEY"),
        ("# c\n=thk_aaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", "keys.env, line 2: expected NAME=KEY"),
        ("shop=short\n", "the key of 'shop' is too short"),
        ("shop=thk_aaaaaaaaaa aaaaaaaaaaaaaaaaaaaaaaaa\n", "has spaces"),
        (f"shop={'k' * 30}\nshop={'j' * 30}\n", "line 2: 'shop' is given twice"),
    ],
)
def test_a_malformed_app_keys_file_names_the_line_not_the_key(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        parse_app_keys(text, "keys.env")
    assert "aaaaaaaaaa" not in str(error.value) and "kkkkk" not in str(error.value)
