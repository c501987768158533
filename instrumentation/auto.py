"""No-code setup: `opentelemetry-instrument uvicorn app:app` (or gunicorn, flask run, manage.py).

The ``opentelemetry-instrument`` launcher loads, through entry points in pyproject.toml:

- ``TallyhubDistro`` (``OTEL_PYTHON_DISTRO=tallyhub``): defaults suited to tallyhub — no traces,
  logs or SDK metrics are exported unless the OTEL_*_EXPORTER variables ask for them — unless
  another distro is installed (``opentelemetry-distro``, a vendor's): then that one's, so that
  traces and logs go where they went before tallyhub was installed; the configurator likewise;
- ``TallyhubConfigurator`` (``OTEL_PYTHON_CONFIGURATOR=tallyhub``): OpenTelemetry's own SDK set-up,
  except that HTTP server metrics recorded through the SDK (``http.server.*``, by OpenTelemetry's
  framework instrumentations or FastAPI's built-in telemetry) are dropped by a view: tallyhub
  measures those requests already, and nothing may be counted twice;
- ``TallyhubInstrumentor`` (the ``tallyhub`` instrumentation, skipped if listed in
  ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``): adds tallyhub's middleware to every Starlette,
  FastAPI, Flask, Django and Litestar app the process creates;
- ``TallyhubMetricExporter`` (``OTEL_METRICS_EXPORTER=tallyhub``): sends the app's other SDK
  metrics to the hub too, with delta temporality.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Collection
from typing import Any, ClassVar

from opentelemetry import metrics
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]  # not in its __all__
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import DropAggregation, ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.util._importlib_metadata import entry_points

from tallyhub.instrumentation.client import TallyhubClient, otlp_endpoint
from tallyhub.wire import APP_KEY_HEADER

logger = logging.getLogger("tallyhub")

DROP_SDK_HTTP_SERVER_METRICS = View(instrument_name="http.server.*", aggregation=DropAggregation())


def another(group: str, chosen_by: str) -> Any | None:
    """Another package's entry point in ``group`` (``opentelemetry-distro``'s, a vendor's), if one is
    installed and the user did not choose tallyhub's (``chosen_by``): the launcher picks one distro
    and one configurator, whichever comes first, and an app that had one before tallyhub must keep
    it: its traces and logs go where they went."""
    if os.environ.get(chosen_by) == "tallyhub":
        return None
    for entry_point in entry_points(group=group):
        if entry_point.name != "tallyhub":
            return entry_point
    return None


class TallyhubDistro(BaseDistro):
    """With another distro installed, that distro's defaults; alone, tallyhub's: no traces, logs or
    SDK metrics are exported unless OTEL_*_EXPORTER asks for them."""

    def _configure(self, **kwargs: Any) -> None:
        other = another("opentelemetry_distro", "OTEL_PYTHON_DISTRO")
        if other is not None:
            other.load()().configure(**kwargs)
            return
        for variable in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER"):
            os.environ.setdefault(variable, "none")


class TallyhubConfigurator(_OTelSDKConfigurator):
    """OpenTelemetry's SDK configuration, with the SDK's HTTP server metrics dropped; with another
    configurator installed, exactly that one's (tallyhub then only adds its middleware and metrics)."""

    def _configure(self, **kwargs: Any) -> None:
        other = another("opentelemetry_configurator", "OTEL_PYTHON_CONFIGURATOR")
        if other is not None:
            other.load()().configure(**kwargs)
            return
        names = [n.strip() for n in os.environ.get("OTEL_METRICS_EXPORTER", "").split(",") if n.strip()]
        readers = [PeriodicExportingMetricReader(_metric_exporter(name)()) for name in names if name != "none"]
        if readers:
            # Installed first: the SDK's set-up below then keeps it (the global is set once).
            metrics.set_meter_provider(
                MeterProvider(metric_readers=readers, resource=Resource.create(), views=[DROP_SDK_HTTP_SERVER_METRICS])
            )
        os.environ["OTEL_METRICS_EXPORTER"] = "none"
        api_logger = logging.getLogger("opentelemetry.metrics._internal")
        level = api_logger.level
        api_logger.setLevel(logging.ERROR)  # its "Overriding of current MeterProvider" is expected here
        try:
            super()._configure(**kwargs)  # traces and logs, as OpenTelemetry's own distro sets them up
        finally:
            api_logger.setLevel(level)
            os.environ["OTEL_METRICS_EXPORTER"] = ",".join(names)


def _metric_exporter(name: str) -> Callable[[], Any]:
    for entry_point in entry_points(group="opentelemetry_metrics_exporter", name=name):
        return entry_point.load()
    raise RuntimeError(f"OTEL_METRICS_EXPORTER names {name!r}, which no installed package provides")


