"""Flask: `TallyhubMiddleware(app, app_key=...)`, which wraps ``app.wsgi_app`` as Flask extensions do.

Route templates are Flask's own rules (`/items/<int:item_id>`), blueprint prefixes included.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from flask import Flask, request
from flask.ctx import RequestContext
from opentelemetry.sdk.resources import Resource

from tallyhub.instrumentation.client import TallyhubClient
from tallyhub.instrumentation.introspection import Endpoint, docstring_parts, package_version, startup_document
from tallyhub.instrumentation.measuring import MEASURED
from tallyhub.instrumentation.routes import UNMATCHED_ROUTE
from tallyhub.instrumentation.server_errors import EXCEPTION_KEY
from tallyhub.instrumentation.wsgi import Environ, WSGIMiddleware

_REQUEST_KEY = "tallyhub.flask_request"


class TallyhubMiddleware(WSGIMiddleware):
    """Measures every request of a Flask app: ``TallyhubMiddleware(app, app_key=...)`` installs itself
    as ``app.wsgi_app``. Keyword arguments are those of ``TallyhubClient``."""

    def __init__(self, flask_app: Any, client: TallyhubClient | None = None, **config: Any) -> None:
        super().__init__(flask_app.wsgi_app, client, **config)
        self.flask_app = flask_app
        flask_app.wsgi_app = self
        flask_app.extensions["tallyhub"] = self
        # Flask unlinks the request from the environ when its context ends; keep a reference to
        # read the matched rule afterwards (route_of drops it again, so no cycle outlives it).
        make_context = flask_app.request_context
        if getattr(make_context, "__func__", None) is Flask.request_context:
            make_context = partial(RequestContext, flask_app)  # what Flask's own returns, without its call

        def request_context(environ: Environ) -> Any:
            context = make_context(environ)
            if environ.get(MEASURED) is self:  # only requests this middleware measures (it reads it back)
                environ[_REQUEST_KEY] = context.request
            return context

        flask_app.request_context = request_context
        # Flask answers an unhandled exception itself (a 500), in handle_exception (which sends the
        # got_request_exception signal): shown to finish() from there. A receiver of the signal
        # would make Flask dispatch it on every 500 (~2 µs more).
        handle_exception = flask_app.handle_exception

        def keep_exception(exception: Exception) -> Any:
            # The request itself, as Flask's "Notes On Proxies" show: an attribute read through
            # the `request` proxy costs ~2 µs, this ~0.3.
            request._get_current_object().environ[EXCEPTION_KEY] = exception  # type: ignore[attr-defined]
            return handle_exception(exception)

        flask_app.handle_exception = keep_exception

    def route_of(self, environ: Environ, status: int) -> str:
        request = environ.pop(_REQUEST_KEY, None)  # Flask set its url_rule when routing matched
        rule = getattr(request, "url_rule", None)
        if rule is not None:
            return rule.rule
        if status == 405:  # the path matched a rule, the method did not: that rule's template
            return _rule_for_other_method(self.flask_app, environ, request) or UNMATCHED_ROUTE
        return UNMATCHED_ROUTE

    def request_object(self, environ: Environ) -> Any:
        return environ.get(_REQUEST_KEY) or environ  # Flask's request (its environ if routing failed early)

    def describe(self, resource: Resource) -> str:
        return startup_document(flask_endpoints(self.flask_app), None, package_version("flask"), resource)


def flask_endpoints(app: Any) -> list[Endpoint]:
    """Every (method, rule) of the app, with the view's docstring; static files left out."""
    endpoints = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        summary, description = docstring_parts(app.view_functions.get(rule.endpoint))
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            endpoints.append(Endpoint(method, rule.rule, summary, description))
    return endpoints


def _rule_for_other_method(app: Any, environ: Environ, request: Any) -> str | None:
    valid = getattr(getattr(request, "routing_exception", None), "valid_methods", None)
    if not valid:
        return None
    try:
        rule, _ = app.url_map.bind_to_environ(environ).match(method=valid[0], return_rule=True)
    except Exception:  # the map disagrees with itself: no template rather than an error
        return None
    return rule.rule
