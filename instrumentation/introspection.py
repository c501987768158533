"""What the app says about itself once at start-up: endpoints, OpenAPI, versions, identity.

The event travels as one OpenTelemetry log record (``event_name`` ``tallyhub.startup``, also in
the ``event.name`` attribute) on the same resource as the metrics, its body a JSON document:

    {"endpoints": [{"method": "GET", "route": "/items/{item_id}",
                    "summary": "Read an item", "description": "..."}],
     "openapi": "<the OpenAPI document as a JSON string>" or null,
     "versions": {"python": "3.11.7", "tallyhub": "0.1.0", "framework": "fastapi 0.165.0",
                  "server": "uvicorn 0.54.0", "app": "1.4.2"},
     "host": "web-1", "pid": 4242}

This module builds that document; ``frameworks/*`` list the endpoints; the hub stores it in
the ``endpoints`` and ``instances`` tables.
"""

from __future__ import annotations

import json
import os
import platform
import socket
from dataclasses import asdict, dataclass
from typing import Any

from tallyhub import __version__

STARTUP_EVENT = "tallyhub.startup"


@dataclass(frozen=True)
class Endpoint:
    method: str
    route: str
    summary: str | None = None
    description: str | None = None


def startup_document(
    endpoints: list[Endpoint],
    openapi: dict[str, Any] | None,
    framework: str | None,
    server: str | None = None,
    app_version: str | None = None,
) -> str:
    """The JSON body of the start-up event."""
    versions = {"python": platform.python_version(), "tallyhub": __version__}
    for key, value in (("framework", framework), ("server", server), ("app", app_version)):
        if value:
            versions[key] = value
    return json.dumps(
        {
            "endpoints": [asdict(e) for e in endpoints],
            "openapi": json.dumps(openapi) if openapi is not None else None,
            "versions": versions,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
    )
