import math
import random

import pytest

from tallyhub.instrumentation.histogram import MAX_SCALE, MAX_SIZE, ExponentialHistogram, bucket_index, lower_bound


@pytest.mark.parametrize("scale", [-3, -1, 0, 1, 3, 5, 8, MAX_SCALE])
def test_every_value_lies_in_its_bucket(scale: int) -> None:
    rng = random.Random(scale)
    values = [2.0**k for k in range(-20, 21)] + [rng.lognormvariate(0, 8) for _ in range(2000)]
    for value in values:
        index = bucket_index(value, scale)
        # upper-inclusive buckets: (lower, upper]; allow one ulp of slack at the bounds
        assert lower_bound(index, scale) < value * (1 + 1e-12)
        assert value <= lower_bound(index + 1, scale) * (1 + 1e-12)


@pytest.mark.parametrize("scale", [-2, 0, 4, MAX_SCALE])
def test_powers_of_two_are_upper_bounds(scale: int) -> None:
    step = 1 << max(0, -scale)  # at a negative scale only every 2**-scale-th power is a bound
    for k in range(-12, 13, step):
        assert lower_bound(bucket_index(2.0**k, scale) + 1, scale) == 2.0**k


def test_downscales_to_fit_max_size_and_keeps_every_count() -> None:
    rng = random.Random(1)
    values = [rng.lognormvariate(-4, 2) for _ in range(20_000)] + [0.0] * 7
    hist = ExponentialHistogram()
    for v in values:
        hist.record(v)
    offset, counts = hist.dense_counts()
    assert len(counts) <= MAX_SIZE
    assert sum(counts) + hist.zero_count == hist.count == len(values)
    assert hist.zero_count == 7
    assert math.isclose(hist.sum, sum(values))
    assert (hist.min, hist.max) == (min(values), max(values))
    # each value is in the bucket the final scale assigns it
    assert min(bucket_index(v, hist.scale) for v in values if v > 0) == offset
    assert max(bucket_index(v, hist.scale) for v in values if v > 0) == offset + len(counts) - 1


def test_narrow_range_keeps_a_fine_scale() -> None:
    hist = ExponentialHistogram()
    for v in (0.100, 0.101, 0.102, 0.120):
        hist.record(v)
    # 20 % of range fits MAX_SIZE buckets at scale 9 (base 2**(1/512)) or finer
    assert hist.scale >= 9
