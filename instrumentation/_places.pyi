"""The compiled place key (_places.c): what it offers Python."""

from types import TracebackType

def place(cls: type, tb: TracebackType | None, /) -> bytes: ...
