"""`tallyhub demo`: a hub, a small instrumented bookshop API and traffic against it, in one command.

The bookshop needs FastAPI, uvicorn and httpx (the ``demo`` extra), which the hub does not: the
command line checks for them with ``missing_packages`` before it imports ``tallyhub.demo.runner``.
"""

from __future__ import annotations

import importlib.util

REQUIRED = ("fastapi", "uvicorn", "httpx")


def missing_packages() -> list[str]:
    """The packages of the ``demo`` extra that are not installed."""
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]