class TallyhubMetricExporter(OTLPMetricExporter):
    """The OTLP gRPC metric exporter aimed at the hub: delta temporality, exponential histograms,
    the endpoint and headers from OTEL_EXPORTER_OTLP_* (or TALLYHUB_APP_KEY for the key)."""

    def __init__(self, **kwargs: Any) -> None:
        key = os.environ.get("TALLYHUB_APP_KEY")
        kwargs.setdefault("endpoint", otlp_endpoint(None, "METRICS"))
        if key:
            kwargs.setdefault("headers", {APP_KEY_HEADER: key})
        delta = AggregationTemporality.DELTA
        kwargs.setdefault(
            "preferred_temporality",
            {
                Counter: delta,
                Histogram: delta,
                ObservableCounter: delta,
                UpDownCounter: AggregationTemporality.CUMULATIVE,
                ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
            },
        )
        kwargs.setdefault("preferred_aggregation", {Histogram: ExponentialBucketHistogramAggregation()})
        super().__init__(**kwargs)


class TallyhubInstrumentor(BaseInstrumentor):
    """Adds tallyhub's middleware to each web app created once ``instrument()`` ran."""

    _patches: ClassVar[list[tuple[Any, str, Any]]] = []

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()  # whichever of the frameworks are installed

    def _instrument(self, **kwargs: Any) -> None:
        client = kwargs.get("client") or shared_client()
        for patch in (_patch_starlette, _patch_flask, _patch_django, _patch_litestar):
            try:
                patch(self, client)
            except ImportError:
                continue  # that framework is not installed

    def _uninstrument(self, **kwargs: Any) -> None:
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)
        self._patches.clear()

    def _wrap(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        self._patches.append((owner, name, original))
        setattr(owner, name, functools.wraps(original)(make(original)))


@functools.cache
def shared_client() -> TallyhubClient:
    """The process's one client for the launcher, configured by OTEL_* variables (and
    TALLYHUB_APP_KEY, if OTEL_EXPORTER_OTLP_HEADERS does not carry the key)."""
    return TallyhubClient(app_key=os.environ.get("TALLYHUB_APP_KEY"))


def _patch_starlette(instrumentor: TallyhubInstrumentor, client: TallyhubClient) -> None:
    from starlette.applications import Starlette

    from tallyhub.instrumentation.starlette import TallyhubMiddleware

    def make(original: Callable[..., None]) -> Callable[..., None]:
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            if not any(m.cls is TallyhubMiddleware for m in self.user_middleware):  # FastAPI's calls Starlette's
                self.add_middleware(TallyhubMiddleware, client=client)

        return __init__

    classes: list[type] = [Starlette]
    try:
        from fastapi import FastAPI

        classes.append(FastAPI)  # it has an __init__ of its own
    except ImportError:
        pass
    for cls in classes:
        instrumentor._wrap(cls, "__init__", make)


def _patch_flask(instrumentor: TallyhubInstrumentor, client: TallyhubClient) -> None:
    from flask import Flask

    from tallyhub.instrumentation.flask import TallyhubMiddleware

    def make(original: Callable[..., None]) -> Callable[..., None]:
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            TallyhubMiddleware(self, client=client)

        return __init__

    instrumentor._wrap(Flask, "__init__", make)


def _patch_django(instrumentor: TallyhubInstrumentor, client: TallyhubClient) -> None:
    from django.conf import settings
    from django.core.handlers.base import BaseHandler

    from tallyhub.instrumentation import django as tallyhub_django

    path = f"{tallyhub_django.__name__}.{tallyhub_django.TallyhubMiddleware.__name__}"
    tallyhub_django.set_client(client)

    def make(original: Callable[..., None]) -> Callable[..., None]:
        def load_middleware(self: Any, *args: Any, **kwargs: Any) -> None:
            middleware = list(settings.MIDDLEWARE)
            if path not in middleware:
                settings.MIDDLEWARE = [path, *middleware]  # first: it measures what the others do
            original(self, *args, **kwargs)

        return load_middleware

    instrumentor._wrap(BaseHandler, "load_middleware", make)


def _patch_litestar(instrumentor: TallyhubInstrumentor, client: TallyhubClient) -> None:
    from litestar import Litestar

    from tallyhub.instrumentation.litestar import TallyhubPlugin

    def make(original: Callable[..., None]) -> Callable[..., None]:
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs["plugins"] = [*(kwargs.get("plugins") or ()), TallyhubPlugin(client=client)]
            original(self, *args, **kwargs)

        return __init__

    instrumentor._wrap(Litestar, "__init__", make)
