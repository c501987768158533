"""Validation errors read from the error responses of the frameworks that describe them.

Known shapes (the location, message and type of each error are kept, never the invalid input):

- FastAPI, Django Ninja (pydantic), 422: ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``
- Litestar, 400: ``{"detail": ..., "extra": [{"key": ..., "message": ..., "source": ...}]}``
- Django REST Framework, 400: the serializer's errors, read from the response's ``data``
  (``{"field": [ErrorDetail(message, code)], "nested": {...}}``), not from its body.

Pure functions; every way a body can fail to be what it claims gives no errors, not an exception.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

VALIDATION_STATUSES = frozenset({400, 422})
MAX_BODY = 64 * 1024
"""Bytes of a (decompressed) error body that are read; a longer body is skipped, not parsed."""
MAX_ERRORS = 100
"""Errors counted per response (a list of thousands is cut here)."""
MAX_LOCATION = 256
MAX_MESSAGE = 512
MAX_TYPE = 128

logger = logging.getLogger("tallyhub")


class ValidationError(NamedTuple):
    location: str
    message: str
    type: str


def json_encoding(status: int, content_type: str, content_encoding: str) -> str | None:
    """The body's content encoding if the response may hold validation errors worth reading
    (a 400/422 with a JSON body, identity or gzip), else None: nothing is kept of it."""
    if status not in VALIDATION_STATUSES or "json" not in content_type.lower():
        return None
    encoding = content_encoding.strip().lower()
    return encoding if encoding in ("", "identity", "gzip") else None


def response_errors(status: int, content_type: str, content_encoding: str, body: bytes) -> list[ValidationError]:
    """The validation errors of a 400/422 response with these headers and body: none unless it is
    JSON (``json_encoding``). The adapters hand it over unread, as ``functools.partial(response_errors,
    ...)``: the headers are looked at when the request is folded, off the request path."""
    encoding = json_encoding(status, content_type, content_encoding)
    return parse_body(body, encoding) if encoding is not None else []


def parse_body(body: bytes, content_encoding: str = "") -> list[ValidationError]:
    """The validation errors in a 400/422 JSON body (see the module's docstring for the shapes).
    Runs on the export thread, as a request is folded: whatever the body holds, it returns, and
    never raises (an exception there would leave the request out of the counts)."""
    try:
        return _parse(body, content_encoding)
    except Exception:  # a shape no check above foresaw: no errors rather than a failed request
        logger.debug("tallyhub: an error response body could not be read for validation errors", exc_info=True)
        return []


def _parse(body: bytes, content_encoding: str) -> list[ValidationError]:
    if len(body) > MAX_BODY:
        return []
    if content_encoding.strip().lower() == "gzip":
        try:
            decompressor = zlib.decompressobj(wbits=31)
            body = decompressor.decompress(body, MAX_BODY + 1)
        except zlib.error:
            return []
        if len(body) > MAX_BODY:  # a small gzip of a huge body: stop, bounded memory
            return []
        if not decompressor.eof:  # cut short (its checksum never checked): not the body it claims to be
            return []
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested to absurdity
        return []
    if not isinstance(document, dict):
        return []
    detail, extra = document.get("detail"), document.get("extra")
    if isinstance(detail, list):
        return _pydantic(detail)
    if isinstance(extra, list):
        return _litestar(extra)
    return []


def _pydantic(items: list[Any]) -> list[ValidationError]:
    errors = []
    for item in items[:MAX_ERRORS]:
        if isinstance(item, dict) and isinstance(item.get("msg"), str):
            loc = item.get("loc")
            location = ".".join(map(str, loc)) if isinstance(loc, list) else str(loc or "")
            errors.append(_error(location, item["msg"], item.get("type")))
    return errors


def _litestar(items: list[Any]) -> list[ValidationError]:
    errors = []
    for item in items[:MAX_ERRORS]:
        if isinstance(item, dict) and isinstance(item.get("message"), str):
            location = ".".join(str(item[k]) for k in ("source", "key") if item.get(k) not in (None, ""))
            errors.append(_error(location, item["message"], None))
    return errors


_QUOTED = re.compile(r'"[^"]*"')


def drf_errors(data: Any) -> list[ValidationError]:
    """The errors of a Django REST Framework ``ValidationError`` response (its ``data``): one per
    ``ErrorDetail`` leaf, located by its field path (``items.0.name``; ``non_field_errors``).

    DRF's messages put the invalid input between double quotes (``'"x" is not a valid choice.'``):
    quoted parts are replaced by ``"..."``.
    """
    if isinstance(data, Mapping) and list(data) == ["detail"] and hasattr(data["detail"], "code"):
        return []  # an APIException's answer (a ParseError's, say), not a serializer's field errors
    errors: list[ValidationError] = []
    for path, detail in _leaves(data, ()):
        if len(errors) >= MAX_ERRORS:
            break
        code = getattr(detail, "code", None)
        if code is None:  # not an ErrorDetail: not a DRF validation error
            return []
        errors.append(_error(".".join(path), _QUOTED.sub('"..."', str(detail)), code))
    return errors


def _leaves(data: Any, path: tuple[str, ...]) -> Iterable[tuple[tuple[str, ...], Any]]:
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from _leaves(value, (*path, str(key)))
    elif isinstance(data, list | tuple):
        nested = any(isinstance(item, Mapping | list | tuple) for item in data)
        for index, item in enumerate(data):
            yield from _leaves(item, (*path, str(index)) if nested else path)
    else:
        yield path, data


def _error(location: str, message: str, type_: Any) -> ValidationError:
    return ValidationError(location[:MAX_LOCATION], message[:MAX_MESSAGE], str(type_ or "")[:MAX_TYPE])
