"""Apps with no tallyhub code at all: the launcher (`opentelemetry-instrument`) adds it."""

from fastapi import FastAPI
from flask import Flask, request
from litestar import Litestar, get, post
from opentelemetry import metrics

orders = metrics.get_meter("shop").create_counter("shop.orders")  # an app's own SDK metric

fastapi_app = FastAPI()


@fastapi_app.get("/items/{item_id}")
def read_item(item_id: int) -> dict:
    return {"id": item_id}


@fastapi_app.post("/items", status_code=201)
def create_item(item: dict) -> dict:
    orders.add(1)
    return item


@fastapi_app.get("/boom")
def boom() -> None:
    raise RuntimeError("an unhandled error")


flask_app = Flask(__name__)


@flask_app.get("/items/<int:item_id>")
def flask_read_item(item_id: int):
    return {"id": item_id}


@flask_app.post("/items")
def flask_create_item():
    orders.add(1)
    return request.get_json(), 201


@flask_app.get("/boom")
def flask_boom():
    raise RuntimeError("an unhandled error")


@get("/items/{item_id:int}", sync_to_thread=False)
def litestar_read_item(item_id: int) -> dict:
    return {"id": item_id}


@post("/items", sync_to_thread=False)
def litestar_create_item(data: dict) -> dict:
    orders.add(1)
    return data


@get("/boom", sync_to_thread=False)
def litestar_boom() -> None:
    raise RuntimeError("an unhandled error")


litestar_app = Litestar([litestar_read_item, litestar_create_item, litestar_boom])
