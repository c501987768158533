"""A request is measured once: by the outermost tallyhub middleware, also across a bridge that
builds a new environ (an ASGI app mounting an instrumented WSGI app)."""

from __future__ import annotations

import gc
import subprocess
import sys
import warnings
from pathlib import Path

from fastapi import FastAPI
from flask import Flask
from starlette.testclient import TestClient

from tallyhub.instrumentation.flask import TallyhubMiddleware as FlaskMiddleware
from tallyhub.instrumentation.starlette import TallyhubMiddleware

from .conftest import capturing_client, request_counts

REPO = Path(__file__).resolve().parents[2]


def test_a_flask_app_mounted_in_fastapi_is_counted_once_by_the_outer_middleware() -> None:
    gc.collect()  # middlewares of earlier tests, gone
    inner_client, outer_client = capturing_client(), capturing_client()
    flask_app = Flask(__name__)

    @flask_app.get("/hello/<name>")
    def hello(name: str) -> str:
        return f"hello {name}"

    FlaskMiddleware(flask_app, client=inner_client)
    app = FastAPI()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Starlette's own WSGI bridge (a2wsgi's twin)
        from starlette.middleware.wsgi import WSGIMiddleware

    app.mount("/legacy", WSGIMiddleware(flask_app))
    app.add_middleware(TallyhubMiddleware, client=outer_client)
    with TestClient(app) as http:
        assert http.get("/legacy/hello/ann").text == "hello ann"
    inner_client.shutdown()
    assert request_counts(*outer_client.metrics_out.batches) == {("GET", "/legacy/{path}", 200): 1}
    assert request_counts(*inner_client.metrics_out.batches) == {}


ONE_THEN_TWO = """
import gc
from fastapi import FastAPI
from starlette.testclient import TestClient
from tallyhub.instrumentation import measuring
from tallyhub.instrumentation.measuring import MEASURING
from tallyhub.instrumentation.starlette import TallyhubMiddleware
from tests.instrumentation.conftest import capturing_client as client

seen = []
app = FastAPI()

@app.get("/")
async def index() -> dict:
    seen.append(MEASURING.get())
    return {}

app.add_middleware(TallyhubMiddleware, client=client())
with TestClient(app) as http:
    http.get("/")
    alone = measuring.nested
    other = TallyhubMiddleware(app, client=client())  # a second one, built: now it is set
    http.get("/")
    del other
    gc.collect()
    http.get("/")
print(alone, seen)
"""


def test_one_middleware_alone_sets_no_context_variable() -> None:
    """Setting it copies the context on every request; with no second middleware nothing reads it.
    In a fresh interpreter: other tests' middlewares may still be alive here."""
    done = subprocess.run([sys.executable, "-c", ONE_THEN_TWO], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False [False, True, False]"
