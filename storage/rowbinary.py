"""Rows as ClickHouse RowBinary blocks: the form in which the hub inserts `requests`.

The compiled converter (``tallyhub.collector_processor.convert._otlp``) writes its rows in this form directly; the
pure-Python converter's rows are encoded here, so that both reach ClickHouse the same way and
a test can compare them byte for byte. Maps are written with their keys in ascending order.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Encoded:
    """Rows already encoded as one RowBinary block, in their table's column order."""

    block: bytes
    rows: int

    def __len__(self) -> int:
        return self.rows

    @staticmethod
    def joined(parts: Iterable[Encoded]) -> Encoded:
        parts = list(parts)
        return Encoded(b"".join(part.block for part in parts), sum(part.rows for part in parts))


def _string(out: bytearray, value: str) -> None:
    data = value.encode()
    _varint(out, len(data))
    out += data


def _varint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _packer(fmt: str) -> Callable[[bytearray, Any], None]:
    pack = struct.Struct(fmt).pack

    def put(out: bytearray, value: Any) -> None:
        out += pack(value)

    return put


def _datetime(out: bytearray, value: dt.datetime) -> None:
    out += struct.pack("<I", int(value.timestamp()))


def _bucket_map(out: bytearray, buckets: Mapping[int, int]) -> None:
    _varint(out, len(buckets))
    for index in sorted(buckets):
        out += _BUCKET.pack(index, buckets[index])


_BUCKET = struct.Struct("<iQ")
_F64 = _packer("<d")
REQUEST_ENCODERS: tuple[Callable[[bytearray, Any], None], ...] = (
    _datetime,  # minute
    *(_string,) * 7,  # app, env, service, instance, consumer, method, route
    _packer("<H"),  # status
    _packer("<Q"),  # requests
    _F64,  # duration_sum
    _F64,  # duration_min
    _F64,  # duration_max
    _bucket_map,  # duration_buckets
    _F64,  # request_size_sum
    _bucket_map,  # request_size_buckets
    _F64,  # response_size_sum
    _bucket_map,  # response_size_buckets
)
"""One encoder per column of ``storage.writer.REQUEST_COLUMNS``, in order."""


def encode(rows: Iterable[Iterable[Any]], encoders: tuple[Callable[[bytearray, Any], None], ...]) -> Encoded:
    """Rows (values in column order) as one block; ValueError for a value its column cannot hold."""
    out = bytearray()
    count = 0
    for row in rows:
        values = list(row)
        if len(values) != len(encoders):
            raise ValueError(f"a row of {len(values)} values for {len(encoders)} columns")
        try:
            for put, value in zip(encoders, values, strict=True):
                put(out, value)
        except (struct.error, OverflowError) as exc:
            raise ValueError(f"a value does not fit its column: {exc}") from None
        count += 1
    return Encoded(bytes(out), count)
