"""The mapping of values to base-2 exponential histogram buckets, as OpenTelemetry defines it.

Bucket ``i`` at scale ``s`` holds the values in ``(base**i, base**(i + 1)]`` with
``base = 2 ** 2 ** -s``. It is part of the wire contract: the client fills its histograms with it and
the hub brings other SDKs' buckets to its storage scale with it, so both import it from here (the
hub never imports the client, whose package loads the OTLP exporters).
"""

from __future__ import annotations

import math

LOG2_E = 1 / math.log(2)


def bucket_index(value: float, scale: int) -> int:
    """Index of the bucket that holds ``value`` (> 0) at ``scale``."""
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2**exponent, 0.5 <= mantissa < 1
    if mantissa == 0.5:  # an exact power of two is the upper bound of its bucket
        power = exponent - 1
        return (power << scale) - 1 if scale > 0 else (power - 1) >> -scale
    if scale <= 0:
        return (exponent - 1) >> -scale
    return math.ceil(math.log(value) * LOG2_E * (1 << scale)) - 1


def lower_bound(index: int, scale: int) -> float:
    """The exclusive lower bound of bucket ``index`` at ``scale``."""
    return 2.0 ** (index / (1 << scale)) if scale >= 0 else 2.0 ** (index << -scale)
