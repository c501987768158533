"""What is recorded of an unhandled exception: type, message, stack trace, fingerprint."""

from __future__ import annotations

import json
import linecache
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tallyhub.instrumentation import server_errors
from tallyhub.instrumentation.server_errors import (
    MAX_MESSAGE,
    MAX_STACKTRACE,
    clip_stacktrace,
    describe_exception,
)
from tallyhub.wire import SERVER_ERRORS

from .conftest import capturing_client, error_counts, request_counts

HEX16 = re.compile(r"[0-9a-f]{16}")


class Outer:
    class Inner(Exception):
        pass


class Unprintable(Exception):
    def __str__(self) -> str:
        raise ZeroDivisionError("no text for this one")


class ConfigMissing(Exception):
    pass


class ReachedTheBottom(Exception):
    pass


def caught(func: Callable[..., Any], *args: Any) -> Exception:
    """The exception ``func(*args)`` raises, caught here: the outermost frame is always this one."""
    try:
        func(*args)
    except Exception as exc:
        return exc
    raise AssertionError(f"{func.__name__} did not raise")


def raise_at(site: str, n: int = 0) -> None:
    if site == "lookup":
        raise KeyError(f"item {n}")
    if site == "other":
        raise KeyError(f"item {n} (elsewhere)")
    raise ValueError(site)


# Type and message.


def test_builtin_types_are_unqualified() -> None:
    assert describe_exception(caught(raise_at, "lookup", 3))[:2] == ("KeyError", "'item 3'")
    assert describe_exception(caught(int, "x")).type == "ValueError"


def test_other_types_carry_their_module_and_qualified_name() -> None:
    def fail() -> None:
        raise Outer.Inner("deep inside")

    error = describe_exception(caught(fail))
    assert error.type == f"{__name__}.Outer.Inner"
    assert error.type == "tests.instrumentation.test_server_errors.Outer.Inner"
    assert error.message == "deep inside"
    assert describe_exception(caught(json.loads, "{")).type == "json.decoder.JSONDecodeError"


def test_message_is_cut_at_2048_characters() -> None:
    def fail() -> None:
        raise ValueError("é" * 2000 + "x" * 5000)

    error = describe_exception(caught(fail))
    assert MAX_MESSAGE == 2048
    assert error.message == "é" * 2000 + "x" * 48
    assert error.stacktrace.endswith("ValueError: " + "é" * 2000 + "x" * 5000 + "\n")  # the trace as Python prints it


def test_a_failing_str_gives_a_placeholder_message() -> None:
    def fail() -> None:
        raise Unprintable()

    error = describe_exception(caught(fail))
    assert error.type == f"{__name__}.Unprintable"
    assert error.message == "<str() of the exception raised ZeroDivisionError>"
    assert error.stacktrace.endswith(f"{__name__}.Unprintable: <exception str() failed>\n")
    assert "in fail" in error.stacktrace
    assert HEX16.fullmatch(error.fingerprint)


def test_an_exception_that_was_never_raised() -> None:
    error = describe_exception(ValueError("made, not raised"))
    assert error.stacktrace == "ValueError: made, not raised\n"
    assert HEX16.fullmatch(error.fingerprint)
    assert describe_exception(ValueError("other text")).fingerprint == error.fingerprint  # the type alone
    assert describe_exception(KeyError("made")).fingerprint != error.fingerprint


# Stack trace.


def python_trace(exc: BaseException) -> str:
    """The trace as Python prints it, without the lines of column markers (``^^^^``)."""
    lines = "".join(traceback.format_exception(exc)).splitlines(keepends=True)
    return "".join(line for line in lines if line.strip(" ^~\n"))


def test_stacktrace_is_pythons_with_the_innermost_frame_last() -> None:
    def load_settings(path: str) -> None:
        raise ConfigMissing(f"no settings at {path}")

    exc = caught(load_settings, "/etc/shop.toml")
    error = describe_exception(exc)
    assert error.stacktrace == python_trace(exc)
    assert error.stacktrace.startswith("Traceback (most recent call last):\n")
    assert 'in load_settings\n    raise ConfigMissing(f"no settings at {path}")\n' in error.stacktrace
    assert error.stacktrace.endswith(f"{__name__}.ConfigMissing: no settings at /etc/shop.toml\n")


