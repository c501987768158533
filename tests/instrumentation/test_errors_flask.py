"""Server errors of a real Flask app: only the exceptions Flask did not handle."""

from __future__ import annotations

import re

import pytest
from flask import Flask, abort, request

from tallyhub import set_consumer
from tallyhub.instrumentation.flask import TallyhubMiddleware
from tallyhub.wire import SERVER_ERRORS, VALIDATION_ERRORS

from .conftest import capturing_client, error_counts, request_counts
from .test_flask import ClosingClient


class LedgerLocked(Exception):
    pass


class Handled(Exception):
    pass


def ledger_app() -> Flask:
    app = Flask(__name__)

    @app.post("/ledger/<int:entry_id>")
    def post_entry(entry_id: int):
        set_consumer(request, "accounting")
        raise LedgerLocked(f"ledger locked for entry {entry_id}")

    @app.get("/aborted")
    def aborted():
        abort(500)

    @app.get("/handled")
    def handled():
        raise Handled("turned into a response by an error handler")

    @app.errorhandler(Handled)
    def on_handled(exc: Handled):
        return {"error": str(exc)}, 500

    @app.get("/bad-request")
    def bad_request():
        abort(400)

    return app


def test_unhandled_exception_is_a_server_error_once() -> None:
    app = ledger_app()
    middleware = TallyhubMiddleware(app, client=capturing_client())
    http = ClosingClient(app)
    response = http.post("/ledger/12")
    assert response.status_code == 500
    assert b"Internal Server Error" in response.data  # Flask's own 500 page
    assert http.post("/ledger/12").status_code == 500
    middleware.client.loop.export_once()
    batches = middleware.client.metrics_out.batches
    assert request_counts(*batches) == {("POST", "/ledger/<int:entry_id>", 500): 2}
    ((key, count),) = error_counts(SERVER_ERRORS, *batches).items()
    error = dict(key)
    assert count == 2  # once per request
    assert error.keys() == {
        "http.request.method",
        "http.route",
        "tallyhub.consumer.id",
        "exception.type",
        "exception.message",
        "exception.stacktrace",
        "tallyhub.error.fingerprint",
    }
    assert (error["http.request.method"], error["http.route"]) == ("POST", "/ledger/<int:entry_id>")
    assert error["tallyhub.consumer.id"] == "accounting"
    assert error["exception.type"] == f"{__name__}.LedgerLocked"
    assert error["exception.message"] == "ledger locked for entry 12"
    trace = error["exception.stacktrace"]
    assert 'in post_entry\n    raise LedgerLocked(f"ledger locked for entry {entry_id}")\n' in trace
    assert trace.endswith(f"{__name__}.LedgerLocked: ledger locked for entry 12\n")
    assert re.fullmatch(r"[0-9a-f]{16}", error["tallyhub.error.fingerprint"])
    assert error_counts(VALIDATION_ERRORS, *batches) == {}


def test_propagated_exception_is_recorded_once() -> None:
    app = ledger_app()
    app.config["PROPAGATE_EXCEPTIONS"] = True  # as in Flask's testing mode: the exception reaches the server
    middleware = TallyhubMiddleware(app, client=capturing_client())
    with pytest.raises(LedgerLocked, match="entry 3"):
        app.test_client().post("/ledger/3")
    middleware.client.loop.export_once()
    batches = middleware.client.metrics_out.batches
    assert request_counts(*batches) == {("POST", "/ledger/<int:entry_id>", 500): 1}
    ((key, count),) = error_counts(SERVER_ERRORS, *batches).items()
    assert count == 1
    assert dict(key)["exception.message"] == "ledger locked for entry 3"


def test_custom_500_page_of_an_unhandled_exception_is_still_a_server_error() -> None:
    app = ledger_app()

    @app.errorhandler(500)
    def server_error_page(exc):
        return "sorry", 500

    middleware = TallyhubMiddleware(app, client=capturing_client())
    response = ClosingClient(app).post("/ledger/4")
    assert (response.status_code, response.data) == (500, b"sorry")
    middleware.client.loop.export_once()
    ((key, count),) = error_counts(SERVER_ERRORS, *middleware.client.metrics_out.batches).items()
    assert (dict(key)["exception.message"], count) == ("ledger locked for entry 4", 1)


def test_handled_exceptions_and_aborts_are_not_server_errors() -> None:
    app = ledger_app()
    middleware = TallyhubMiddleware(app, client=capturing_client())
    http = ClosingClient(app)
    assert http.get("/aborted").status_code == 500  # abort(500): an HTTPException, raised on purpose
    assert http.get("/handled").status_code == 500  # the app's error handler answered
    assert http.get("/bad-request").status_code == 400
    assert http.get("/missing").status_code == 404
    middleware.client.loop.export_once()
    batches = middleware.client.metrics_out.batches
    assert request_counts(*batches) == {
        ("GET", "/aborted", 500): 1,
        ("GET", "/handled", 500): 1,
        ("GET", "/bad-request", 400): 1,
        ("GET", "(unmatched)", 404): 1,
    }
    assert error_counts(SERVER_ERRORS, *batches) == {}
