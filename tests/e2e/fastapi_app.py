"""The app the end-to-end tests serve with uvicorn. Configured only through OTEL_* variables."""

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

from tallyhub import set_consumer
from tallyhub.instrumentation.starlette import TallyhubMiddleware

app = FastAPI()
app.add_middleware(TallyhubMiddleware)


@app.get("/items/{item_id}")
def read_item(item_id: int, request: Request) -> dict:
    if "x-consumer" in request.headers:
        set_consumer(request, request.headers["x-consumer"], name="Acme", group="customers")
    return {"id": item_id}


@app.post("/items", status_code=201)
def create_item(item: dict) -> dict:
    return item


@app.get("/boom")
def boom() -> None:
    raise RuntimeError("an unhandled error")


def api_consumer(request: Request) -> None:
    """Runs before the body is validated: a request with an invalid body still has its consumer."""
    if "x-consumer" in request.headers:
        set_consumer(request, request.headers["x-consumer"], name="Acme", group="customers")


class Order(BaseModel):
    sku: str
    quantity: int


@app.post("/orders", status_code=201, dependencies=[Depends(api_consumer)])
def create_order(order: Order) -> dict:
    if order.sku == "crash":
        raise KeyError(order.sku)
    return order.model_dump()
