"""Django (with Django REST framework and Django Ninja): one middleware, first in ``MIDDLEWARE``.

Set-up, in ``settings.py``::

    MIDDLEWARE = ["tallyhub.instrumentation.django.TallyhubMiddleware", ...]  # first
    TALLYHUB = {"app_key": "thk_…", "endpoint": "http://hub:4317", "service_name": "shop", "env": "prod"}

``TALLYHUB`` holds the keyword arguments of :class:`TallyhubClient` (all optional; without them
the ``OTEL_*`` variables apply). One client serves the whole process, however many handlers
Django builds (WSGI, ASGI, test clients): it is made on first use, and :func:`set_client`
replaces it (tests, or an app that builds its own).

The middleware is sync- and async-capable, so it runs in the handler's own mode under WSGI and
ASGI (no thread hop). Route templates come from ``request.resolver_match`` and are relative to
the app (``SCRIPT_NAME`` / ``FORCE_SCRIPT_NAME`` are not part of them):

- ``path()``, with ``include()`` prefixes and converters: Django's syntax, ``/api/items/<int:item_id>``;
- ``re_path()``: the regex route as Django joins it, without its leading ``^``:
  ``/articles/(?P<year>[0-9]{4})/$``;
- Django REST framework views (routers' regex routes): named groups as ``<name>``, anchors and the
  optional trailing slash dropped, format suffixes as ``.<format>``: ``/api/items/<pk>/``,
  ``/api/items/<pk>.<format>``;
- Django Ninja: Ninja's routes are ``path()`` routes, ``/api/things/<int:thing_id>``;
- no URL matched (404 from the resolver): ``(unmatched)``; an ``APPEND_SLASH`` redirect: the route
  it redirects to (``/api/items/`` for ``GET /api/items``, status 301).

On its first request a process starts the export thread and sends the start-up event: the
endpoints of the root URLconf (:func:`django_endpoints`, the same templates) and the Django Ninja
API's OpenAPI document (:func:`django_openapi`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from time import perf_counter
from typing import Any
from urllib.parse import unquote, urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from opentelemetry.context import get_current
from opentelemetry.sdk.resources import Resource

from tallyhub.instrumentation import measuring
from tallyhub.instrumentation.aggregator import FOLD_SOON, ValidationErrors
from tallyhub.instrumentation.client import TallyhubClient
from tallyhub.instrumentation.consumers import CONSUMER_KEY, Consumer, identify
from tallyhub.instrumentation.introspection import Endpoint, docstring_parts, package_version, startup_document
from tallyhub.instrumentation.measuring import MEASURED, MEASURING, middleware_built
from tallyhub.instrumentation.request_log import Captured, RequestLog, capture_log_lines
from tallyhub.instrumentation.request_log import finish as finish_capture
from tallyhub.instrumentation.routes import UNMATCHED_ROUTE
from tallyhub.instrumentation.server_errors import EXCEPTION_KEY, describe_exception
from tallyhub.instrumentation.validation_errors import (
    VALIDATION_STATUSES,
    ValidationError,
    drf_errors,
    response_errors,
)

__all__ = [
    "TallyhubMiddleware",
    "describe_django_app",
    "django_endpoints",
    "django_openapi",
    "django_route",
    "get_client",
    "route_template",
    "set_client",
]

SETTING = "TALLYHUB"
CLIENT_DISCONNECTED = 499  # nginx's "client closed request": the ASGI server cancelled the request

_client: TallyhubClient | None = None
_client_lock = threading.Lock()


def get_client() -> TallyhubClient:
    """The process's client, made from ``settings.TALLYHUB`` on first use."""
    global _client
    client = _client
    if client is None:
        with _client_lock:
            if _client is None:
                _client = _client_from_settings()
            client = _client
    return client


def set_client(client: TallyhubClient | None) -> None:
    """Measure into ``client`` from now on, in every handler of the process; ``None`` makes the
    next request build one from the settings again. The previous client is not stopped.
    Changing ``TALLYHUB`` with ``override_settings`` also makes the next request build one."""
    global _client
    with _client_lock:
        _client = client


def _client_from_settings() -> TallyhubClient:
    config = getattr(settings, SETTING, None) or {}
    if not isinstance(config, dict):
        raise ImproperlyConfigured(f"{SETTING} must be a dict of TallyhubClient's keyword arguments")
    accepted = inspect.signature(TallyhubClient).parameters
    unknown = sorted(set(config) - set(accepted))
    if unknown:
        raise ImproperlyConfigured(f"{SETTING}: unknown key(s) {', '.join(unknown)}; known: {', '.join(accepted)}")
    return TallyhubClient(**config)


