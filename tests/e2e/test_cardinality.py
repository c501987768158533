"""A scanner's worth of traffic: distinct raw paths and distinct consumers do not grow the
client's memory, and every request is still counted at the hub."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tallyhub.instrumentation.aggregator import MAX_CONSUMERS, MAX_SERIES
from tallyhub.instrumentation.client import TallyhubClient
from tallyhub.instrumentation.starlette import TallyhubMiddleware

from .conftest import wait_for

REQUESTS = 50_000
CHECKPOINT = 20_000


async def item(request) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["item_id"])


async def drive(app, n: int, first: int) -> None:
    """Requests ``first .. first + n - 1``: every one to its own raw path, from its own consumer;
    even ones hit the route, odd ones are 404s."""

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        pass

    for i in range(first, first + n):
        path = f"/items/{i}" if i % 2 == 0 else f"/wp-admin/{i}.php"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"api"), (b"x-api-key", f"key-{i}".encode())],
            "client": ("127.0.0.1", 1234),
            "server": ("api", 80),
        }
        await app(scope, receive, send)


def traced_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_distinct_paths_and_consumers_keep_memory_flat_and_totals_exact(hub) -> None:
    key = hub.cli("apps", "create", "my-api").stdout.strip()
    client = TallyhubClient(
        endpoint=hub.endpoint,
        app_key=key,
        export_interval=3600,  # one interval: the caps are all that bound the aggregates
        identify_consumer=lambda request: request.headers.get("x-api-key"),
    )
    app = TallyhubMiddleware(Starlette(routes=[Route("/items/{item_id}", item)]), client=client)
    asyncio.run(drive(app, CHECKPOINT, 0))  # by now every cap is reached
    # The start-up event went out on the export thread, which imported gRPC and protobuf for it when
    # first needed (megabytes, once): stored, so that none of that lands in the window measured below.
    wait_for(lambda: hub.sql("SELECT count() FROM instances") != [["0"]], 60, "the start-up event stored")
    tracemalloc.start()  # traces what is allocated from here on (tracing triples the time per request)
    try:
        # measured with nothing queued: the requests not yet folded (at most a second's, and never more
        # than MAX_PENDING: tests/instrumentation/test_aggregator.py) are not what could grow
        client.aggregator.fold()
        at_checkpoint = traced_bytes()
        asyncio.run(drive(app, REQUESTS - CHECKPOINT, CHECKPOINT))
        client.aggregator.fold()
        at_end = traced_bytes()
    finally:
        tracemalloc.stop()
    growth = at_end - at_checkpoint
    print(f"memory allocated and still held: {at_checkpoint} B at request {CHECKPOINT}, {at_end} B at {REQUESTS}")
    # 30 000 more requests, each with a path and a consumer never seen before: at most a few
    # histogram buckets more. Growing per request, it would be tens of megabytes.
    assert growth < 64 * 1024, growth

    client.shutdown()  # the final export of everything aggregated
    wait_for(lambda: hub.sql("SELECT sum(requests) FROM requests") == [[str(REQUESTS)]], 60, "all requests stored")
    rows = hub.sql("SELECT route, status, consumer, sum(requests) FROM requests GROUP BY ALL")
    routes = {route for route, _, _, _ in rows}
    # never a raw path (the series overflow only shows if a minute boundary doubled the series)
    assert {"/items/{item_id}", "(unmatched)"} <= routes <= {"/items/{item_id}", "(unmatched)", "(overflow)"}
    consumers = {consumer for _, _, consumer, _ in rows} - {""}
    assert len(consumers) <= MAX_CONSUMERS + 1 and "(overflow)" in consumers
    assert len(rows) <= MAX_SERIES
    assert sum(int(n) for *_, n in rows) == REQUESTS
    assert hub.sql("SELECT count() FROM consumers FINAL") == [[str(len(consumers))]]
