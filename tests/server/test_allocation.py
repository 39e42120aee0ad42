"""Tests for banditflags_server.engine.allocation: target counts, minimal-movement rebalance, RLE."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditflags_server.engine.allocation import (
    TABLE_SIZE,
    decode_rle,
    encode_rle,
    initial_table,
    minimal_movement,
    moved_buckets,
    rebalance,
    served_weights,
    table_counts,
    target_counts,
)

weight = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
weights_st = st.lists(weight, min_size=1, max_size=12).filter(lambda w: sum(w) > 0)


@st.composite
def counts_st(draw: st.DrawFn, k: int | None = None) -> list[int]:
    """Bucket counts for k arms (some may be 0) summing to TABLE_SIZE."""
    k = k if k is not None else draw(st.integers(1, 12))
    return target_counts(draw(st.lists(weight, min_size=k, max_size=k).filter(lambda w: sum(w) > 0)))


@st.composite
def rebalance_case(draw: st.DrawFn) -> tuple[bytes, list[int], int]:
    """An old table reached through a few rebalances, new target counts, and K (possibly more arms)."""
    k_old = draw(st.integers(1, 8))
    table = initial_table(draw(counts_st(k_old)))
    for _ in range(draw(st.integers(0, 4))):
        table = rebalance(table, draw(counts_st(k_old)))
    k = k_old + draw(st.integers(0, 3))
    return table, draw(counts_st(k)), k


@given(weights_st)
def test_target_counts_sum_and_within_one(w: list[float]) -> None:
    counts = target_counts(w)
    assert sum(counts) == TABLE_SIZE
    total = sum(w)
    for c, x in zip(counts, w, strict=True):
        assert abs(c - x / total * TABLE_SIZE) < 1.0 + 1e-9
        assert c >= 0


def test_target_counts_ties_go_to_lower_index() -> None:
    assert target_counts([1, 1, 1]) == [3334, 3333, 3333]
    assert target_counts([1.0] * 7)[:2] == [1429, 1429]
    assert target_counts([0, 1]) == [0, 10_000]


@pytest.mark.parametrize("bad", [[], [-1.0, 2.0], [math.nan, 1.0], [math.inf, 1.0], [0.0, 0.0], [True, 1.0]])
def test_target_counts_rejects(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        target_counts(bad)


@given(counts_st())
def test_initial_table_is_contiguous(counts: list[int]) -> None:
    table = initial_table(counts)
    assert len(table) == TABLE_SIZE
    assert table_counts(table, len(counts)) == counts
    runs = encode_rle(table)
    assert [r[0] for r in runs] == [i for i, c in enumerate(counts) if c]  # one run per arm, in order


@settings(max_examples=300)
@given(rebalance_case())
def test_rebalance_moves_minimum(case: tuple[bytes, list[int], int]) -> None:
    old, counts, k = case
    old_counts = table_counts(old, k)
    new = rebalance(old, counts)
    assert len(new) == TABLE_SIZE
    assert table_counts(new, k) == counts
    assert moved_buckets(old, new) == minimal_movement(old_counts, counts)
    for a, b in zip(old, new, strict=True):
        if a != b:
            assert counts[a] < old_counts[a], "a bucket left an arm that does not shrink"
            assert counts[b] > old_counts[b], "a bucket went to an arm that does not grow"
    assert rebalance(old, counts) == new  # deterministic


def test_rebalance_prefers_adjacent_runs() -> None:
    old = initial_table([5000, 3000, 2000])
    assert encode_rle(rebalance(old, [4000, 4000, 2000])) == [[0, 4000], [1, 4000], [2, 2000]]
    assert rebalance(old, [5000, 3000, 2000]) == old


def test_rebalance_keeps_rle_short() -> None:
    import random

    rnd = random.Random(0)
    for k in (3, 10):
        table = initial_table(target_counts([1.0] * k))
        for _ in range(200):
            counts = target_counts([rnd.random() + 1e-3 for _ in range(k)])
            table = rebalance(table, counts)
        # Far below the worst case (one run per moved bucket); measured ~4 (K=3) and ~16 (K=10).
        assert len(encode_rle(table)) <= 6 * k


def test_rebalance_rejects_bad_input() -> None:
    old = initial_table([5000, 5000])
    with pytest.raises(ValueError):
        rebalance(old, [10_000])  # old holds arm 1, out of range for K = 1
    with pytest.raises(ValueError):
        rebalance(old, [5000, 4999])
    with pytest.raises(ValueError):
        rebalance(old[:-1], [5000, 5000])


def test_minimal_movement_examples() -> None:
    assert minimal_movement([5000, 5000], [5000, 5000]) == 0
    assert minimal_movement([10_000, 0], [0, 10_000]) == 10_000
    assert minimal_movement([5000, 5000], [4000, 5000, 1000]) == 1000


@given(rebalance_case())
def test_rle_round_trips(case: tuple[bytes, list[int], int]) -> None:
    table, _, k = case
    runs = encode_rle(table)
    assert sum(n for _, n in runs) == TABLE_SIZE
    assert all(runs[i][0] != runs[i + 1][0] for i in range(len(runs) - 1))  # merged
    assert decode_rle(runs, k) == table


@pytest.mark.parametrize(
    ("runs", "k", "match"),
    [
        ([[0, 5000], [1, 4999]], 2, "sum"),
        ([[0, 5000], [1, 5001]], 2, "exceed"),
        ([[0, 5000], [2, 5000]], 2, "out of range"),
        ([[-1, 5000], [0, 5000]], 2, "out of range"),
        ([[True, 5000], [0, 5000]], 2, "int"),
        ([[0, 5000], [1, True]], 2, "int"),
        ([[0, 10_001], [1, -1]], 2, "exceed"),
        ([[1, -1], [0, 10_001]], 2, ">= 1"),
        ([[0, 0], [0, 10_000]], 1, ">= 1"),
        ([[0, 5000.0], [1, 5000]], 2, "int"),
        ([[0, 5000, 1], [1, 5000]], 2, "pair"),
        ([], 2, "empty"),
        ("0,10000", 1, "list"),
    ],
)
def test_decode_rle_rejects(runs: object, k: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_rle(runs, k)  # type: ignore[arg-type]


@given(
    st.lists(weight, min_size=1, max_size=10).filter(lambda w: sum(w) > 0),
    st.floats(0.0, 1.0),
    st.data(),
)
def test_served_weights(w: list[float], e: float, data: st.DataObject) -> None:
    baseline = data.draw(st.integers(0, len(w) - 1))
    out = served_weights(w, e, baseline)
    total = sum(w)
    assert math.isclose(sum(out), 1.0, rel_tol=1e-9)
    assert all(x >= 0 for x in out)
    for i, x in enumerate(out):
        expected = e * (w[i] / total) + (1 - e if i == baseline else 0.0)
        assert math.isclose(x, expected, rel_tol=1e-9, abs_tol=1e-12)
    assert out[baseline] >= 1 - e - 1e-12
    if e == 0:
        assert out[baseline] == 1.0


@pytest.mark.parametrize(
    ("w", "e", "b"), [([1, 1], 1.5, 0), ([1, 1], -0.1, 0), ([1, 1], 0.5, 2), ([0, 0], 0.5, 0)]
)
def test_served_weights_rejects(w: list[float], e: float, b: int) -> None:
    with pytest.raises(ValueError):
        served_weights(w, e, b)
