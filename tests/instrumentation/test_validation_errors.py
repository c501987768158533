"""Validation errors read from error bodies (FastAPI/Ninja, Litestar) and from DRF's error data."""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
import zlib
from typing import Any

import pytest

from tallyhub.instrumentation.validation_errors import (
    MAX_BODY,
    MAX_ERRORS,
    MAX_LOCATION,
    MAX_MESSAGE,
    MAX_TYPE,
    ValidationError,
    drf_errors,
    json_encoding,
    parse_body,
    response_errors,
)

FASTAPI_422 = {
    "detail": [
        {"type": "string_type", "loc": ["body", "name"], "msg": "Input should be a valid string", "input": 5},
        {
            "type": "float_parsing",
            "loc": ["body", "items", 0, "price"],
            "msg": "Input should be a valid number, unable to parse string as a number",
            "input": "secret-price",
            "ctx": {"error": "secret-ctx"},
        },
        {"type": "missing", "loc": ["query", "limit"], "msg": "Field required", "input": None},
    ]
}
FASTAPI_ERRORS = [
    ValidationError("body.name", "Input should be a valid string", "string_type"),
    ValidationError(
        "body.items.0.price", "Input should be a valid number, unable to parse string as a number", "float_parsing"
    ),
    ValidationError("query.limit", "Field required", "missing"),
]
LITESTAR_400 = {
    "status_code": 400,
    "detail": "Validation failed for GET /items?limit=secret-limit",
    "extra": [
        {"message": "Expected `int`, got `str`", "key": "limit", "source": "query"},
        {"message": "Object missing required field `name`", "key": "name", "source": "body"},
        {"message": "Invalid header", "key": "x-api-version"},  # no source
        {"message": "Something about the whole body", "source": "body", "key": ""},
    ],
}
LITESTAR_ERRORS = [
    ValidationError("query.limit", "Expected `int`, got `str`", ""),
    ValidationError("body.name", "Object missing required field `name`", ""),
    ValidationError("x-api-version", "Invalid header", ""),
    ValidationError("body", "Something about the whole body", ""),
]


def dumps(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_fastapi_and_ninja_shape() -> None:
    assert parse_body(dumps(FASTAPI_422)) == FASTAPI_ERRORS
    assert parse_body(dumps(FASTAPI_422), "identity") == FASTAPI_ERRORS
    assert "secret" not in repr(parse_body(dumps(FASTAPI_422)))  # never the input, nor its context


def test_litestar_shape() -> None:
    assert parse_body(dumps(LITESTAR_400)) == LITESTAR_ERRORS
    assert "secret" not in repr(parse_body(dumps(LITESTAR_400)))


def test_odd_items_of_known_shapes() -> None:
    body = {
        "detail": [
            {"loc": "body", "msg": "a location that is a string", "type": "x"},
            {"msg": "no location, no type"},
            {"loc": ["body"], "msg": 3, "type": "message is not a string: skipped"},
            "not an object",
            None,
            {"loc": ["path", "id"], "msg": "numeric type", "type": 7},
        ]
    }
    assert parse_body(dumps(body)) == [
        ValidationError("body", "a location that is a string", "x"),
        ValidationError("", "no location, no type", ""),
        ValidationError("path.id", "numeric type", "7"),
    ]
    assert parse_body(dumps({"detail": None, "extra": [{"key": "a"}, {"message": "ok", "key": "b"}]})) == [
        ValidationError("b", "ok", "")
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b'{"detail": [{"loc": ["body"], "msg": "cut off"',  # truncated
        '{"detail": [{"loc": ["body"], "msg": "café", "type": "x"}]}'.encode("latin-1"),  # not UTF-8
        b'[{"loc": ["body"], "msg": "a list, not an object", "type": "x"}]',
        b'"a string"',
        b"42",
        b"null",
        b'{"detail": "Not Found"}',  # HTTPException(detail=...)
        b'{"detail": {"loc": ["body"], "msg": "an object, not a list"}}',
        b'{"status_code": 400, "detail": "Bad Request", "extra": {"key": "limit"}}',  # extra not a list
        b'{"errors": [{"loc": ["body"], "msg": "an unknown shape"}]}',
        b'{"detail": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",  # nested beyond the recursion limit
    ],
)
def test_bodies_without_errors(body: bytes) -> None:
    assert parse_body(body) == []
    assert parse_body(gzip.compress(body), "gzip") == []


