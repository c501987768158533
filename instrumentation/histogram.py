"""Base-2 exponential histograms, as OpenTelemetry defines them, cheap enough for the request path.

Bucket ``i`` at scale ``s`` holds the values in ``(base**i, base**(i + 1)]`` with
``base = 2 ** 2 ** -s``. A histogram starts at the finest scale and halves its resolution
(``index >> 1``) whenever the occupied index range would exceed ``MAX_SIZE`` buckets, exactly
like the SDK's ``ExponentialBucketHistogramAggregation`` (max_scale 20), but with 320 buckets
instead of its default 160: a 10-octave range of latencies (1 ms to 1 s) then keeps scale 5, the
hub's storage scale, so that stored percentiles stay within 2 % (tests/storage/test_percentiles.py).
"""

from __future__ import annotations

import math
from math import ceil, frexp, log

from tallyhub.bucket_mapping import LOG2_E, bucket_index

MAX_SCALE = 20
MAX_SIZE = 320


class ExponentialHistogram:
    """A delta exponential histogram of non-negative values (durations, byte counts)."""

    __slots__ = ("_factor", "count", "counts", "hi", "lo", "max", "min", "scale", "sum", "zero_count")

    def __init__(self) -> None:
        self.scale = MAX_SCALE
        self._factor = LOG2_E * 2.0**MAX_SCALE
        self.counts: dict[int, int] = {}
        self.lo = 0
        self.hi = -1
        self.count = 0
        self.zero_count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def record(self, value: float) -> None:
        self.count += 1
        if value <= 0:
            self.zero_count += 1
            if value < self.min:
                self.min = value
            if value > self.max:
                self.max = value
            return
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        # bucket_index, inlined with the scale's factor precomputed: this runs three times a request
        if self.scale > 0 and frexp(value)[0] != 0.5:
            index = ceil(log(value) * self._factor) - 1
        else:
            index = bucket_index(value, self.scale)
        try:
            self.counts[index] += 1
        except KeyError:
            self._add_bucket(index)

    def _add_bucket(self, index: int) -> None:
        """The first value in a bucket: widen the range, and downscale if it would exceed MAX_SIZE."""
        if not self.counts:
            self.lo = self.hi = index
        elif index < self.lo or index > self.hi:
            lo, hi = min(self.lo, index), max(self.hi, index)
            shift = 0
            while (hi >> shift) - (lo >> shift) >= MAX_SIZE:
                shift += 1
            if shift:
                self._downscale(shift)
                index >>= shift
                lo >>= shift
                hi >>= shift
            self.lo, self.hi = lo, hi
        self.counts[index] = self.counts.get(index, 0) + 1

    def _downscale(self, shift: int) -> None:
        merged: dict[int, int] = {}
        for index, n in self.counts.items():
            merged[index >> shift] = merged.get(index >> shift, 0) + n
        self.counts = merged
        self.scale -= shift
        self._factor = LOG2_E * 2.0**self.scale

    def dense_counts(self) -> tuple[int, list[int]]:
        """(offset, bucket_counts) of the positive range, the OTLP encoding."""
        if not self.counts:
            return 0, []
        return self.lo, [self.counts.get(i, 0) for i in range(self.lo, self.hi + 1)]
