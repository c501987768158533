"""The compiled place key (_places.c): what it offers Python."""

from types import TracebackType
from typing import Any

def place(cls: type, tb: TracebackType | None, /) -> bytes: ...
def known(exc: BaseException, described: dict[object, Any], /) -> Any: ...