def test_more_than_100_errors_are_cut_to_the_first_100() -> None:
    body = {"detail": [{"loc": ["body", f"f{i}"], "msg": "Field required", "type": "missing"} for i in range(250)]}
    errors = parse_body(dumps(body))
    assert MAX_ERRORS == 100
    assert errors == [ValidationError(f"body.f{i}", "Field required", "missing") for i in range(100)]
    litestar = {"extra": [{"message": f"m{i}", "key": f"k{i}", "source": "query"} for i in range(150)]}
    assert parse_body(dumps(litestar)) == [ValidationError(f"query.k{i}", f"m{i}", "") for i in range(100)]


def test_long_fields_are_cut() -> None:
    body = {"detail": [{"loc": ["body", "x" * 1000], "msg": "é" * 1000, "type": "t" * 1000}]}
    assert (MAX_LOCATION, MAX_MESSAGE, MAX_TYPE) == (256, 512, 128)
    assert parse_body(dumps(body)) == [ValidationError("body." + "x" * 251, "é" * 512, "t" * 128)]


# Bodies by size and encoding.


def padded(size: int) -> bytes:
    """A JSON body of the FastAPI shape of exactly ``size`` bytes (white space at the end)."""
    body = dumps(FASTAPI_422)
    return body + b" " * (size - len(body))


def test_size_limit_of_the_body() -> None:
    assert MAX_BODY == 64 * 1024
    assert parse_body(padded(MAX_BODY)) == FASTAPI_ERRORS
    assert parse_body(padded(MAX_BODY + 1)) == []
    assert parse_body(gzip.compress(padded(MAX_BODY)), "gzip") == FASTAPI_ERRORS
    assert parse_body(gzip.compress(padded(MAX_BODY + 1)), "gzip") == []  # small compressed, too large once not


def test_gzip_bodies() -> None:
    compressed = gzip.compress(dumps(LITESTAR_400))
    assert parse_body(compressed, "gzip") == LITESTAR_ERRORS
    assert parse_body(compressed, " GZip ") == LITESTAR_ERRORS
    assert parse_body(compressed) == []  # gzip bytes read as identity: not JSON
    assert parse_body(dumps(LITESTAR_400), "gzip") == []  # said gzip, is not


