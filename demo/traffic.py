"""Traffic for the demo: which call comes next (``TrafficMix``) and sending them at a steady rate
(``TrafficGenerator``)."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tallyhub.demo.data import BOOKS, CONSUMERS, SEARCH_TERMS, SEEDED_ORDERS, DemoConsumer


@dataclass(frozen=True)
class Call:
    """One request to make: ``endpoint`` is its route (``GET /books/{book_id}``), for tests and counts."""

    endpoint: str
    method: str
    path: str
    api_key: str | None = None
    params: dict[str, Any] | None = None
    json: Any = None


Build = Callable[[random.Random], tuple[str, dict[str, Any] | None, Any]]
"""Makes a call's path, query parameters and JSON body."""


@dataclass(frozen=True)
class Endpoint:
    method: str
    route: str
    weight: float
    build: Build


def _book_id(rng: random.Random) -> int:
    return rng.choice(BOOKS).id


def _list_books(rng: random.Random) -> tuple[str, dict[str, Any] | None, Any]:
    limit = 500 if rng.random() < 0.04 else rng.choice([10, 20, 50])  # 500: over the maximum, a 422
    return "/books", {"limit": limit, "offset": rng.choice([0, 0, 0, 10, 20])}, None


def _get_book(rng: random.Random) -> tuple[str, dict[str, Any] | None, Any]:
    book_id = rng.randint(900, 999) if rng.random() < 0.08 else _book_id(rng)  # 900+: a 404
    return f"/books/{book_id}", None, None


def _recommendations(rng: random.Random) -> tuple[str, dict[str, Any] | None, Any]:
    return f"/books/{_book_id(rng)}/recommendations", None, None  # one genre of the catalogue fails (a 500)


def _search(rng: random.Random) -> tuple[str, dict[str, Any] | None, Any]:
    roll = rng.random()
    if roll < 0.02:
        return "/search", None, None  # no q: a 422
    if roll < 0.08:
        return "/search", {"q": "a"}, None  # too short: a 422
    return "/search", {"q": rng.choice(SEARCH_TERMS)}, None


ADDRESSES = [("DE", "10115"), ("FR", "75001"), ("NL", "1012 AB"), ("US", "94103"), ("JP", "100-0001")]
INVALID_ORDERS: list[dict[str, Any]] = [
    {"book_id": 2, "quantity": 0, "shipping": {"country": "DE", "postcode": "10115"}},
    {"book_id": 3, "quantity": 25, "shipping": {"country": "FR", "postcode": "75001"}},
    {"book_id": 5, "quantity": "two", "shipping": {"country": "GB", "postcode": "SW1A 1AA"}},
    {"book_id": 7, "quantity": 1},
    {"book_id": 9, "quantity": 1, "shipping": {"country": "Germany", "postcode": "10115"}},
]


def _create_order(rng: random.Random) -> tuple[str, dict[str, Any] | None, Any]:
    roll = rng.random()
    if roll < 0.12:
        return "/orders", None, rng.choice(INVALID_ORDERS)  # a 422
    book_id = rng.randint(900, 999) if roll < 0.16 else _book_id(rng)  # 900+: a 404
    country, postcode = rng.choice(ADDRESSES)
    shipping = {"country": country, "postcode": postcode}
    return "/orders", None, {"book_id": book_id, "quantity": rng.choice([1, 1, 1, 2, 3]), "shipping": shipping}


def _get_order(rng: random.Random) -> tuple[str, dict[str, Any] | None, Any]:
    order_id = rng.randint(100_000, 999_999) if rng.random() < 0.15 else rng.randint(1, SEEDED_ORDERS)
    return f"/orders/{order_id}", None, None


def _create_book(rng: random.Random) -> tuple[str, dict[str, Any] | None, Any]:
    isbn = "12345" if rng.random() < 0.2 else f"978{rng.randrange(10**10):010d}"  # "12345": a 422
    body = {"title": f"Collected Stories, vol. {rng.randint(1, 40)}", "author": "Various", "price": 12.5, "isbn": isbn}
    return "/books", None, body