def test_chained_exceptions_appear_in_the_trace() -> None:
    def implicit() -> None:
        try:
            {}["database_url"]
        except KeyError:
            raise ConfigMissing("database not configured")  # noqa: B904 - the implicit chain is the point

    def explicit() -> None:
        try:
            int("eleven")
        except ValueError as exc:
            raise ConfigMissing("bad port") from exc

    first = describe_exception(caught(implicit))
    assert first.type == f"{__name__}.ConfigMissing"
    assert first.message == "database not configured"
    trace = first.stacktrace
    assert trace.index("KeyError: 'database_url'") < trace.index(
        "During handling of the above exception, another exception occurred:"
    )
    assert trace.endswith(f"{__name__}.ConfigMissing: database not configured\n")
    second = describe_exception(caught(explicit)).stacktrace
    assert "ValueError: invalid literal for int() with base 10: 'eleven'" in second
    assert "The above exception was the direct cause of the following exception:" in second
    assert second.endswith(f"{__name__}.ConfigMissing: bad port\n")


def down_a(n: int) -> None:
    if n == 0:
        raise ReachedTheBottom("at depth 3000")
    down_b(n - 1)


def down_b(n: int) -> None:
    down_a(n - 1)  # two functions in turn: Python does not fold the frames ("repeated N times")


def test_a_trace_longer_than_64_kb_keeps_its_first_line_and_innermost_frames() -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 4000)
    try:
        exc = caught(down_a, 3000)
    finally:
        sys.setrecursionlimit(limit)
    full = python_trace(exc)
    assert len(full) > 4 * MAX_STACKTRACE  # really too long
    trace = describe_exception(exc).stacktrace
    assert MAX_STACKTRACE - 200 < len(trace) <= MAX_STACKTRACE == 65536
    head, cut, rest = trace.split("\n", 2)
    assert head == "Traceback (most recent call last):"
    assert "outer frames cut" in cut
    assert full.endswith(rest)  # the end of the real trace, from a line start
    assert rest.endswith(
        f'in down_a\n    raise ReachedTheBottom("at depth 3000")\n{__name__}.ReachedTheBottom: at depth 3000\n'
    )
    assert "in caught" not in trace  # the outermost frame went


def test_clip_stacktrace() -> None:
    text = "Traceback (most recent call last):\n" + "".join(f"  line {i:03}\n" for i in range(100)) + "Error: x\n"
    assert clip_stacktrace(text, limit=len(text)) == text
    clipped = clip_stacktrace(text, limit=len(text) - 1)
    assert len(clipped) <= len(text) - 1
    assert clipped.startswith("Traceback (most recent call last):\n  [... outer frames cut")
    assert clipped.endswith("  line 099\nError: x\n")
    assert text.endswith(clipped.split("\n", 2)[2])  # whole lines of the end


# Fingerprint.


def fingerprint(func: Callable[..., Any], *args: Any) -> str:
    return describe_exception(caught(func, *args)).fingerprint


def test_fingerprint_is_the_raise_site_not_the_message() -> None:
    lookups = [fingerprint(raise_at, "lookup", n) for n in range(3)]
    assert HEX16.fullmatch(lookups[0])
    assert lookups == [lookups[0]] * 3  # the same site, other messages
    assert fingerprint(raise_at, "other") != lookups[0]  # another raise statement
    assert fingerprint(raise_at, "value") not in (lookups[0], fingerprint(raise_at, "other"))


def test_fingerprint_depends_on_the_calling_frames() -> None:
    def via_checkout() -> None:
        raise_at("lookup")

    def via_refund() -> None:
        raise_at("lookup")

    assert fingerprint(via_checkout) == fingerprint(via_checkout)
    assert fingerprint(via_checkout) != fingerprint(via_refund)


SOURCE = """\
def handler(order_id):
    total = compute(order_id)
    return total


def compute(order_id):
    raise LookupError(f"order {order_id} has no lines")
"""


def run_module(path: Path, source: str, order_id: int) -> tuple[str, str]:
    """(fingerprint, stack trace) of ``handler`` failing in a module written to ``path``."""
    path.write_text(source)
    linecache.checkcache(str(path))  # as a new process would: the source lines of this version
    namespace: dict[str, Any] = {}
    exec(compile(source, str(path), "exec"), namespace)
    error = describe_exception(caught(namespace["handler"], order_id))
    return error.fingerprint, error.stacktrace


