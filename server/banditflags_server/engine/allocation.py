"""The bucket table: weights -> per-arm bucket counts -> a 10,000-entry table (DESIGN.md §4).

A table is ``bytes`` of length :data:`TABLE_SIZE`; ``table[bucket]`` is the arm index. When weights change,
:func:`rebalance` moves the minimum possible number of buckets (only from arms that shrink to arms that
grow), and prefers moves at run edges so the run-length encoding sent on the wire stays short.

Example:
    >>> counts = target_counts([0.5, 0.3, 0.2])
    >>> counts
    [5000, 3000, 2000]
    >>> table = initial_table(counts)
    >>> encode_rle(table)
    [[0, 5000], [1, 3000], [2, 2000]]
    >>> new = rebalance(table, target_counts([0.4, 0.4, 0.2]))
    >>> moved_buckets(table, new) == minimal_movement(counts, [4000, 4000, 2000]) == 1000
    True
    >>> encode_rle(new)
    [[0, 4000], [1, 4000], [2, 2000]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_ARMS",
    "TABLE_SIZE",
    "decode_rle",
    "encode_rle",
    "initial_table",
    "minimal_movement",
    "moved_buckets",
    "rebalance",
    "served_weights",
    "table_counts",
    "target_counts",
]

TABLE_SIZE: int = 10_000
"""Number of buckets in every allocation table."""

MAX_ARMS: int = 255
"""Largest number of arms a table can hold (arm indexes are byte values)."""


def _is_int(x: object) -> bool:
    # bool is an int subclass; on the wire `true` must never pass for an arm index or a length.
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_k(k: int) -> None:
    if not _is_int(k) or not 1 <= k <= MAX_ARMS:
        raise ValueError(f"number of arms must be an int in [1, {MAX_ARMS}], got {k!r}")


def target_counts(weights: Sequence[float]) -> list[int]:
    """Bucket counts for ``weights`` by largest-remainder rounding of ``w_i / sum(w) * 10_000``.

    The counts sum to exactly :data:`TABLE_SIZE` and each is within 1 of its exact quota. Remainders are
    compared exactly (rational arithmetic on the given floats), ties go to the lower index.

    Raises ValueError on an empty list, a negative, NaN or infinite weight, or a zero sum.

    Example:
        >>> target_counts([1, 1, 1])
        [3334, 3333, 3333]
        >>> target_counts([0.9, 0.1])
        [9000, 1000]
    """
    if len(weights) == 0:
        raise ValueError("weights must not be empty")
    if len(weights) > MAX_ARMS:
        raise ValueError(f"at most {MAX_ARMS} weights, got {len(weights)}")
    ratios: list[tuple[int, int]] = []
    for i, w in enumerate(weights):
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, float, np.integer, np.floating)):
            raise ValueError(f"weights[{i}]: must be a number, got {w!r}")
        wf = float(w)
        if not math.isfinite(wf):
            raise ValueError(f"weights[{i}]: must be finite, got {w!r}")
        if wf < 0:
            raise ValueError(f"weights[{i}]: must be >= 0, got {w!r}")
        # as_integer_ratio is exact (the denominator a power of two), so equal quotas tie exactly and
        # rounding never drifts; integers over one common denominator are ~10x faster than Fraction.
        ratios.append(wf.as_integer_ratio())
    den = max(d for _, d in ratios)
    nums = [n * (den // d) for n, d in ratios]
    total = sum(nums)
    if total == 0:
        raise ValueError("weights must have a positive sum")
    # quota_i = nums_i * TABLE_SIZE / total = counts_i + rem_i / total, exactly.
    counts = []
    rems = []
    for n in nums:
        c, r = divmod(n * TABLE_SIZE, total)
        counts.append(c)
        rems.append(r)
    left = TABLE_SIZE - sum(counts)  # 0 <= left < K because each floor loses less than 1
    order = sorted(range(len(nums)), key=lambda i: (-rems[i], i))
    for i in order[:left]:
        counts[i] += 1
    return counts


def _check_counts(counts: Sequence[int]) -> list[int]:
    _check_k(len(counts))
    out: list[int] = []
    for i, c in enumerate(counts):
        if not _is_int(c) or c < 0:
            raise ValueError(f"counts[{i}]: must be a non-negative int, got {c!r}")
        out.append(int(c))
    if sum(out) != TABLE_SIZE:
        raise ValueError(f"counts must sum to {TABLE_SIZE}, got {sum(out)}")
    return out


def initial_table(counts: Sequence[int]) -> bytes:
    """A fresh table: contiguous runs in arm order, ``counts[i]`` buckets for arm ``i``.

    Example:
        >>> encode_rle(initial_table([2500, 0, 7500]))
        [[0, 2500], [2, 7500]]
    """
    cs = _check_counts(counts)
    return b"".join(bytes([i]) * c for i, c in enumerate(cs))


def _as_array(table: bytes) -> npt.NDArray[np.uint8]:
    if not isinstance(table, (bytes, bytearray, memoryview)):
        raise ValueError(f"table must be bytes, got {type(table).__name__}")
    if len(table) != TABLE_SIZE:
        raise ValueError(f"table must have {TABLE_SIZE} entries, got {len(table)}")
    return np.frombuffer(bytes(table), dtype=np.uint8)


def table_counts(table: bytes, k: int) -> list[int]:
    """Buckets per arm in ``table`` for arms ``0..k-1``; ValueError if an entry is ``>= k``.

    Example:
        >>> table_counts(initial_table([6000, 4000]), 3)
        [6000, 4000, 0]
    """
    _check_k(k)
    arr = _as_array(table)
    bc = np.bincount(arr, minlength=k)
    if len(bc) > k:
        raise ValueError(f"table holds arm index {len(bc) - 1}, out of range for {k} arms")
    return [int(c) for c in bc]


def moved_buckets(old: bytes, new: bytes) -> int:
    """Number of buckets whose arm differs between two tables.

    Example:
        >>> moved_buckets(initial_table([5000, 5000]), initial_table([4000, 6000]))
        1000
    """
    return int(np.count_nonzero(_as_array(old) != _as_array(new)))


def minimal_movement(old_counts: Sequence[int], new_counts: Sequence[int]) -> int:
    """The fewest buckets that must change arm to go from one set of counts to another.

    Equals ``sum(max(0, o - n))`` (the total-variation distance in buckets). Shorter lists are padded with 0.

    Example:
        >>> minimal_movement([5000, 5000, 0], [4000, 5000, 1000])
        1000
    """
    size = max(len(old_counts), len(new_counts))
    o = list(old_counts) + [0] * (size - len(old_counts))
    n = list(new_counts) + [0] * (size - len(new_counts))
    return sum(max(0, int(a) - int(b)) for a, b in zip(o, n, strict=True))


def _runs(arr: npt.NDArray[np.uint8]) -> tuple[list[int], list[int]]:
    """(arms, lengths) of the maximal runs of ``arr``."""
    starts = np.concatenate(([0], np.flatnonzero(arr[1:] != arr[:-1]) + 1))
    lengths = np.diff(np.concatenate((starts, [len(arr)])))
    return [int(a) for a in arr[starts]], [int(n) for n in lengths]


def _merge(arms: list[int], lens: list[int]) -> tuple[list[int], list[int]]:
    """Drop empty runs and merge neighbours of the same arm."""
    out_a: list[int] = []
    out_l: list[int] = []
    for a, n in zip(arms, lens, strict=True):
        if n == 0:
            continue
        if out_a and out_a[-1] == a:
            out_l[-1] += n
        else:
            out_a.append(a)
            out_l.append(n)
    return out_a, out_l


def rebalance(old: bytes, counts: Sequence[int]) -> bytes:
    """A table with ``counts`` that changes as few buckets of ``old`` as possible.

    Buckets are taken only from arms whose count shrinks and given only to arms that grow, so
    ``moved_buckets(old, new) == minimal_movement(table_counts(old, k), counts)``. Among the minimal
    moves it prefers, in order: growing a run into a neighbouring shrinking run (no new run), handing a
    whole small run of a shrinking arm to a growing arm (no new run), and only then cutting a piece off
    the edge of a shrinking run (one new run). The result is deterministic. ``len(counts)`` may exceed
    the arms present in ``old``.

    Example:
        >>> old = initial_table([5000, 5000])
        >>> encode_rle(rebalance(old, [4000, 5000, 1000]))
        [[0, 4000], [2, 1000], [1, 5000]]
    """
    k = len(counts)
    want = _check_counts(counts)
    arr = _as_array(old)
    have = np.bincount(arr, minlength=k)
    if len(have) > k:
        raise ValueError(f"old table holds arm index {len(have) - 1}, out of range for {k} arms")
    if all(int(h) == w for h, w in zip(have, want, strict=True)):
        return bytes(old)
    surplus = [max(0, int(h) - w) for h, w in zip(have, want, strict=True)]
    deficit = [max(0, w - int(h)) for h, w in zip(have, want, strict=True)]
    arms, lens = _runs(arr)
    # Each step below only shortens a run of an arm with surplus and lengthens or creates a run of an arm
    # with deficit, keeping every other bucket in place; so each moved bucket is counted exactly once.
    while True:
        _extend_into_neighbours(arms, lens, surplus, deficit)
        arms, lens = _merge(arms, lens)
        if not any(surplus):
            break
        _seed(arms, lens, surplus, deficit)
        arms, lens = _merge(arms, lens)
    out = np.repeat(np.asarray(arms, dtype=np.uint8), np.asarray(lens, dtype=np.int64))
    return out.tobytes()


def _extend_into_neighbours(arms: list[int], lens: list[int], surplus: list[int], deficit: list[int]) -> None:
    """Grow runs of growing arms into adjacent runs of shrinking arms until no such pair remains."""
    while True:
        # Short donor runs first: eating a fragment whole removes a run from the table.
        cand = []
        for i in range(len(arms) - 1):
            a, b = arms[i], arms[i + 1]
            if surplus[a] and deficit[b]:
                cand.append((lens[i], i, i + 1))
            elif surplus[b] and deficit[a]:
                cand.append((lens[i + 1], i + 1, i))
        if not cand:
            return
        cand.sort()
        progressed = False
        for _, donor, taker in cand:
            da, ta = arms[donor], arms[taker]
            x = min(surplus[da], deficit[ta], lens[donor])
            if x <= 0 or lens[taker] == 0:
                continue
            lens[donor] -= x
            lens[taker] += x
            surplus[da] -= x
            deficit[ta] -= x
            progressed = True
        merged_a, merged_l = _merge(arms, lens)
        arms[:] = merged_a
        lens[:] = merged_l
        if not progressed:
            return


def _seed(arms: list[int], lens: list[int], surplus: list[int], deficit: list[int]) -> None:
    """One move that creates at most one new run, used when no growing arm touches a shrinking one."""
    takers = [a for a in range(len(deficit)) if deficit[a]]
    donors = [i for i in range(len(arms)) if surplus[arms[i]]]
    # Whole runs first (no new run): the largest run that fits both the donor's surplus and a deficit.
    best: tuple[int, int, int] | None = None
    for i in donors:
        n = lens[i]
        if n > surplus[arms[i]]:
            continue
        for t in takers:
            if n <= deficit[t] and (best is None or n > best[0]):
                best = (n, i, t)
    if best is not None:
        n, i, t = best
        surplus[arms[i]] -= n
        deficit[t] -= n
        arms[i] = t
        return
    # Otherwise cut from the right edge of the donor's longest run for the arm with the largest deficit.
    i = max(donors, key=lambda j: (lens[j], -j))
    t = max(takers, key=lambda a: (deficit[a], -a))
    x = min(surplus[arms[i]], deficit[t], lens[i])
    surplus[arms[i]] -= x
    deficit[t] -= x
    lens[i] -= x
    arms.insert(i + 1, t)
    lens.insert(i + 1, x)


def encode_rle(table: bytes) -> list[list[int]]:
    """Run-length encode a table as ``[[arm, run_length], ...]``; adjacent runs of one arm are merged.

    Example:
        >>> encode_rle(bytes([0]) * 9000 + bytes([1]) * 1000)
        [[0, 9000], [1, 1000]]
    """
    arms, lens = _runs(_as_array(table))
    return [[a, n] for a, n in zip(arms, lens, strict=True)]


def decode_rle(runs: Sequence[Sequence[int]], k: int) -> bytes:
    """Decode and validate a wire RLE table for a flag with ``k`` arms.

    Every run must be a pair ``[arm, length]`` of ints (not bools) with ``0 <= arm < k`` and
    ``length >= 1``, and the lengths must sum to :data:`TABLE_SIZE`. Raises ValueError naming the run.

    Example:
        >>> decode_rle([[0, 5000], [1, 5000]], 2) == initial_table([5000, 5000])
        True
    """
    _check_k(k)
    if isinstance(runs, (str, bytes)) or not isinstance(runs, Sequence):
        raise ValueError("table: must be a list of [arm, run_length] pairs")
    if not runs:
        raise ValueError("table: must not be empty")
    if len(runs) > TABLE_SIZE:
        raise ValueError(f"table: at most {TABLE_SIZE} runs, got {len(runs)}")
    arms: list[int] = []
    lens: list[int] = []
    total = 0
    for i, run in enumerate(runs):
        if isinstance(run, (str, bytes)) or not isinstance(run, Sequence) or len(run) != 2:
            raise ValueError(f"table[{i}]: must be a pair [arm, run_length], got {run!r}")
        arm, n = run[0], run[1]
        if not _is_int(arm):
            raise ValueError(f"table[{i}][0]: arm must be an int, got {arm!r}")
        if not _is_int(n):
            raise ValueError(f"table[{i}][1]: run length must be an int, got {n!r}")
        if not 0 <= arm < k:
            raise ValueError(f"table[{i}][0]: arm {arm} out of range [0, {k})")
        if n < 1:
            raise ValueError(f"table[{i}][1]: run length must be >= 1, got {n}")
        total += int(n)
        if total > TABLE_SIZE:
            raise ValueError(f"table: run lengths exceed {TABLE_SIZE} at table[{i}]")
        arms.append(int(arm))
        lens.append(int(n))
    if total != TABLE_SIZE:
        raise ValueError(f"table: run lengths must sum to {TABLE_SIZE}, got {total}")
    return np.repeat(np.asarray(arms, dtype=np.uint8), np.asarray(lens, dtype=np.int64)).tobytes()


def served_weights(bandit_weights: Sequence[float], exploration: float, baseline: int) -> list[float]:
    """Apply the exploration throttle: ``(1 - e) * onehot(baseline) + e * w`` (DESIGN.md §3).

    ``bandit_weights`` are normalised first (they must be non-negative, finite, with a positive sum).
    ``e = 0`` sends everyone to the baseline arm; ``e = 1`` serves the bandit's weights.

    Example:
        >>> served_weights([0.2, 0.8], 0.5, 0)
        [0.6, 0.4]
    """
    k = len(bandit_weights)
    _check_k(k)
    if isinstance(exploration, bool) or not isinstance(exploration, (int, float, np.integer, np.floating)):
        raise ValueError(f"exploration must be a number, got {exploration!r}")
    e = float(exploration)
    if not 0.0 <= e <= 1.0:  # also rejects NaN
        raise ValueError(f"exploration must be in [0, 1], got {exploration!r}")
    if not _is_int(baseline) or not 0 <= baseline < k:
        raise ValueError(f"baseline must be an arm index in [0, {k}), got {baseline!r}")
    w = [float(x) for x in bandit_weights]
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise ValueError("bandit_weights must be finite and non-negative")
    total = math.fsum(w)
    if total <= 0:
        raise ValueError("bandit_weights must have a positive sum")
    out = [e * (x / total) for x in w]  # normalise first: e * x can underflow for subnormal x
    out[int(baseline)] += 1.0 - e
    return out
