"""Unhandled exceptions as tallyhub records them: type, message, stack trace, fingerprint.

Pure functions of the exception; nothing here touches the exception's propagation.
"""

from __future__ import annotations

import hashlib
import os
import traceback
from typing import NamedTuple

MAX_MESSAGE = 2048
"""Characters of the exception's message that are kept."""
MAX_STACKTRACE = 65536
"""Characters of the formatted stack trace that are kept: the innermost frames (its end)."""
EXCEPTION_KEY = "tallyhub.exception"
"""Where a framework hook leaves the unhandled exception of a request that the framework turned
into a 500 response itself (a key of the ASGI scope or WSGI environ, or of Django's ``META``)."""

_CUT = "  [... outer frames cut: the stack trace was longer than 64 KB ...]\n"


class ServerError(NamedTuple):
    type: str
    message: str
    stacktrace: str
    fingerprint: str


def describe_exception(exc: BaseException) -> ServerError:
    """What is recorded of an exception. Never raises: a ``__str__`` that fails gives a message
    saying so, and a traceback that cannot be formatted gives the type alone."""
    cls = type(exc)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    try:
        message = str(exc)
    except Exception as failed:
        message = f"<str() of the exception raised {type(failed).__name__}>"
    try:
        frames = traceback.extract_tb(exc.__traceback__)
        stacktrace = clip_stacktrace("".join(traceback.format_exception(exc)))
    except Exception:
        frames = traceback.StackSummary()
        stacktrace = f"{name}: {message[:MAX_MESSAGE]}\n"
    return ServerError(name, message[:MAX_MESSAGE], stacktrace, fingerprint(name, frames))


def clip_stacktrace(text: str, limit: int = MAX_STACKTRACE) -> str:
    """``text`` if it fits, else its first line and as much of its end as fits, cut at a line
    start: the innermost frames and the exception line are what tell where it failed."""
    if len(text) <= limit:
        return text
    head = text.split("\n", 1)[0] + "\n"
    tail = text[len(text) - (limit - len(head) - len(_CUT)) :]
    newline = tail.find("\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1 :]
    return head + _CUT + tail


def fingerprint(type_name: str, frames: traceback.StackSummary) -> str:
    """16 hex digits identifying where an exception was raised: its type and, per frame, the
    file's base name, the function and the source line (not line numbers, which shift with every
    edit, nor directories, which differ between hosts and virtualenvs)."""
    digest = hashlib.sha256(type_name.encode())
    for frame in frames:
        digest.update(f"\n{os.path.basename(frame.filename)}:{frame.name}:{(frame.line or '').strip()}".encode())
    return digest.hexdigest()[:16]
