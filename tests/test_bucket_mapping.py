"""The OpenTelemetry exponential bucket mapping that client and hub both use."""

import random

import pytest

from tallyhub.bucket_mapping import bucket_index, lower_bound

MAX_SCALE = 20


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