def _sales_report(rng: random.Random) -> tuple[str, dict[str, Any] | None, Any]:
    return "/reports/sales", {"days": rng.choice([1, 7, 30])}, None


def _health(rng: random.Random) -> tuple[str, dict[str, Any] | None, Any]:
    return "/health", None, None


ENDPOINTS = [
    Endpoint("GET", "/books", 20, _list_books),
    Endpoint("GET", "/books/{book_id}", 22, _get_book),
    Endpoint("GET", "/books/{book_id}/recommendations", 6, _recommendations),
    Endpoint("GET", "/search", 14, _search),
    Endpoint("POST", "/orders", 12, _create_order),
    Endpoint("GET", "/orders/{order_id}", 8, _get_order),
    Endpoint("POST", "/books", 3, _create_book),  # partners and internal only: a 403 for customers
    Endpoint("GET", "/reports/sales", 3, _sales_report),  # slow; internal only: a 403 for the others
    Endpoint("GET", "/health", 12, _health),  # the load balancer's, without a key
]

ANONYMOUS_SHARE = 0.04
"""Calls to the API without a key, or with a key it does not know: 401s."""


class TrafficMix:
    """The next call: an endpoint by weight, a consumer by weight (the health check has none, and a few
    calls come without a valid key), and the endpoint's own mix of valid and invalid input."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._endpoint_weights = [e.weight for e in ENDPOINTS]
        self._consumer_weights = [c.weight for c in CONSUMERS]

    def next_call(self) -> Call:
        rng = self._rng
        endpoint = rng.choices(ENDPOINTS, self._endpoint_weights)[0]
        path, params, body = endpoint.build(rng)
        api_key: str | None = None
        if endpoint.route != "/health":
            if rng.random() < ANONYMOUS_SHARE:
                api_key = rng.choice([None, "ak_expired_0000"])
            else:
                api_key = self.consumer().api_key
        return Call(f"{endpoint.method} {endpoint.route}", endpoint.method, path, api_key, params, body)

    def consumer(self) -> DemoConsumer:
        return self._rng.choices(CONSUMERS, self._consumer_weights)[0]


class TrafficGenerator:
    """Sends ``mix``'s calls to ``base_url`` at ``rate`` calls per second on average (Poisson arrivals),
    each as soon as it is due: a slow call does not hold up the next (at most ``max_in_flight`` at
    once). Runs an event loop in a thread of its own, from ``start`` until ``stop``."""

    def __init__(self, base_url: str, rate: float, mix: TrafficMix, max_in_flight: int = 64) -> None:
        self.base_url = base_url
        self.rate = rate
        self.mix = mix
        self.max_in_flight = max_in_flight
        self._arrivals = random.Random()
        self.statuses: Counter[int] = Counter()
        """Responses per status code."""
        self.failures = 0
        """Calls that got no response (the app unreachable)."""
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(),), name="demo-traffic")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sending; calls still in flight are cancelled."""
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._loop.close()

    async def _run(self) -> None:
        in_flight = asyncio.Semaphore(self.max_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        # Idle connections closed before uvicorn's 5 s keep-alive ends: a request never races the server's close.
        limits = httpx.Limits(max_connections=self.max_in_flight, keepalive_expiry=2.0)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits) as client:
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), self._arrivals.expovariate(self.rate))
                    break
                except TimeoutError:
                    pass
                await in_flight.acquire()
                task = asyncio.create_task(self._send(client, self.mix.next_call(), in_flight))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, client: httpx.AsyncClient, call: Call, in_flight: asyncio.Semaphore) -> None:
        try:
            headers = {"X-API-Key": call.api_key} if call.api_key else None
            response = await client.request(call.method, call.path, params=call.params, json=call.json, headers=headers)
            self.statuses[response.status_code] += 1
        except httpx.HTTPError:
            self.failures += 1
        finally:
            in_flight.release()
