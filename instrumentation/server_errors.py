"""Unhandled exceptions as tallyhub records them: type, message, stack trace, fingerprint.

Pure functions of the exception; nothing here touches the exception's propagation.
"""

from __future__ import annotations

import hashlib
import linecache
import os
import traceback
from types import TracebackType
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
        frames = _frames(exc.__traceback__)
        stacktrace = clip_stacktrace(format_chain(exc, frames))
    except Exception:
        frames = []
        stacktrace = f"{name}: {message[:MAX_MESSAGE]}\n"
    return ServerError(name, message[:MAX_MESSAGE], stacktrace, fingerprint(name, frames))


Frame = tuple[str, int, str, str]  # file name, line number, function, source line


def _frames(tb: TracebackType | None) -> list[Frame]:
    """The frames of a traceback, outermost first, read the cheap way: the standard library's
    ``extract_tb`` stats every file (``linecache.checkcache``) and costs ~200 µs for 25 frames."""
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        lineno = tb.tb_lineno or 0
        line = linecache.getline(code.co_filename, lineno, tb.tb_frame.f_globals)
        frames.append((code.co_filename, lineno, code.co_name, line.strip()))
        tb = tb.tb_next
    return frames


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def format_chain(exc: BaseException, frames: list[Frame] | None = None) -> str:
    """The stack trace as Python prints it (chained exceptions first), without the column
    carets: those make the standard library parse every source line again. ``frames``: those
    of ``exc`` if already read."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    link = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append((current, link))
        if current.__cause__ is not None:
            current, link = current.__cause__, _CAUSE
        elif current.__context__ is not None and not current.__suppress_context__:
            current, link = current.__context__, _CONTEXT
        else:
            current = None
    parts = []
    for current, link in reversed(chain):
        current_frames = frames if current is exc and frames is not None else _frames(current.__traceback__)
        if current_frames:
            parts.append("Traceback (most recent call last):\n")
            for filename, lineno, function, line in current_frames:
                parts.append(f'  File "{filename}", line {lineno}, in {function}\n')
                if line:
                    parts.append(f"    {line}\n")
        parts.extend(traceback.format_exception_only(current))
        parts.append(link)
    return "".join(parts)


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


def fingerprint(type_name: str, frames: list[Frame]) -> str:
    """16 hex digits identifying where an exception was raised: its type and, per frame, the
    file's base name, the function and the source line (not line numbers, which shift with every
    edit, nor directories, which differ between hosts and virtualenvs)."""
    text = "\n".join(f"{filename.rpartition(os.sep)[2]}:{function}:{line}" for filename, _, function, line in frames)
    return hashlib.sha256(f"{type_name}\n{text}".encode()).hexdigest()[:16]