def test_truncated_or_corrupt_gzip_gives_no_errors() -> None:
    compressed = gzip.compress(dumps(FASTAPI_422))
    assert parse_body(compressed[: len(compressed) // 2], "gzip") == []  # cut inside the data
    assert parse_body(compressed[:-4], "gzip") == []  # cut inside the trailer (length)
    assert parse_body(compressed[:-8], "gzip") == []  # the trailer (checksum, length) missing
    corrupt = bytearray(compressed)
    corrupt[-6] ^= 0xFF  # a wrong checksum
    assert parse_body(bytes(corrupt), "gzip") == []


def bomb(size: int) -> bytes:
    """``size`` bytes of spaces, gzip-compressed without holding them in memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * 1_000_000
    return b"".join([*(compressor.compress(chunk) for _ in range(size // len(chunk))), compressor.flush()])


def test_a_gzip_bomb_is_not_inflated() -> None:
    compressed = bomb(50_000_000)
    assert len(compressed) < MAX_BODY  # small enough to be read: the decompression must stop early
    tracemalloc.start()
    try:
        started = time.perf_counter()
        assert parse_body(compressed, "gzip") == []
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # about MAX_BODY, not 50 MB
    assert elapsed < 0.5


@pytest.mark.parametrize(
    ("status", "content_type", "content_encoding", "expected"),
    [
        (422, "application/json", "", ""),
        (400, "application/json; charset=utf-8", "", ""),
        (422, "Application/JSON", "identity", "identity"),
        (400, "application/problem+json", "gzip", "gzip"),
        (422, "application/json", " GZIP ", "gzip"),
        (422, "application/json", "br", None),
        (422, "application/json", "deflate", None),
        (422, "application/json", "zstd", None),
        (422, "application/json", "gzip, br", None),
        (422, "text/html", "", None),
        (400, "text/plain", "", None),
        (422, "", "", None),
        (200, "application/json", "", None),
        (401, "application/json", "", None),
        (404, "application/json", "", None),
        (409, "application/json", "", None),
        (500, "application/json", "", None),
    ],
)
def test_json_encoding(status: int, content_type: str, content_encoding: str, expected: str | None) -> None:
    assert json_encoding(status, content_type, content_encoding) == expected


def test_a_response_is_read_by_its_headers() -> None:
    """What the adapters hand over unread (headers and body) is read as its headers say: a JSON body
    plain or gzipped; the same bytes under another content type or encoding, or status, are not."""
    body = dumps(FASTAPI_422)
    assert response_errors(422, "application/json", "", body) == FASTAPI_ERRORS
    assert response_errors(422, "application/json", "gzip", gzip.compress(body)) == FASTAPI_ERRORS
    assert response_errors(422, "text/html", "", body) == []
    assert response_errors(422, "application/json", "br", body) == []
    assert response_errors(409, "application/json", "", body) == []
    assert response_errors(400, "application/json", "", b"<html>not json</html>") == []


# Django REST framework.


@pytest.fixture(scope="module")
def drf() -> Any:
    from .django_project import configure

    configure()  # DRF's messages need Django's settings
    from rest_framework import serializers

    return serializers


def test_drf_serializer_errors(drf: Any) -> None:
    class Address(drf.Serializer):
        city = drf.CharField(max_length=5)
        zip = drf.RegexField(r"^\d{5}$")

    class Line(drf.Serializer):
        sku = drf.CharField()
        quantity = drf.IntegerField(min_value=1)

    class Order(drf.Serializer):
        size = drf.ChoiceField(choices=["S", "M", "L"])
        tags = drf.ListField(child=drf.IntegerField())
        address = Address()
        lines = Line(many=True)
        email = drf.EmailField()

    order = Order(
        data={
            "size": "XXL-secret",
            "tags": [1, "two-secret", 3],
            "address": {"city": "Somewhere-secret", "zip": "abc-secret"},
            "lines": [{"sku": "a", "quantity": 1}, {"quantity": 0}],
            "email": "nobody-secret",
        }
    )
    assert not order.is_valid()
    assert drf_errors(order.errors) == [
        ValidationError("size", '"..." is not a valid choice.', "invalid_choice"),
        ValidationError("tags.1", "A valid integer is required.", "invalid"),
        ValidationError("address.city", "Ensure this field has no more than 5 characters.", "max_length"),
        ValidationError("address.zip", "This value does not match the required pattern.", "invalid"),
        ValidationError("lines.1.sku", "This field is required.", "required"),
        ValidationError("lines.1.quantity", "Ensure this value is greater than or equal to 1.", "min_value"),
        ValidationError("email", "Enter a valid email address.", "invalid"),
    ]


def test_drf_non_field_errors_and_raised_validation_errors(drf: Any) -> None:
    from rest_framework.exceptions import ValidationError as DRFValidationError

    class Transfer(drf.Serializer):
        amount = drf.IntegerField()

        def validate(self, data: dict) -> dict:
            raise drf.ValidationError("Transfers are closed on Sundays.", code="closed")

    transfer = Transfer(data={"amount": 5})
    assert not transfer.is_valid()
    assert drf_errors(transfer.errors) == [
        ValidationError("non_field_errors", "Transfers are closed on Sundays.", "closed")
    ]
    detail = DRFValidationError({"name": ['"bob" is taken; "bobby" too.'], "a": {"b": ["deep", "deeper"]}}).detail
    assert drf_errors(detail) == [
        ValidationError("name", '"..." is taken; "..." too.', "invalid"),
        ValidationError("a.b", "deep", "invalid"),
        ValidationError("a.b", "deeper", "invalid"),
    ]
    assert drf_errors(DRFValidationError("Just wrong.", code="wrong").detail) == [
        ValidationError("", "Just wrong.", "wrong")
    ]
    many = DRFValidationError({"items": [f"bad {i}" for i in range(150)]}).detail
    assert drf_errors(many) == [ValidationError("items", f"bad {i}", "invalid") for i in range(100)]


@pytest.mark.parametrize(
    "data",
    [
        {"name": ["This field is required."]},  # plain strings: not DRF's ErrorDetail
        ["error"],
        "error",
        {"detail": "Not found."},
        {"id": 1, "name": "widget"},
        {},
        [],
        None,
    ],
)
def test_drf_errors_of_other_data(data: Any) -> None:
    assert drf_errors(data) == []


def test_drf_errors_of_data_mixing_error_details_and_plain_values(drf: Any) -> None:
    from rest_framework.exceptions import ErrorDetail

    assert drf_errors({"name": [ErrorDetail("Required.", code="required")], "hint": "plain"}) == []


def test_an_api_exception_detail_is_not_a_validation_error() -> None:
    from rest_framework.exceptions import ParseError
    from rest_framework.exceptions import ValidationError as DRFValidationError

    assert drf_errors({"detail": ParseError("JSON parse error - Expecting value").detail}) == []
    # a serializer field that happens to be called "detail" still counts (its errors are a list)
    assert [e.location for e in drf_errors(DRFValidationError({"detail": ["This field is required."]}).detail)] == [
        "detail"
    ]