def test_fingerprint_survives_edits_that_move_the_code(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    original, trace = run_module(tmp_path / "v1" / "orders.py", SOURCE, 1)
    assert 'line 7, in compute\n    raise LookupError(f"order {order_id} has no lines")' in trace
    moved, trace = run_module(tmp_path / "v1" / "orders.py", "\n" * 40 + SOURCE, 2)  # same file, new lines
    assert 'line 47, in compute\n    raise LookupError(f"order {order_id} has no lines")' in trace
    assert moved == original
    elsewhere, _ = run_module(tmp_path / "v2" / "orders.py", SOURCE, 3)  # another directory (host, venv)
    assert elsewhere == original
    renamed, _ = run_module(tmp_path / "v2" / "billing.py", SOURCE, 4)
    assert renamed != original
    edited, _ = run_module(tmp_path / "v1" / "orders.py", SOURCE.replace("has no lines", "is empty"), 5)
    assert edited != original  # the raise statement itself changed


# Recorded by the client.


def test_only_exceptions_of_5xx_responses_are_recorded() -> None:
    client = capturing_client()
    kaput = caught(raise_at, "kaput")
    client.record_request("GET", "/a", 500, 0.0, 0.01, 0, 0, exception=kaput)
    client.record_request("GET", "/a", 503, 0.0, 0.01, 0, 0, exception=kaput)
    client.record_request("GET", "/a", 404, 0.0, 0.01, 0, 0, exception=caught(raise_at, "lookup"))  # Http404-like
    client.record_request("GET", "/a", 500, 0.0, 0.01, 0, 0, exception=KeyboardInterrupt())  # not an Exception
    client.record_request("GET", "/a", 500, 0.0, 0.01, 0, 0)
    client.shutdown()  # the last export
    data = client.metrics_out.batches
    assert request_counts(*data) == {("GET", "/a", 500): 3, ("GET", "/a", 503): 1, ("GET", "/a", 404): 1}
    error = describe_exception(kaput)
    assert error_counts(SERVER_ERRORS, *data) == {
        tuple(
            sorted(
                {
                    "http.request.method": "GET",
                    "http.route": "/a",
                    "exception.type": "ValueError",
                    "exception.message": "kaput",
                    "tallyhub.error.fingerprint": error.fingerprint,
                    "exception.stacktrace": error.stacktrace,
                }.items()
            )
        ): 2
    }


@pytest.mark.parametrize("status", [200, 400, 499])
def test_no_server_error_below_500(status: int) -> None:
    client = capturing_client()
    client.record_request("POST", "/b", status, 0.0, 0.01, 0, 0, exception=caught(raise_at, "x"))
    client.shutdown()
    assert request_counts(*client.metrics_out.batches) == {("POST", "/b", status): 1}
    assert error_counts(SERVER_ERRORS, *client.metrics_out.batches) == {}


def test_an_error_raised_again_at_the_same_place_is_described_as_the_first_time() -> None:
    """The description of a place is kept (the traceback is not read again): the message and the
    last line are each exception's own, the rest is the same as a fresh description."""
    server_errors._described.clear()
    first = describe_exception(caught(raise_at, "lookup", 1))
    again = describe_exception(caught(raise_at, "lookup", 2))
    assert again.message == "'item 2'" and again.stacktrace.endswith("KeyError: 'item 2'\n")
    assert again.fingerprint == first.fingerprint and again.type == first.type == "KeyError"
    assert again.stacktrace == first.stacktrace.replace("'item 1'", "'item 2'")
    server_errors._described.clear()
    assert describe_exception(caught(raise_at, "lookup", 2)) == again  # as described from scratch
    elsewhere = describe_exception(caught(raise_at, "other", 2))
    assert elsewhere.fingerprint != first.fingerprint  # another line: another place


@pytest.mark.parametrize(
    "exc",
    [
        KeyError("sku"),
        ValueError(""),
        RuntimeError("two\nlines"),
        SyntaxError("bad", ("f.py", 1, 2, "x y")),
        OSError(2, "gone"),
    ],
    ids=["key", "empty", "multiline", "syntax", "oserror"],
)
def test_the_last_line_is_pythons_own(exc: BaseException) -> None:
    noted = ValueError("with a note")
    noted.add_note("see the docs")
    for error in (exc, noted):
        assert server_errors._last_line(error, str(error)) == "".join(traceback.format_exception_only(error))


def test_the_same_error_again_is_the_same_description_and_a_note_still_shows() -> None:
    """The description of the last error at a place is reused when the next one there has the same
    message; one with a note, or another message, gets its own last line."""
    server_errors._described.clear()
    first = describe_exception(caught(raise_at, "lookup", 1))
    assert describe_exception(caught(raise_at, "lookup", 1)) is first
    noted = caught(raise_at, "lookup", 1)
    noted.add_note("retry later")
    with_note = describe_exception(noted)
    assert with_note.stacktrace.endswith("KeyError: 'item 1'\nretry later\n")
    assert with_note.fingerprint == first.fingerprint
    assert describe_exception(caught(raise_at, "lookup", 1)) is first
    assert describe_exception(caught(raise_at, "lookup", 3)).message == "'item 3'"


def places(place: Callable[[type, Any], object]) -> list[object]:
    """Keys of: the same place twice, another line, another caller, another type, no traceback."""
    exceptions = [
        caught(raise_at, "lookup", 1),
        caught(raise_at, "lookup", 2),
        caught(raise_at, "other", 1),
        caught(lambda: raise_at("lookup", 1)),
        caught(raise_at, "x"),
    ]
    keys = [place(type(exc), exc.__traceback__) for exc in exceptions]
    return [*keys, place(KeyError, None)]


def test_the_compiled_place_keys_agree_with_the_python_twin() -> None:
    compiled = server_errors._compiled_place()
    if compiled is None:
        pytest.skip("the compiled _places module is not built (no C compiler at install)")
    assert server_errors._place is compiled
    python_keys, compiled_keys = places(server_errors._python_place), places(compiled)
    for keys in (python_keys, compiled_keys):
        assert keys[0] == keys[1]  # the same place, another message
        assert len({*keys[1:]}) == 5  # every other one is a place of its own
    same = [[a == b for b in python_keys] for a in python_keys]
    assert same == [[a == b for b in compiled_keys] for a in compiled_keys]
    with pytest.raises(TypeError, match="traceback or None"):
        compiled(KeyError, "not a traceback")


def raise_variant(kind: str) -> None:
    """Raises the exception ``kind`` names: all but the chained ones at the last line."""
    errors: dict[str, BaseException] = {
        "same": KeyError("item 1"),
        "message": KeyError("item 2"),
        "unprintable": Unprintable(),
        "syntax": SyntaxError("bad"),
    }
    error = errors.get(kind, KeyError("item 1"))
    if kind == "noted":
        error.add_note("a note")
    if kind == "empty notes":
        error.__notes__ = []  # type: ignore[attr-defined]
    if kind == "cause":
        raise error from ValueError("the cause")
    if kind == "context":
        try:
            raise ValueError("while handling")
        except ValueError:
            raise error  # noqa: B904  # implicitly chained on purpose
    if kind == "suppressed":
        try:
            raise ValueError("while handling")
        except ValueError:
            raise error from None
    raise error


def test_the_compiled_lookup_answers_as_the_python_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_places.known`` finds the description kept for a place exactly when the Python steps of
    ``describe_exception`` reuse it: the same plain error again, not a chained one, one with notes,
    another message, a syntax error or one whose ``str()`` fails."""
    known = server_errors._compiled_known()
    if known is None:
        pytest.skip("the compiled _places module is not built (no C compiler at install)")
    assert server_errors._known is known

    def attempt(kind: str) -> BaseException:
        try:
            raise_variant(kind)
        except BaseException as exc:  # SyntaxError included
            return exc
        raise AssertionError(kind)

    kinds = ["same", "message", "noted", "empty notes", "cause", "context", "suppressed", "unprintable", "syntax"]
    found, reused = {}, {}
    for kind in kinds:  # each from the same start: "same" described once
        server_errors._described.clear()
        first = describe_exception(attempt("same"))
        found[kind] = known(attempt(kind), server_errors._described)
        assert found[kind] is None or found[kind] is first
        with monkeypatch.context() as python_only:
            python_only.setattr(server_errors, "_known", None)
            reused[kind] = describe_exception(attempt(kind)) is first
    assert {kind for kind in kinds if found[kind] is not None} == {"same", "empty notes"}
    assert reused == {kind: found[kind] is not None for kind in kinds}
    suppressed = describe_exception(attempt("suppressed"))  # its own place; not chained (from None)
    assert known(attempt("suppressed"), server_errors._described) is suppressed
    assert known(attempt("same"), {}) is None  # a place not described yet
    assert known("not an exception", server_errors._described) is None  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a dict"):
        known(attempt("same"), [])  # type: ignore[arg-type]
