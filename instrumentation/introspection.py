"""What the app says about itself once at start-up: endpoints, OpenAPI, versions, identity.

The event travels as one OpenTelemetry log record (``event_name`` ``tallyhub.startup``, also in
the ``event.name`` attribute) on the same resource as the metrics, its body a JSON document:

    {"endpoints": [{"method": "GET", "route": "/items/{item_id}",
                    "summary": "Read an item", "description": "..."}],
     "openapi": "<the OpenAPI document as a JSON string>" or null,
     "versions": {"python": "3.11.7", "tallyhub": "0.1.0", "framework": "fastapi 0.165.0",
                  "server": "uvicorn 0.54.0", "app": "1.4.2"},
     "host": "web-1", "pid": 4242}

This module builds that document; each framework's adapter (``flask.py``, ``django.py``, ...) lists
the endpoints; the hub stores it in the ``endpoints`` and ``instances`` tables.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

from opentelemetry.sdk.resources import Resource

from tallyhub import __version__


@dataclass(frozen=True)
class Endpoint:
    method: str
    route: str
    summary: str | None = None
    description: str | None = None


SERVERS = ("uvicorn", "hypercorn", "granian", "daphne", "gunicorn", "waitress", "werkzeug")


def running_server() -> str | None:
    """The first web server found loaded in this process, with its version."""
    for name in SERVERS:
        if name in sys.modules:
            return package_version(name)
    return None


def package_version(distribution: str) -> str:
    """``name version`` of an installed distribution (the name alone if it has no metadata)."""
    try:
        return f"{distribution} {metadata.version(distribution)}"
    except metadata.PackageNotFoundError:
        return distribution


def startup_document(
    endpoints: list[Endpoint],
    openapi: dict[str, Any] | None,
    framework: str | None,
    resource: Resource | None = None,
) -> str:
    """The JSON body of the start-up event; the app's version is the resource's ``service.version``."""
    versions = {"python": platform.python_version(), "tallyhub": __version__}
    app_version = resource.attributes.get("service.version") if resource is not None else None
    for key, value in (("framework", framework), ("server", running_server()), ("app", app_version)):
        if value:
            versions[key] = str(value)
    return json.dumps(
        {
            "endpoints": [asdict(e) for e in endpoints],
            "openapi": json.dumps(openapi) if openapi is not None else None,
            "versions": versions,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
    )


def docstring_parts(func: Any) -> tuple[str | None, str | None]:
    """(summary, description) from a view's docstring: its first line, and the rest."""
    doc = (getattr(func, "__doc__", None) or "").strip()
    if not doc:
        return None, None
    first, _, rest = doc.partition("\n")
    return first.strip(), (rest.strip() or None)
