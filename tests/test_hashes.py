"""Compact sorted arrays of 8-byte hashes."""

from __future__ import annotations

import random

from batchsubmit.hashes import HashBuckets


def test_sorted_holds_every_value_in_order_across_buckets() -> None:
    """Both signs, the extremes and values sharing a top byte come out in order, once each
    with ``unique``; the buckets are emptied."""
    rng = random.Random(3)
    values = [rng.randrange(-(2**63), 2**63) for _ in range(5_000)]
    values += [-(2**63), 2**63 - 1, 0, -1, 1, 2**56, -(2**56), 2**56 + 1]
    values += values[:100]  # repeats
    buckets = HashBuckets(values)
    assert len(buckets) == len(values)
    assert list(HashBuckets(values).sorted()) == sorted(values)
    assert list(buckets.sorted(unique=True)) == sorted(set(values))
    assert len(buckets) == 0
