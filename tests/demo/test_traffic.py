"""The demo's traffic mix: every endpoint, weighted; consumers in groups; the invalid input that
makes 401, 404 and 422; the calls a load balancer makes without a key."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from tallyhub.demo.data import BOOKS, CONSUMERS
from tallyhub.demo.traffic import ENDPOINTS, Call, TrafficMix

N = 20_000


@pytest.fixture(scope="module")
def calls() -> list[Call]:
    mix = TrafficMix(random.Random(7))
    return [mix.next_call() for _ in range(N)]


def test_every_endpoint_is_called_in_proportion_to_its_weight(calls: list[Call]) -> None:
    total = sum(e.weight for e in ENDPOINTS)
    counts = Counter(c.endpoint for c in calls)
    assert set(counts) == {f"{e.method} {e.route}" for e in ENDPOINTS}
    for e in ENDPOINTS:
        assert counts[f"{e.method} {e.route}"] / N == pytest.approx(e.weight / total, abs=0.01)


def test_consumers_by_weight_in_several_groups(calls: list[Call]) -> None:
    by_key = {c.api_key: c for c in CONSUMERS}
    keyed = [by_key[c.api_key] for c in calls if c.api_key in by_key]
    counts = Counter(c.identifier for c in keyed)
    total = sum(c.weight for c in CONSUMERS)
    for consumer in CONSUMERS:
        assert counts[consumer.identifier] / len(keyed) == pytest.approx(consumer.weight / total, abs=0.015)
    assert len({c.group for c in CONSUMERS}) == 3


def test_health_checks_carry_no_key_and_some_api_calls_no_valid_one(calls: list[Call]) -> None:
    known = {c.api_key for c in CONSUMERS}
    assert all(c.api_key is None for c in calls if c.endpoint == "GET /health")
    api = [c for c in calls if c.endpoint != "GET /health"]
    unauthenticated = [c for c in api if c.api_key not in known]
    assert len(unauthenticated) / len(api) == pytest.approx(0.04, abs=0.01)
    assert {c.api_key for c in unauthenticated} == {None, "ak_expired_0000"}


def test_invalid_input_is_a_minority_of_each_endpoints_calls(calls: list[Call]) -> None:
    """422s from query parameters and bodies, 404s from ids that do not exist: present, not dominant."""
    book_ids = {b.id for b in BOOKS}

    def share(endpoint: str, invalid: Callable[[Call], bool]) -> float:
        of_endpoint = [c for c in calls if c.endpoint == endpoint]
        return sum(map(invalid, of_endpoint)) / len(of_endpoint)

    assert share("GET /books", lambda c: c.params["limit"] > 100) == pytest.approx(0.04, abs=0.015)
    assert share("GET /books/{book_id}", lambda c: int(c.path.rsplit("/", 1)[1]) not in book_ids) == pytest.approx(
        0.08, abs=0.02
    )
    assert share("GET /search", lambda c: len((c.params or {}).get("q", "")) < 2) == pytest.approx(0.08, abs=0.02)
    assert share("POST /orders", _invalid_order) == pytest.approx(0.12, abs=0.02)
    assert share("POST /books", lambda c: len(c.json["isbn"]) != 13) == pytest.approx(0.2, abs=0.04)


def _invalid_order(call: Call) -> bool:
    body = call.json
    shipping = body.get("shipping")
    return (
        not isinstance(body["quantity"], int)
        or not 1 <= body["quantity"] <= 10
        or shipping is None
        or len(shipping["country"]) != 2
    )


def test_the_same_seed_gives_the_same_traffic() -> None:
    first, second = TrafficMix(random.Random(3)), TrafficMix(random.Random(3))
    assert [first.next_call() for _ in range(200)] == [second.next_call() for _ in range(200)]


def test_only_writes_have_bodies(calls: list[Call]) -> None:
    assert all((c.json is not None) == (c.method == "POST") for c in calls)
