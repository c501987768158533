import math
import random

from tallyhub.bucket_mapping import bucket_index
from tallyhub.instrumentation.histogram import MAX_SIZE, ExponentialHistogram


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
