"""Per-minute request aggregates, kept cheap on the request path and handed out as OTLP metrics.

The request path only appends its measurements to a queue (no OpenTelemetry instrument is called
per request: three SDK histogram calls with attributes cost ~25 µs here). The export thread folds
the queue into per-series histograms every ``FOLD_INTERVAL_S`` and before each collection: done
there, in one tight loop, a request costs ~2 µs of CPU instead of the ~10 µs the same work took
between the framework's own code on the request path (its objects no longer in the CPU's caches).
At collection time the aggregates are turned into the SDK's own ``MetricsData`` with delta
temporality, so that any OpenTelemetry ``MetricExporter`` can send them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from tallyhub.instrumentation.consumers import Consumer
from tallyhub.instrumentation.histogram import ExponentialHistogram as Histogram
from tallyhub.instrumentation.server_errors import ServerError
from tallyhub.instrumentation.validation_errors import ValidationError
from tallyhub.wire import (
    CONSUMER_GROUP,
    CONSUMER_ID,
    CONSUMER_NAME,
    DURATION,
    ERROR_FINGERPRINT,
    ERROR_TYPE,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
    METHOD,
    OVERFLOW,
    REQUEST_SIZE,
    RESPONSE_SIZE,
    ROUTE,
    SERVER_ERRORS,
    STATUS,
    UPTIME,
    VALIDATION_ERRORS,
    VALIDATION_LOCATION,
    VALIDATION_MESSAGE,
    VALIDATION_TYPE,
)

if TYPE_CHECKING:  # the SDK's metric data model: imported when the first collection is made, not by the app
    from opentelemetry.sdk.metrics.export import ExponentialHistogramDataPoint, Metric, MetricsData

logger = logging.getLogger("tallyhub")

KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"})
OTHER_METHOD = "_OTHER"  # semantic conventions: any method not in the list above

_NS_PER_MINUTE = 60_000_000_000

MAX_SERIES = 2000
"""At most this many series per collection interval, as OpenTelemetry's SDK limits each metric
(its default cardinality limit): requests beyond it are counted in one overflow series per
minute, whose only attribute is ``otel.metric.overflow=true`` — counted, never dropped."""
_OVERFLOW_KEY_PARTS = ("", "", 0, "")  # method, route, status, consumer of the overflow series

MAX_CONSUMERS = 1000
"""At most this many distinct consumers per collection interval; requests of further consumers
are counted under the consumer ``(overflow)``, with their route, method and status."""
OVERFLOW_CONSUMER = Consumer("(overflow)")

FOLD_INTERVAL_S = 1.0
"""How often the export thread folds the requests queued since into the aggregates."""
MAX_PENDING = 50_000
"""Requests queued at most (~12 MB): past it, the request that finds the queue full folds it
itself (an export thread starved of CPU for a long while: memory stays bounded)."""
FOLD_SOON = 10_000
"""Requests queued past which the export thread is woken to fold them at once (``backlog``)."""

ValidationErrors = Sequence[ValidationError] | Callable[[], Sequence[ValidationError]]
"""A response's validation errors, or what finds them when the request is folded: a 400/422
body is parsed off the request path."""


MAX_VALIDATION_ERRORS = 1000
"""At most this many distinct validation errors (route, consumer, location, message, type) per
collection interval; further ones are counted in the metric's overflow point."""
MAX_SERVER_ERRORS = 100
"""At most this many distinct server errors (route, consumer, type, message, fingerprint) per
collection interval, each carrying its stack trace (up to 64 KB); further ones are counted in
the metric's overflow point."""

Queued = tuple[
    str, str, int, float, int | str, int | str, float, Consumer | None, ValidationErrors | None, ServerError | None
]
"""A request waiting to be folded: method, route, status, duration (s), request and response sizes,
wall time it finished (s), consumer, validation errors, server error. A size may be the text of the
``Content-Length`` header that declares it (WSGI), read when folded (``header_size``,
``response_body_size``): off the request path."""

