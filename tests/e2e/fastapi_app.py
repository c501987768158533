"""The app the end-to-end tests serve with uvicorn. Configured only through OTEL_* variables."""

from fastapi import FastAPI, Request

from tallyhub import set_consumer
from tallyhub.instrumentation import TallyhubMiddleware

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