def _reset_on_setting_change(setting: str, **kwargs: Any) -> None:
    if setting == SETTING:
        set_client(None)


setting_changed.connect(_reset_on_setting_change, dispatch_uid="tallyhub.instrumentation.django")


class TallyhubMiddleware:
    """Measures every request: method, route template, status, duration, body sizes.

    Put it first in ``MIDDLEWARE`` so that it times (and sees the final response of) every other
    middleware. A view's unhandled exception is a 500 response by the time it gets here (Django
    converts it inside ``get_response``); one that still escapes (``DEBUG_PROPAGATE_EXCEPTIONS``)
    is recorded as a 500 and re-raised. An async request cancelled because its client went away
    (Django >= 5.0 under ASGI) is recorded as 499. A streaming response is recorded once its body
    has been sent (or the response closed): its duration and size cover the whole body, as for
    the ASGI middleware. Methods and paths (``request.path_info``) that the client excludes are
    not measured; a request is measured once even if the middleware is listed twice.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        get_client()  # a misconfigured TALLYHUB setting fails when Django loads the middleware
        middleware_built(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        client = _client or get_client()
        if (client.excluded is not None or measuring.nested) and _not_measured(request, client):
            return self.get_response(request)
        if not client.loop.running:  # the first request in this process (or forked worker)
            client.start(describe_django_app)
        if client.request_log is not None:  # the log lines it writes from here on (capture_logs)
            request.META[LOG_LINES_KEY] = capture_log_lines(client.request_log)
        start = perf_counter()
        try:
            response = self.get_response(request)
        except BaseException as exc:
            _record(client, request, None, 500, start, perf_counter(), exception=exc)
            raise
        return _measure(client, request, response, start, perf_counter())

    async def __acall__(self, request: HttpRequest) -> Any:
        client = _client or get_client()
        if (client.excluded is not None or measuring.nested) and _not_measured(request, client):
            return await self.get_response(request)
        if not client.loop.running:
            client.start(describe_django_app)
        if client.request_log is not None:  # the log lines it writes from here on (capture_logs)
            request.META[LOG_LINES_KEY] = capture_log_lines(client.request_log)
        start = perf_counter()
        try:
            response = await self.get_response(request)
        except asyncio.CancelledError:  # the client went away before the response was ready
            _record(client, request, None, CLIENT_DISCONNECTED, start, perf_counter())
            raise
        except BaseException as exc:
            _record(client, request, None, 500, start, perf_counter(), exception=exc)
            raise
        return _measure(client, request, response, start, perf_counter())

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """Django's hook for a view's exception (before it becomes a 500, or a 404 for ``Http404``):
        kept for ``_record``, which reports it if the response is a 5xx. Returns None: Django's
        handling goes on exactly as without it."""
        request.META[EXCEPTION_KEY] = exception


def _not_measured(request: HttpRequest, client: TallyhubClient) -> bool:
    """Whether to leave a request alone: already measured (the middleware listed twice, or a
    tallyhub WSGI/ASGI middleware around Django), or its path excluded (``excluded_urls``). Called
    only when either can be (paths are excluded, or another tallyhub middleware exists)."""
    excluded = client.excluded
    if excluded is not None and excluded(request.method or "GET", request.path_info):
        return True
    if not measuring.nested:  # this middleware alone in the process: nothing to tell or to read
        return False
    meta = request.META  # the WSGI environ itself under WSGI
    scope = getattr(request, "scope", None)  # the ASGI scope under ASGI
    if MEASURED in meta or (scope is not None and MEASURED in scope) or MEASURING.get():
        return True
    meta[MEASURED] = True
    return False


def _measure(client: TallyhubClient, request: HttpRequest, response: Any, start: float, end: float) -> Any:
    """Record a finished response now, or a streaming one once its body has been sent."""
    if not getattr(response, "streaming", False):
        try:
            size = len(response.content)
        except (AttributeError, TypeError):
            size = 0
        status = response.status_code
        errors = _validation_errors(response) if status in VALIDATION_STATUSES else None
        _record(client, request, response, status, start, end, size, errors)
    elif getattr(response, "file_to_stream", None) is not None:
        # A FileResponse that a WSGI server may send with sendfile(): its iterator is never
        # consumed (replacing it would turn that off), so its declared length is the size.
        _StreamRecord(client, request, response, start, _declared_length(response)).finish_on_close(response)
    else:
        record = _StreamRecord(client, request, response, start, 0)
        if response.is_async:
            response.streaming_content = _count_async(response.streaming_content, record)
        else:
            response.streaming_content = _count_sync(response.streaming_content, record)
        record.finish_on_close(response)  # iteration may never start (HEAD, an aborted request)
    return response


def _record(
    client: TallyhubClient,
    request: HttpRequest,
    response: Any,
    status: int,
    start: float,
    end: float,
    response_size: int = 0,
    validation_errors: ValidationErrors | None = None,
    exception: BaseException | None = None,
) -> None:
    route, request_size, consumer = _request_facts(client, request, response)
    if exception is None:
        exception = request.META.pop(EXCEPTION_KEY, None)  # kept by process_exception
    server_error = None
    if exception is not None and status >= 500 and isinstance(exception, Exception):
        server_error = describe_exception(exception)
    # What TallyhubClient.record_request does, inline: no call per request.
    aggregator = client.aggregator
    pending = aggregator.pending
    pending.append(
        (request.method or "GET", route, status, end - start, request_size, response_size, end + aggregator.wall_offset,
         consumer, validation_errors, server_error)
    )  # fmt: skip
    if len(pending) >= FOLD_SOON:
        aggregator.queued_many()
    log = client.request_log
    if log is not None:
        captured = _captured(log, request, response, end - start, streaming=False)
        finish_capture(log, captured, route, status, end - start, request_size, response_size, consumer, server_error)


LOG_LINES_KEY = "tallyhub.log_lines"
"""Where a request's log lines wait in ``request.META`` until it is logged."""


