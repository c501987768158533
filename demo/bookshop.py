"""The demo's bookshop: a small FastAPI API measured by tallyhub's own middleware.

Its handlers behave as a real API's do: they take time (log-normally spread, one slow report),
refuse callers without a key (401) or without the right (403), answer 404 for what does not
exist and 422 for invalid queries and bodies, and fail now and then with a real exception (a 500
whose stack trace reaches the hub). Callers are API consumers, identified by their ``X-API-Key``.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations, which name
# the local ``Caller``, at run time.
import asyncio
import math
import random
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from pydantic import BaseModel, Field

from tallyhub import set_consumer
from tallyhub.demo.data import BOOKS, CONSUMERS, SEEDED_ORDERS, Book, DemoConsumer
from tallyhub.instrumentation.fastapi import TallyhubMiddleware

RECOMMENDED_GENRES = {
    "science fiction": ["fantasy", "science"],
    "fantasy": ["science fiction", "classics"],
    "classics": ["literary fiction", "historical fiction"],
    "literary fiction": ["classics"],
    "historical fiction": ["classics", "mystery"],
    "mystery": ["classics"],
    "science": ["science fiction"],
}


class PaymentGatewayError(RuntimeError):
    """The (simulated) payment provider failed: the demo's unhandled exception."""


class ShippingAddress(BaseModel):
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2 code")
    postcode: str = Field(min_length=3, max_length=10)


class OrderIn(BaseModel):
    book_id: int
    quantity: int = Field(ge=1, le=10)
    shipping: ShippingAddress


class BookIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    author: str = Field(min_length=1, max_length=100)
    price: float = Field(gt=0)
    isbn: str = Field(pattern=r"^97[89]\d{10}$")


def create_app(endpoint: str, app_key: str, export_interval: float) -> FastAPI:
    """The bookshop, exporting to the hub at ``endpoint`` (OTLP gRPC) every ``export_interval`` seconds."""
    rng = random.Random()
    consumers = {c.api_key: c for c in CONSUMERS}
    books = {b.id: b for b in BOOKS}
    orders: dict[int, dict[str, Any]] = {
        n: {"id": n, "book_id": BOOKS[n % len(BOOKS)].id, "quantity": 1 + n % 3, "status": "shipped"}
        for n in range(1, SEEDED_ORDERS + 1)
    }

    app = FastAPI(title="Bookshop (tallyhub demo)", version="1.0.0")
    app.add_middleware(
        TallyhubMiddleware,  # type: ignore[arg-type]  # Starlette's factory type is narrower than any ASGI app
        endpoint=endpoint,
        app_key=app_key,
        service_name="bookshop",
        env="demo",
        app_version="1.0.0",
        export_interval=export_interval,
    )

    async def work(median_s: float, spread: float = 0.5) -> None:
        """Take the time a real handler would (a database, another service): log-normal around ``median_s``."""
        await asyncio.sleep(min(rng.lognormvariate(math.log(median_s), spread), 10 * median_s))

    def api_consumer(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> DemoConsumer:
        """The caller, from its API key; it is attributed before the body is validated, so that a
        422 has its consumer too."""
        consumer = consumers.get(x_api_key or "")
        if consumer is None:
            raise HTTPException(401, "missing or unknown X-API-Key", headers={"WWW-Authenticate": "ApiKey"})
        set_consumer(request, consumer.identifier, name=consumer.name, group=consumer.group)
        return consumer

    Caller = Annotated[DemoConsumer, Depends(api_consumer)]

    def allow(consumer: DemoConsumer, *groups: str) -> None:
        if consumer.group not in groups:
            raise HTTPException(403, f"consumers of group {consumer.group!r} may not do this")

    def book_or_404(book_id: int) -> Book:
        if book_id not in books:
            raise HTTPException(404, f"no book {book_id}")
        return books[book_id]

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness check for the load balancer."""
        return {"status": "ok"}

    @app.get("/books")
    async def list_books(
        caller: Caller,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        """List the catalogue, a page at a time."""
        await work(0.015)
        return [asdict(b) for b in list(books.values())[offset : offset + limit]]

    @app.get("/books/{book_id}")
    async def get_book(book_id: int, caller: Caller) -> dict[str, Any]:
        """One book."""
        await work(0.008)
        return asdict(book_or_404(book_id))

    @app.get("/books/{book_id}/recommendations")
    async def recommendations(book_id: int, caller: Caller) -> list[dict[str, Any]]:
        """Books of related genres."""
        book = book_or_404(book_id)
        await work(0.04)
        related = RECOMMENDED_GENRES[book.genre]  # KeyError for a genre the table forgot: a 500
        return [asdict(b) for b in books.values() if b.genre in related][:5]

    @app.post("/books", status_code=201)
    async def create_book(book: BookIn, caller: Caller) -> dict[str, Any]:
        """Add a book to the catalogue (partners and internal tools only)."""
        allow(caller, "partners", "internal")
        await work(0.03)
        new = Book(max(books) + 1, book.title, book.author, book.price, "new arrivals")
        books[new.id] = new
        return asdict(new)

    @app.get("/search")
    async def search(
        caller: Caller,
        q: Annotated[str, Query(min_length=2, max_length=100)],
        limit: Annotated[int, Query(ge=1, le=50)] = 10,
    ) -> list[dict[str, Any]]:
        """Full-text search over titles, authors and genres."""
        await work(0.06, 0.7)
        term = q.lower()
        return [asdict(b) for b in books.values() if term in f"{b.title} {b.author} {b.genre}".lower()][:limit]

    @app.post("/orders", status_code=201)
    async def create_order(order: OrderIn, caller: Caller) -> dict[str, Any]:
        """Place an order: reserve the book, charge the customer."""
        book = book_or_404(order.book_id)
        await work(0.09)
        charge(book.price * order.quantity)
        new: dict[str, Any] = {"id": max(orders) + 1, "book_id": book.id, "quantity": order.quantity, "status": "paid"}
        orders[new["id"]] = new
        return new

    def charge(amount: float) -> None:
        """The payment provider times out now and then, and nobody catches it: a 500 with a stack trace."""
        if rng.random() < 0.07:
            raise PaymentGatewayError(f"payment gateway timed out after 2.0 s charging {amount:.2f} EUR")

    @app.get("/orders/{order_id}")
    async def get_order(order_id: int, caller: Caller) -> dict[str, Any]:
        """One order."""
        await work(0.012)
        if order_id not in orders:
            raise HTTPException(404, f"no order {order_id}")
        return orders[order_id]

    @app.get("/reports/sales")
    async def sales_report(caller: Caller, days: Annotated[int, Query(ge=1, le=365)] = 7) -> dict[str, Any]:
        """Sales per book over the last days (internal tools only): a slow aggregate query."""
        allow(caller, "internal")
        await work(0.8, 0.4)
        return {"days": days, "orders": len(orders), "books": len(books)}

    return app
