"""Sticky hash bucketing (DESIGN.md §4); must match tests/vectors/bucketing.json byte for byte.

>>> bucket_of("3f0c9a1e5d7b2a4c", "user-1") == (hash_key("3f0c9a1e5d7b2a4c.user-1") * 10_000) >> 32
True
>>> table = decode_table([[0, 5000], [1, 5000]])
>>> len(table), table[0], table[9999]
(10000, 0, 1)
>>> table_counts(table_from_weights([1, 1, 1]), 3)
(3334, 3333, 3333)
"""

from __future__ import annotations

from collections.abc import Sequence

import mmh3

__all__ = [
    "TABLE_SIZE",
    "arm_of",
    "bucket_of",
    "decode_table",
    "hash_key",
    "table_counts",
    "table_from_weights",
]

TABLE_SIZE = 10_000


def hash_key(key: str) -> int:
    """Unsigned 32-bit murmur3 (x86_32, seed 0) of ``key`` encoded as UTF-8."""
    # mmh3 encodes str as UTF-8 itself; skipping .encode() saves an allocation on the hot path.
    return mmh3.hash(key, 0, False)


def bucket_of(salt: str, unit_id: str) -> int:
    """The bucket (0..9999) of a unit: multiply-shift maps the 32-bit hash without modulo bias."""
    return (mmh3.hash(f"{salt}.{unit_id}", 0, False) * TABLE_SIZE) >> 32


def arm_of(table: bytes, salt: str, unit_id: str) -> int:
    """The arm index a unit lands on in a decoded table."""
    return table[bucket_of(salt, unit_id)]


def decode_table(rle: Sequence[Sequence[int]]) -> bytes:
    """Decode a run-length encoded table ``[[arm, run], ...]`` into 10,000 arm indexes.

    The caller (``parse_config``) has validated the runs; this raises ``ValueError`` if they do not
    sum to 10,000 or an arm does not fit in a byte.
    """
    table = b"".join(bytes((arm,)) * run for arm, run in rle)
    if len(table) != TABLE_SIZE:
        raise ValueError(f"table runs sum to {len(table)}, not {TABLE_SIZE}")
    return table


def table_counts(table: bytes, arms: int) -> tuple[int, ...]:
    """Buckets per arm in a decoded table."""
    return tuple(table.count(bytes((arm,))) for arm in range(arms))


def table_from_weights(weights: Sequence[float]) -> bytes:
    """The table of a fixed split (a targeting rule's ``serve.weights``), as the server builds one.

    Counts are the largest-remainder rounding of ``w_i / sum(w) * 10_000`` (remainders compared
    exactly, ties to the lower arm), laid out as contiguous runs in arm order. The caller has checked
    that the weights are finite, non-negative, at most 255 and of positive sum.
    """
    # as_integer_ratio is exact, so every quota is a rational over one common denominator.
    ratios = [float(w).as_integer_ratio() for w in weights]
    den = max(d for _, d in ratios)
    nums = [n * (den // d) for n, d in ratios]
    total = sum(nums)
    counts, rems = zip(*(divmod(n * TABLE_SIZE, total) for n in nums), strict=True)
    extra = set(sorted(range(len(nums)), key=lambda i: (-rems[i], i))[: TABLE_SIZE - sum(counts)])
    return b"".join(bytes((arm,)) * (c + (arm in extra)) for arm, c in enumerate(counts))