def _captured(log: RequestLog, request: HttpRequest, response: Any, duration_s: float, streaming: bool) -> Captured:
    """The request log's view of a Django request: its body if the app read it, the response's
    content unless streamed."""
    body = request.__dict__.get("_body")  # set once the app read request.body
    return Captured(
        start_ns=time.time_ns() - int(duration_s * 1e9),
        method=request.method or "GET",
        scheme=request.scheme or "http",
        path=request.path,
        query=request.META.get("QUERY_STRING", ""),
        client=request.META.get("REMOTE_ADDR", "") or "",
        request_headers=list(request.headers.items()),
        context=get_current(),
        request_body=[body] if body and log.config.log_request_body else None,
        response_headers=list(response.items()) if response is not None else [],  # None: no response (it raised)
        response_body=[response.content]
        if response is not None and not streaming and log.config.log_response_body
        else None,
        streaming=streaming,
        log_lines=request.META.pop(LOG_LINES_KEY, None),
    )


def _validation_errors(response: Any) -> ValidationErrors | None:
    """Django REST Framework's serializer errors (a 400 whose ``data`` holds ``ErrorDetail``s),
    or those of a JSON error body of a known shape (Django Ninja's 422, parsed when folded); of a
    400 or 422 response (the caller checks)."""
    status = response.status_code
    data = getattr(response, "data", None)
    if data is not None:
        return drf_errors(data) if status == 400 else None
    return functools.partial(_body_errors, status, response.headers, response.content)  # read when folded


def _body_errors(status: int, headers: Any, body: bytes) -> list[ValidationError]:
    """``response_errors`` of a finished response's headers and body (Django's lookups of absent
    headers raise and catch a KeyError inside: left to the export thread)."""
    return response_errors(status, headers.get("Content-Type", ""), headers.get("Content-Encoding", ""), body)


def _request_facts(client: TallyhubClient, request: HttpRequest, response: Any) -> tuple[str, int, Consumer | None]:
    """A handled request's route template, body size and consumer, in one call (every request
    needs all three).

    The size is the body's length if the app read it, else the declared ``Content-Length``
    (never read here). The consumer is the one ``set_consumer(request, ...)`` kept in the ASGI
    scope or the WSGI environ (``request.META``), else the callback's."""
    meta = request.META
    body = request.__dict__.get("_body")  # set once the app read request.body
    if isinstance(body, bytes):
        request_size = len(body)
    elif declared := meta.get("CONTENT_LENGTH"):
        try:
            request_size = max(int(declared), 0)
        except ValueError:
            request_size = 0
    else:
        request_size = 0
    consumer = (request.__dict__.get("scope") or meta).get(CONSUMER_KEY)
    if consumer is None and client.identify_consumer is not None:
        consumer = identify(client.identify_consumer, lambda: request)
    return django_route(request, response), request_size, consumer