NO_BODY = frozenset({204, 304})
"""Statuses whose response has no body, whatever its headers declare (as for HEAD)."""


def header_size(value: int | str) -> int:
    """A size as a ``Content-Length`` header declares it; 0 for a value that is not a length."""
    if type(value) is int:
        return value
    value = value.strip()  # type: ignore[union-attr]
    return int(value) if value.isascii() and value.isdigit() else 0


def response_body_size(method: str, status: int, size: int | str) -> int:
    """A response's body size: as measured (an int), or as its ``Content-Length`` declares it (the
    header's text), then none for HEAD, 1xx, 204 and 304, whatever it declares."""
    if type(size) is int:
        return size
    if method == "HEAD" or status < 200 or status in NO_BODY:
        return 0
    return header_size(size)


SeriesKey = tuple[int, str, str, int, str]  # (minute since epoch, method, route template, status code, consumer)
ErrorKey = tuple[int, str, str, str, str, str, str]
"""(minute, method, route, consumer, then location/message/type of a validation error or
type/message/fingerprint of a server error); all empty but the minute: the overflow point."""


class RequestSeries:
    """The aggregates of one series in one minute."""

    __slots__ = ("duration", "request_size", "response_size")

    def __init__(self) -> None:
        self.duration = Histogram()
        self.request_size = Histogram()
        self.response_size = Histogram()


