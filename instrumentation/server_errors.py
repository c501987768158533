"""Unhandled exceptions as tallyhub records them: type, message, stack trace, fingerprint.

Pure functions of the exception; nothing here touches the exception's propagation.
"""

from __future__ import annotations

import hashlib
import linecache
import os
import traceback
from collections.abc import Callable
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


MAX_CACHED = 256
"""Distinct places of raising whose description is kept (``describe_exception``)."""


class _Described:
    """What is kept of a place of raising: an error that happens again there is described again
    for ~2 µs instead of ~20 (a 16-frame traceback): only its message and last line are new, and
    not even those when the message is the last one seen there."""

    __slots__ = ("codes", "fingerprint", "last", "message", "name", "stack")

    def __init__(self, name: str, stack: str, fingerprint: str, codes: tuple[object, ...]) -> None:
        self.name = name
        self.stack = stack  # the frames, without the last line
        self.fingerprint = fingerprint
        self.codes = codes  # the place's code objects: no id in its key is reused while it is kept
        self.message: str | None = None
        self.last: ServerError | None = None  # the description of the last error raised here


_described: dict[object, _Described] = {}


def describe_exception(exc: BaseException) -> ServerError:
    """What is recorded of an exception. Never raises: a ``__str__`` that fails gives a message
    saying so, and a traceback that cannot be formatted gives the type alone."""
    if _known is not None:  # compiled: the error last described at its place, found in one call
        try:
            found = _known(exc, _described)
        except Exception:  # never into the request: whatever failed, the long way below
            found = None
        if found is not None:
            return found
    cls = type(exc)
    printable = True
    try:
        message = str(exc)
    except Exception as failed:
        message, printable = f"<str() of the exception raised {type(failed).__name__}>", False
    try:
        chained = exc.__cause__ is not None or (exc.__context__ is not None and not exc.__suppress_context__)
        key = None if chained else _place(cls, exc.__traceback__)
        known = _described.get(key) if key is not None else None
        plain = printable and not exc.__dict__.get("__notes__") and not isinstance(exc, SyntaxError)
        if known is not None and known.message == message and plain and known.last is not None:
            return known.last  # the same error, at the same place, with the same message
        if known is None:
            name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
            frames = _frames(exc.__traceback__)
            stack = format_chain(exc, frames, last_line=False)
            known = _Described(name, stack, fingerprint(name, frames), _codes(cls, exc.__traceback__))
            if key is not None:
                if len(_described) >= MAX_CACHED:
                    _described.clear()
                _described[key] = known
        stacktrace = clip_stacktrace(known.stack + _last_line(exc, message if printable else None))
        described = ServerError(known.name, message[:MAX_MESSAGE], stacktrace, known.fingerprint)
        if plain:  # its last line says no more than its message and type (no notes, not a syntax error)
            known.message, known.last = message, described
        return described
    except Exception:
        name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
        return ServerError(name, message[:MAX_MESSAGE], f"{name}: {message[:MAX_MESSAGE]}\n", fingerprint(name, []))


def _last_line(exc: BaseException, message: str | None) -> str:
    """``Type: message``, as ``traceback.format_exception_only`` writes it (a quarter of its cost);
    it itself for what it words otherwise (syntax errors, notes, a ``str()`` that failed: None)."""
    cls = type(exc)
    if message is None or issubclass(cls, SyntaxError) or getattr(exc, "__notes__", None):
        return "".join(traceback.format_exception_only(exc))
    module = cls.__module__
    name = cls.__qualname__ if module in ("__main__", "builtins") else f"{module}.{cls.__qualname__}"
    return f"{name}: {message}\n" if message else f"{name}\n"


def _python_place(cls: type, tb: TracebackType | None) -> tuple[int, ...]:
    """Where an exception was raised: its type and each frame's code object and instruction, by
    identity (a code object's hash reads all of it, and ``tb_lineno`` decodes the line table: both
    cost more than the description they are meant to save). The description kept for a place
    holds its code objects (``_codes``), so no id of a place is reused while it is kept. The
    compiled ``_places.place`` (_places.c) gives the same keys as bytes, ten times faster."""
    place = [id(cls)]
    while tb is not None:
        place.append(id(tb.tb_frame.f_code))
        place.append(tb.tb_lasti)
        tb = tb.tb_next
    return tuple(place)


def _compiled_place() -> Callable[[type, TracebackType | None], object] | None:
    try:
        from tallyhub.instrumentation._places import place
    except ImportError:  # not built (no C compiler at install): the Python twin does it
        return None
    return place


_place: Callable[[type, TracebackType | None], object] = _compiled_place() or _python_place


def _compiled_known() -> Callable[[BaseException, dict[object, _Described]], ServerError | None] | None:
    """``_places.known``: the first steps of ``describe_exception`` below (the error last described
    at its place, if ``exc`` is plainly that error), in C; 0.4-1 µs less a 500 inside a request."""
    if _place is _python_place:  # its keys are the compiled place's: without it, no use
        return None
    from tallyhub.instrumentation._places import known

    return known


_known = _compiled_known()


def _codes(cls: type, tb: TracebackType | None) -> tuple[object, ...]:
    codes: list[object] = [cls]
    while tb is not None:
        codes.append(tb.tb_frame.f_code)
        tb = tb.tb_next
    return tuple(codes)


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


def format_chain(exc: BaseException, frames: list[Frame] | None = None, last_line: bool = True) -> str:
    """The stack trace as Python prints it (chained exceptions first), without the column
    carets: those make the standard library parse every source line again. ``frames``: those
    of ``exc`` if already read; ``last_line``: with ``exc``'s own ``Type: message`` line."""
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
        if current is not exc or last_line:
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
