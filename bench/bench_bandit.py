"""Benchmark the bandit engine and the bucket table (DESIGN.md §8: 1,000 flags × 10 arms ≤ 2 s per cycle).

Prints the median time of ``compute_weights`` for K = 10 arms and 10,000 draws per policy and reward model,
the time of one recompute cycle over 1,000 flags × 10 arms (weights + target counts + rebalance + RLE),
and the RLE run counts after 200 random rebalances of 3 and 10 arms. Not a test: it asserts nothing
about time.

Example:
    .venv/bin/python bench/bench_bandit.py            # full run
    .venv/bin/python bench/bench_bandit.py --quick    # fewer repetitions
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import numpy as np

from banditflags_server.engine import PolicyParams, compute_weights
from banditflags_server.engine.allocation import (
    encode_rle,
    initial_table,
    minimal_movement,
    moved_buckets,
    rebalance,
    table_counts,
    target_counts,
)

K = 10


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeat`` calls (after 3 warm-up calls)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def stats(rng: np.random.Generator, reward: str, n_per_arm: int) -> tuple[np.ndarray, ...]:
    """Plausible (n, s, ss) for K arms: conversion rates 2-8%, or continuous rewards ~ N(10, 3)."""
    n = np.full(K, float(n_per_arm))
    if reward == "binary":
        s = rng.binomial(n_per_arm, rng.uniform(0.02, 0.08, K)).astype(float)
        return n, s, s.copy()
    mu = rng.normal(10.0, 0.5, K)
    s = mu * n + rng.normal(0, 3.0 * np.sqrt(n))
    ss = n * (mu**2 + 9.0)
    return n, s, ss


def bench_compute(repeat: int) -> None:
    rng = np.random.default_rng(1)
    print(f"compute_weights, K={K}, draws=10000, median of {repeat} calls:")
    for reward in ("binary", "continuous"):
        for n_per_arm in (300, 5000):
            n, s, ss = stats(rng, reward, n_per_arm)
            for name in ("thompson", "top_two_thompson", "ucb1", "epsilon_greedy"):
                p = PolicyParams(name=name, reward=reward)
                ms = median_ms(functools.partial(compute_weights, n, s, ss, p, rng), repeat)
                print(f"  {reward:10s} n/arm={n_per_arm:5d} {name:17s} {ms:7.3f} ms")


def bench_cycle(flags: int) -> None:
    """One recompute cycle: for each flag, weights from (P=5, K) stats, counts, rebalance, RLE."""
    rng = np.random.default_rng(2)
    data = []
    for i in range(flags):
        reward = "binary" if i % 2 == 0 else "continuous"
        n_per_arm = int(rng.integers(150, 20_000))
        periods = [stats(rng, reward, max(n_per_arm // 5, 30)) for _ in range(5)]
        n = np.stack([p[0] for p in periods])
        s = np.stack([p[1] for p in periods])
        ss = np.stack([p[2] for p in periods])
        params = PolicyParams(reward=reward, max_step=0.1, half_life=86_400.0,
                              period_ages=(5e5, 4e5, 3e5, 2e5, 1e5),
                              previous=(0.1,) * K)  # fmt: skip
        data.append((n, s, ss, params, initial_table(target_counts([1.0] * K))))
    t0 = time.perf_counter()
    for n, s, ss, params, table in data:
        w = compute_weights(n, s, ss, params, rng)
        counts = target_counts(w.tolist())
        new = rebalance(table, counts)
        encode_rle(new)
    dt = time.perf_counter() - t0
    print(f"recompute cycle, {flags} flags × {K} arms (thompson, 5 periods, half-life, max_step): {dt:.3f} s")


def bench_rle(steps: int = 200, seeds: int = 5) -> None:
    print(f"RLE runs after {steps} random rebalances (final / max over the walk), {seeds} seeds:")
    for k in (3, 10):
        for mode in ("independent", "drift"):
            finals, maxes, times = [], [], []
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                w = rng.dirichlet(np.ones(k))
                table = initial_table(target_counts(w.tolist()))
                worst = 0
                for _ in range(steps):
                    if mode == "independent":  # any new weights
                        w = rng.dirichlet(np.ones(k))
                    else:  # small bandit-like updates
                        w = np.abs(w + rng.normal(0, 0.02, k)) + 1e-3
                        w = w / w.sum()
                    counts = target_counts(w.tolist())
                    t0 = time.perf_counter()
                    new = rebalance(table, counts)
                    times.append(time.perf_counter() - t0)
                    assert moved_buckets(table, new) == minimal_movement(table_counts(table, k), counts)
                    table = new
                    worst = max(worst, len(encode_rle(table)))
                finals.append(len(encode_rle(table)))
                maxes.append(worst)
            med = statistics.median(times) * 1e6
            print(f"  K={k:2d} {mode:11s} final {finals} max {maxes}  rebalance median {med:.0f} µs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    bench_compute(repeat=30 if args.quick else 200)
    bench_cycle(flags=200 if args.quick else 1000)
    bench_rle()


if __name__ == "__main__":
    main()