class _StreamRecord:
    """A streaming response's measurement, recorded once: when its body ends or it is closed.
    It holds no reference to the response (which holds it)."""

    __slots__ = (
        "captured",
        "client",
        "consumer",
        "done",
        "method",
        "request_size",
        "route",
        "size",
        "start",
        "status",
    )

    def __init__(self, client: TallyhubClient, request: HttpRequest, response: Any, start: float, size: int) -> None:
        self.client = client
        self.method = request.method or "GET"
        self.route, self.request_size, self.consumer = _request_facts(client, request, response)
        self.status = response.status_code
        self.start = start
        self.size = size
        self.done = False
        log = client.request_log
        elapsed = perf_counter() - start
        self.captured = _captured(log, request, response, elapsed, streaming=True) if log is not None else None

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        end = perf_counter()
        duration = end - self.start
        self.client.record_request(
            self.method, self.route, self.status, self.start, end, self.request_size, self.size, self.consumer
        )
        log = self.client.request_log
        if self.captured is not None and log is not None:
            finish_capture(
                log, self.captured, self.route, self.status, duration, self.request_size, self.size, self.consumer, None
            )

    def finish_on_close(self, response: Any) -> None:
        """Finish when the server (WSGI: PEP 3333; ASGI: Django's handler) closes the response."""
        closers = getattr(response, "_resource_closers", None)  # what close() calls, since Django 3.0
        if isinstance(closers, list):
            closers.append(self.finish)
            return
        close = response.close

        def close_and_finish() -> None:
            try:
                close()
            finally:
                self.finish()

        response.close = close_and_finish


def _count_sync(chunks: Iterable[bytes], record: _StreamRecord) -> Iterator[bytes]:
    try:
        for chunk in chunks:
            record.size += len(chunk)
            yield chunk
    finally:
        record.finish()


async def _count_async(chunks: AsyncIterator[bytes], record: _StreamRecord) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            record.size += len(chunk)
            yield chunk
    finally:
        record.finish()


def _declared_length(response: Any) -> int:
    try:
        return max(int(response.headers.get("Content-Length") or 0), 0)
    except ValueError:
        return 0


# Route templates.

REDIRECTS = frozenset({301, 302, 307, 308})
MAX_TEMPLATES = 4096
_TEMPLATES: dict[tuple[str, Any], str] = {}
"""The template of each (route, view) seen: a URLconf has a bounded number of them."""


def django_route(request: HttpRequest, response: Any = None) -> str:
    """The route template of a handled request (see the module's docstring)."""
    match = getattr(request, "resolver_match", None)
    if match is not None:
        route = getattr(match, "route", None)
        if route is None:
            return UNMATCHED_ROUTE
        key = (route, match.func)
        template = _TEMPLATES.get(key)  # one lookup per request (the URLconf has so many routes)
        if template is None:
            template = route_template(route, match.func)
            if len(_TEMPLATES) < MAX_TEMPLATES:
                _TEMPLATES[key] = template
        return template
    if response is not None and response.status_code in REDIRECTS:
        return _slash_redirect_route(request, response)
    return UNMATCHED_ROUTE


def _slash_redirect_route(request: HttpRequest, response: HttpResponseBase) -> str:
    """CommonMiddleware's ``APPEND_SLASH`` redirect is recorded under the route it leads to."""
    path_info = request.path_info
    if path_info.endswith("/") or unquote(urlsplit(response.get("Location", "")).path) != request.path + "/":
        return UNMATCHED_ROUTE
    try:
        match = resolve(path_info + "/", getattr(request, "urlconf", None))
    except Exception:  # Resolver404, or a broken URLconf: nothing to name it by
        return UNMATCHED_ROUTE
    return route_template(match.route, match.func) if match.route is not None else UNMATCHED_ROUTE


def route_template(route: str, view: Any) -> str:
    """The template of a Django route (``ResolverMatch.route``) served by ``view``."""
    return _template(route, _is_drf_view(view))


@functools.lru_cache(maxsize=1024)
def _template(route: str, drf: bool) -> str:
    if drf:
        cleaned = _regex_as_path(route)
        if cleaned is not None:
            return "/" + _DRF_FORMAT_CONVERTER.sub(r".<\1>", cleaned)
    return "/" + route.removeprefix("^")


def _is_drf_view(view: Any) -> bool:
    cls = getattr(view, "cls", None)  # what DRF's as_view() sets (Django's sets view_class)
    if not isinstance(cls, type):
        return False
    drf_views = sys.modules.get("rest_framework.views")
    return drf_views is not None and issubclass(cls, drf_views.APIView)