class RequestAggregator:
    """Collects request measurements between two collections.

    ``record`` runs on the request path: it queues the measurements, taking no lock. ``fold``
    (the export thread, every ``FOLD_INTERVAL_S``) finds each request's series in a dict and
    updates its three histograms, under a lock that is never held around I/O. ``collect``
    folds what is left, swaps the dict out under the lock and converts it outside.
    """

    def __init__(
        self,
        resource: Resource,
        scope: InstrumentationScope,
        clock: Callable[[], int] = time.time_ns,
        max_series: int = MAX_SERIES,
        max_consumers: int = MAX_CONSUMERS,
        max_validation_errors: int = MAX_VALIDATION_ERRORS,
        max_server_errors: int = MAX_SERVER_ERRORS,
    ) -> None:
        self.resource = resource
        self.max_series = max_series
        self.max_consumers = max_consumers
        self.max_validation_errors = max_validation_errors
        self.max_server_errors = max_server_errors
        self._validation_errors: dict[ErrorKey, int] = {}
        self._server_errors: dict[ErrorKey, list[Any]] = {}  # key -> [count, stack trace]
        self._consumers: dict[str, Consumer] = {}
        self._clock = clock
        self.scope = scope
        self._lock = threading.Lock()
        self.pending: deque[Queued] = deque()
        """Requests waiting to be folded, appended by the request path (``record``)."""
        self.backlog = threading.Event()
        """Set when what waits to be folded should be folded now (``FOLD_SOON``)."""
        self._series: dict[SeriesKey, RequestSeries] = {}
        self._last_collect_ns = self._started_ns = self._clock()
        self._process_mark = (time.process_time_ns(), time.monotonic_ns())  # process_metrics.mark()
        self.wall_offset = self._measure_wall_offset()

    def _measure_wall_offset(self) -> float:
        """Wall time minus ``perf_counter``, so that the request path reads one clock, not two;
        measured again at every collection, so the two clocks never drift apart for long."""
        return self._clock() / 1e9 - time.perf_counter()

    def record(
        self,
        method: str,
        route: str,
        status: int,
        duration_s: float,
        request_size: int | str,
        response_size: int | str,
        wall_time_s: float,
        consumer: Consumer | None = None,
        validation_errors: ValidationErrors | None = None,
        server_error: ServerError | None = None,
    ) -> None:
        """Add one request that finished at ``wall_time_s`` (``perf_counter() + wall_offset`` will do),
        with the validation errors its response described and the exception it failed with; a size
        may be a ``Content-Length`` header's text (see ``Queued``).

        Queued, to be folded by ``fold``: a ``deque`` append is atomic, so the request path takes
        no lock, and ``fold`` pops what it folds, so no request is lost or counted twice.
        (``TallyhubClient.record_request`` and the middlewares queue the same way, inline.)"""
        pending = self.pending
        pending.append(
            (method, route, status, duration_s, request_size, response_size, wall_time_s, consumer, validation_errors,
             server_error)
        )  # fmt: skip
        if len(pending) >= FOLD_SOON:
            self.queued_many()

    def queued_many(self) -> None:
        """Past ``FOLD_SOON`` queued requests the export thread is woken to fold them; past
        ``MAX_PENDING`` the request that finds the queue full folds it itself."""
        if len(self.pending) >= MAX_PENDING:
            self.fold()
        else:
            self.backlog.set()

    def fold(self) -> None:
        """Fold the queued requests into the aggregates (the export thread's work)."""
        pending = self.pending
        with self._lock:
            self.backlog.clear()  # before: what is queued from now on wakes it again
            failed: list[Exception] = []
            for _ in range(len(pending)):
                request = pending.popleft()
                try:
                    self._add(request)
                except Exception as exc:  # a value no adapter should pass: that request alone is lost
                    failed.append(exc)
        if failed:
            logger.error(
                "tallyhub: %d requests could not be counted and were left out (first: %r); please report it",
                len(failed),
                failed[0],
            )

    def _add(self, request: Queued) -> None:
        """Under the lock: one request (``record``'s arguments) into its series' histograms and its
        errors' counts."""
        method, route, status, duration_s, request_size, response_size, wall_time_s, consumer, errors, server_error = (
            request
        )
        received = request_size if type(request_size) is int else header_size(request_size)
        sent = response_size if type(response_size) is int else response_body_size(method, status, response_size)
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        consumer_id = ""
        if consumer is not None:
            known = self._consumers.get(consumer.identifier)
            if known is None and len(self._consumers) >= self.max_consumers:
                consumer = OVERFLOW_CONSUMER
            if known != consumer:  # new, or renamed: the latest name and group win
                self._consumers[consumer.identifier] = consumer
            consumer_id = consumer.identifier
        minute = int(wall_time_s // 60)
        key = (minute, method, route, status, consumer_id)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:  # a scanner, or a route template gone wrong
                key = (key[0], *_OVERFLOW_KEY_PARTS)
                series = self._series.get(key)
            if series is None:
                series = self._series[key] = RequestSeries()
        series.duration.record(duration_s)
        series.request_size.record(received)
        series.response_size.record(sent)
        validation_errors = errors() if callable(errors) else errors
        if validation_errors or server_error is not None:
            self._count_errors((minute, method, route, consumer_id), validation_errors, server_error)

    def _count_errors(
        self,
        request: tuple[int, str, str, str],
        validation_errors: Sequence[ValidationError] | None,
        server_error: ServerError | None,
    ) -> None:
        """Under the lock: count a request's errors by (minute, method, route, consumer, error)."""
        counts = self._validation_errors
        for error in validation_errors or ():
            key = _error_key(counts, self.max_validation_errors, (*request, *error))
            counts[key] = counts.get(key, 0) + 1
        if server_error is not None:
            found = self._server_errors
            key = _error_key(found, self.max_server_errors, (*request, *server_error[:2], server_error.fingerprint))
            entry = found.get(key)
            if entry is None:  # the first occurrence's stack trace stands for the others
                found[key] = [1, "" if key[1:] == _NO_ERROR else server_error.stacktrace]
            else:
                entry[0] += 1

    def reinit_after_fork(self) -> None:
        """Forget the parent's requests in a forked child, with a new lock: the old one may have
        been held by a thread of the parent that does not exist here."""
        self._lock = threading.Lock()
        self.pending = deque()
        self.backlog = threading.Event()
        self._series = {}
        self._consumers = {}
        self._validation_errors = {}
        self._server_errors = {}
        self._last_collect_ns = self._started_ns = self._clock()
        self._process_mark = (time.process_time_ns(), time.monotonic_ns())  # the child's own CPU time

    def export(self) -> MetricsData:
        """What each export sends: the requests since the last one (``collect``), or the uptime
        gauge alone when there were none (``heartbeat``), and either way the process's CPU and
        memory gauges (``process_metrics``), measured now, on the export thread."""
        from tallyhub.instrumentation.process_metrics import process_metrics

        metrics = self._request_metrics() or [self._uptime()]
        try:
            process, self._process_mark = process_metrics(self._process_mark, self._clock())
        except Exception:  # the requests, already taken out of the aggregates, go out regardless
            logger.exception("tallyhub: measuring the process's CPU and memory failed; please report it")
            process = []
        return self._metrics_data([*metrics, *process])

    def collect(self) -> MetricsData | None:
        """Everything recorded since the last collection as delta OTLP metrics, or None."""
        metrics = self._request_metrics()
        return self._metrics_data(metrics) if metrics else None

    def _request_metrics(self) -> list[Metric]:
        """``collect``'s metrics; empty when no request was recorded since the last collection."""
        self.fold()
        now_ns = self._clock()
        with self._lock:
            series, self._series = self._series, {}
            consumers, self._consumers = self._consumers, {}
            validation_errors, self._validation_errors = self._validation_errors, {}
            server_errors, self._server_errors = self._server_errors, {}
            since_ns, self._last_collect_ns = self._last_collect_ns, now_ns
        self.wall_offset = self._measure_wall_offset()
        if not series:
            return []

        def interval(minute: int) -> tuple[int, int]:
            # A point covers the part of its minute that falls in this collection interval, so
            # the hub can place every point in exactly one minute.
            start_ns = max(minute * _NS_PER_MINUTE, since_ns)
            return start_ns, max(min((minute + 1) * _NS_PER_MINUTE, now_ns), start_ns + 1)

        points: dict[str, list[ExponentialHistogramDataPoint]] = {
            DURATION: [],
            REQUEST_SIZE: [],
            RESPONSE_SIZE: [],
        }
        for (minute, method, route, status, consumer_id), agg in series.items():
            start_ns, end_ns = interval(minute)
            attributes: dict[str, Any]
            if (method, route, status, consumer_id) == _OVERFLOW_KEY_PARTS:
                attributes = {OVERFLOW: True}
            else:
                attributes = {METHOD: method, ROUTE: route, STATUS: status}
                if status >= 500:
                    attributes[ERROR_TYPE] = str(status)
                if consumer_id:
                    _add_consumer(attributes, consumers.get(consumer_id) or OVERFLOW_CONSUMER)
            points[DURATION].append(_data_point(agg.duration, attributes, start_ns, end_ns))
            points[REQUEST_SIZE].append(_data_point(agg.request_size, attributes, start_ns, end_ns))
            points[RESPONSE_SIZE].append(_data_point(agg.response_size, attributes, start_ns, end_ns))
        metrics = [
            _metric(DURATION, "s", "Duration of HTTP server requests.", points[DURATION]),
            _metric(REQUEST_SIZE, "By", "Size of HTTP server request bodies.", points[REQUEST_SIZE]),
            _metric(RESPONSE_SIZE, "By", "Size of HTTP server response bodies.", points[RESPONSE_SIZE]),
        ]
        if validation_errors:
            described = {k: (n, _error_attributes(k, VALIDATION_ATTRIBUTES)) for k, n in validation_errors.items()}
            metrics.append(_sum(VALIDATION_ERRORS, "Validation errors in client error responses.", described, interval))
        if server_errors:
            described = {}
            for key, (n, stacktrace) in server_errors.items():
                attributes = _error_attributes(key, SERVER_ERROR_ATTRIBUTES)
                if stacktrace:
                    attributes[EXCEPTION_STACKTRACE] = stacktrace
                described[key] = (n, attributes)
            metrics.append(_sum(SERVER_ERRORS, "Unhandled exceptions in requests.", described, interval))
        return metrics

    def heartbeat(self) -> MetricsData:
        """The semantic conventions' ``process.uptime`` gauge alone (seconds since tallyhub began
        measuring in this process): what an interval without requests exports, so that the hub
        knows an idle instance is still up (its uptime and last-seen time come from it)."""
        return self._metrics_data([self._uptime()])

    def _uptime(self) -> Metric:
        from opentelemetry.sdk.metrics.export import Gauge, Metric, NumberDataPoint

        now_ns = self._clock()
        point = NumberDataPoint({}, self._started_ns, now_ns, round((now_ns - self._started_ns) / 1e9, 3))
        return Metric(UPTIME, "The time the process has been running.", "s", Gauge([point]))

    def _metrics_data(self, metrics: list[Metric]) -> MetricsData:
        from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics

        scope_metrics = ScopeMetrics(scope=self.scope, metrics=metrics, schema_url="")
        return MetricsData(resource_metrics=[ResourceMetrics(self.resource, [scope_metrics], schema_url="")])


_NO_ERROR = ("", "", "", "", "", "")
VALIDATION_ATTRIBUTES = (METHOD, ROUTE, CONSUMER_ID, VALIDATION_LOCATION, VALIDATION_MESSAGE, VALIDATION_TYPE)
SERVER_ERROR_ATTRIBUTES = (METHOD, ROUTE, CONSUMER_ID, EXCEPTION_TYPE, EXCEPTION_MESSAGE, ERROR_FINGERPRINT)


def _error_key(found: Mapping[ErrorKey, Any], limit: int, key: ErrorKey) -> ErrorKey:
    """``key``, or the interval's overflow key once ``limit`` distinct keys were counted."""
    if key in found or len(found) < limit:
        return key
    return (key[0], *_NO_ERROR)


def _error_attributes(key: ErrorKey, names: tuple[str, ...]) -> dict[str, Any]:
    if key[1:] == _NO_ERROR:
        return {OVERFLOW: True}
    return {name: value for name, value in zip(names, key[1:], strict=True) if value}


def _sum(
    name: str,
    description: str,
    points: Mapping[ErrorKey, tuple[int, Mapping[str, Any]]],
    interval: Callable[[int], tuple[int, int]],
) -> Metric:
    from opentelemetry.sdk.metrics.export import AggregationTemporality, Metric, NumberDataPoint, Sum

    data_points = [NumberDataPoint(attributes, *interval(key[0]), n) for key, (n, attributes) in points.items()]
    return Metric(
        name=name,
        description=description,
        unit="{error}",
        data=Sum(data_points=data_points, aggregation_temporality=AggregationTemporality.DELTA, is_monotonic=True),
    )


def _add_consumer(attributes: dict[str, Any], consumer: Consumer) -> None:
    attributes[CONSUMER_ID] = consumer.identifier
    if consumer.name:
        attributes[CONSUMER_NAME] = consumer.name
    if consumer.group:
        attributes[CONSUMER_GROUP] = consumer.group


def _data_point(
    hist: Histogram, attributes: Mapping[str, Any], start_ns: int, end_ns: int
) -> ExponentialHistogramDataPoint:
    from opentelemetry.sdk.metrics.export import Buckets, ExponentialHistogramDataPoint

    offset, counts = hist.dense_counts()
    return ExponentialHistogramDataPoint(
        attributes=attributes,
        start_time_unix_nano=start_ns,
        time_unix_nano=end_ns,
        count=hist.count,
        sum=hist.sum,
        scale=hist.scale,
        zero_count=hist.zero_count,
        positive=Buckets(offset=offset, bucket_counts=counts),
        negative=Buckets(offset=0, bucket_counts=[]),
        flags=0,
        min=hist.min,
        max=hist.max,
    )


def _metric(name: str, unit: str, description: str, points: list[ExponentialHistogramDataPoint]) -> Metric:
    from opentelemetry.sdk.metrics.export import AggregationTemporality, ExponentialHistogram, Metric

    return Metric(
        name=name,
        description=description,
        unit=unit,
        data=ExponentialHistogram(data_points=points, aggregation_temporality=AggregationTemporality.DELTA),
    )