_DRF_FORMAT_CONVERTER = re.compile(r"<drf_format_suffix\w*:(\w+)>")
_REGEX_SYNTAX = frozenset("^$.*+?()[]{}|")
_QUANTIFIERS = frozenset("*+?{")


def _regex_as_path(regex: str) -> str | None:
    """A regex route in ``path()`` terms: ``(?P<name>…)`` as ``<name>``, the ``^``/``$`` anchors and
    a trailing optional slash dropped, escaped characters unescaped. None when other regex syntax
    (an unnamed group, a quantifier, a character class outside a group) remains."""
    end = len(regex)
    if regex.endswith("$") and not regex.endswith("\\$"):
        end -= 1
    if regex.endswith("/?", 0, end):
        end -= 2
    i = 1 if regex.startswith("^") else 0
    out: list[str] = []
    while i < end:
        char = regex[i]
        if regex.startswith("(?P<", i):
            name_end = regex.find(">", i)
            group_end = _group_end(regex, i, end)
            if name_end < 0 or group_end < 0:
                return None
            out.append(f"<{regex[i + 4 : name_end]}>")
            i = group_end + 1
        elif char == "\\":
            escaped = regex[i + 1 : i + 2]
            if not escaped or escaped.isalnum():  # \d, \w, …: a character class
                return None
            out.append(escaped)
            i += 2
        elif char == "." and regex[i + 1 : i + 2] not in _QUANTIFIERS:
            out.append(char)  # a literal dot of a path() prefix (DRF escapes its own: "\\.")
            i += 1
        elif char in _REGEX_SYNTAX:
            return None
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _group_end(regex: str, start: int, end: int) -> int:
    """The index of the parenthesis closing the group opened at ``start``, or -1."""
    depth = 0
    i = start
    in_class = False
    while i < end:
        char = regex[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


# The app's endpoints and OpenAPI document, for the start-up event.


def describe_django_app(resource: Resource) -> str:
    """The start-up document of the Django app (``introspection.startup_document``)."""
    return startup_document(django_endpoints(), django_openapi(), package_version("django"), resource)


def django_endpoints(urlconf: Any = None) -> list[Endpoint]:
    """Every (method, route template) of the URLconf (the root one by default), with the same
    templates as the requests' routes.

    Methods: a class-based view's handlers (``get``, ``post``, …; HEAD only without GET, OPTIONS
    only where the app defines it), a DRF viewset's actions, a Django Ninja operation's methods,
    a function view's ``require_http_methods`` list; ``*`` for a function view that takes any
    method. Summary and description: Ninja's, else the handler's docstring, else the class's.
    Left out: Ninja's docs and schema views, DRF's format-suffix duplicates (as DRF's schemas do).
    """
    endpoints: list[Endpoint] = []
    _walk(get_resolver(urlconf).url_patterns, "", endpoints)
    seen: set[tuple[str, str]] = set()
    unique = []
    for endpoint in endpoints:  # a route listed twice is served by its first pattern
        if (endpoint.method, endpoint.route) not in seen:
            seen.add((endpoint.method, endpoint.route))
            unique.append(endpoint)
    return unique


def django_openapi(urlconf: Any = None) -> dict[str, Any] | None:
    """The OpenAPI document of the first Django Ninja API in the URLconf, with paths relative to
    the app (``/api/things/{thing_id}``); None without one."""
    found = _find_ninja_api(get_resolver(urlconf).url_patterns, "")
    if found is None:
        return None
    api, prefix = found
    return dict(api.get_openapi_schema(path_prefix=prefix))


def _join_route(prefix: str, route: str) -> str:
    """How Django joins an ``include()``'s route to its patterns' (``URLResolver._join_route``)."""
    return prefix + route.removeprefix("^") if prefix else route


def _walk(patterns: Iterable[Any], prefix: str, endpoints: list[Endpoint]) -> None:
    for pattern in patterns:
        route = _join_route(prefix, str(pattern.pattern))
        if isinstance(pattern, URLResolver):
            _walk(pattern.url_patterns, route, endpoints)
        elif isinstance(pattern, URLPattern):
            endpoints.extend(_view_endpoints(route, pattern.callback))


def _view_endpoints(route: str, view: Any) -> list[Endpoint]:
    if _ninja_api_of(view) is not None:  # Ninja's own docs, schema and root views
        return []
    template = route_template(route, view)
    path_view = _ninja_path_view(view)
    if path_view is not None:
        return [
            Endpoint(method, template, operation.summary or None, operation.description or None)
            for operation in path_view.operations
            if getattr(operation, "include_in_schema", True)
            for method in _without_implied(operation.methods)
        ]
    actions = getattr(view, "actions", None)  # a DRF viewset: {"get": "list", "post": "create"}
    cls = getattr(view, "cls", None) or getattr(view, "view_class", None)
    if isinstance(cls, type):
        if _is_drf_view(view) and template.endswith(".<" + _drf_format_kwarg() + ">"):
            return []
        if isinstance(actions, dict):
            handlers = {method.upper(): getattr(cls, action, None) for method, action in actions.items()}
        else:
            handlers = {method.upper(): getattr(cls, method) for method in _class_methods(cls)}
        return [Endpoint(method, template, *_docs(handlers[method], cls)) for method in _without_implied(handlers)]
    func = view.func if isinstance(view, functools.partial) else view
    summary, description = docstring_parts(func)
    methods = _declared_methods(func) or ["*"]
    return [Endpoint(method, template, summary, description) for method in _without_implied(methods)]


def _class_methods(cls: type) -> list[str]:
    """The HTTP methods a class-based view handles, OPTIONS only where the app defines it."""
    methods = []
    for method in getattr(cls, "http_method_names", ()):
        handler = getattr(cls, method, None)
        if handler is None or (method == "options" and _is_framework_code(handler)):
            continue
        methods.append(method)
    return methods


METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")


def _without_implied(methods: Iterable[str]) -> list[str]:
    """The methods in a fixed order, without HEAD where GET is there (Django serves HEAD with GET's handler)."""
    upper = sorted({m.upper() for m in methods}, key=lambda m: (_method_rank(m), m))
    return [m for m in upper if not (m == "HEAD" and "GET" in upper)]


def _method_rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def _docs(handler: Any, cls: type) -> tuple[str | None, str | None]:
    """The handler's docstring unless it is the framework's own, else the view class's."""
    if handler is not None and not _is_framework_code(handler):
        summary, description = docstring_parts(handler)
        if summary:
            return summary, description
    return docstring_parts(cls)


def _is_framework_code(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] in ("django", "rest_framework", "ninja")


def _declared_methods(func: Any) -> list[str] | None:
    """The methods of Django's ``require_http_methods`` (``require_GET``, ``require_safe``, …), if any."""
    while func is not None:
        code = getattr(func, "__code__", None)
        closure = getattr(func, "__closure__", None)
        if code is not None and closure:
            for name, cell in zip(code.co_freevars, closure, strict=False):
                if name == "request_method_list":
                    return [str(m).upper() for m in cell.cell_contents]
        func = getattr(func, "__wrapped__", None)
    return None


def _drf_format_kwarg() -> str:
    drf_settings = sys.modules.get("rest_framework.settings")
    return getattr(getattr(drf_settings, "api_settings", None), "FORMAT_SUFFIX_KWARG", None) or "format"


def _ninja_api_of(view: Any) -> Any:
    """The NinjaAPI of one of Ninja's own views (``partial(openapi_json, api=api)``), else None."""
    ninja_main = sys.modules.get("ninja.main")
    if ninja_main is None or not isinstance(view, functools.partial):
        return None
    api = view.keywords.get("api")
    return api if isinstance(api, ninja_main.NinjaAPI) else None


def _ninja_path_view(view: Any) -> Any:
    """The Ninja ``PathView`` behind a view (a bound method or, since 1.4, a closure over it)."""
    ninja_operation = sys.modules.get("ninja.operation")
    if ninja_operation is None:
        return None
    path_view_class = ninja_operation.PathView
    owner = getattr(view, "__self__", None)
    if isinstance(owner, path_view_class):
        return owner
    for cell in getattr(view, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(value, path_view_class):
            return value
    return None


def _find_ninja_api(patterns: Iterable[Any], prefix: str) -> tuple[Any, str] | None:
    for pattern in patterns:
        route = _join_route(prefix, str(pattern.pattern))
        if isinstance(pattern, URLResolver):
            found = _find_ninja_api(pattern.url_patterns, route)
            if found is not None:
                return found
        elif isinstance(pattern, URLPattern):
            api = _ninja_api_of(pattern.callback)
            if api is not None and pattern.name == "api-root":  # route: the API's prefix
                return api, "/" + route
    return None
