"""Benchmark of ``Client.variant()`` on a warm client vs the bare bucketing floor (DESIGN.md §8).

Budget: median ≤ 1 µs and ≤ 5× the floor ``mmh3.hash(key) + table[bucket]`` measured in the same run.
The client runs with its background threads (config sync, event delivery) against an in-process
mock server, tracing off. Timing: calls are timed in small batches with ``perf_counter_ns`` (one
call is too short to time alone); the median and p99 are over the per-call means of the batches.

Run: .venv/bin/python bench/bench_variant.py [--batches 2000] [--batch-size 100]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from _common import config, floor_and_loop, percentile, transport

from banditflags import Client


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()
    n: int = args.batch_size
    ids = [f"user-{i}" for i in range(n)]
    perf = time.perf_counter_ns

    client = Client(
        "http://bench",
        "bf_sdk_bench",
        transport=transport(config()),
        flush_interval=1.0,
        max_queue=10_000_000,
    )
    assert client.wait_until_ready(5.0), "config did not load"
    variant = client.variant
    for u in ids * 100:  # warm up (and start the threads)
        variant("checkout-button", u)

    def variant_batch() -> float:
        t0 = perf()
        for u in ids:
            variant("checkout-button", u)
        return (perf() - t0) / n

    floor_batch, loop_batch = floor_and_loop(ids)  # the floor, and the timing loop's own cost

    gc.disable()
    try:
        loop, floor, var = [], [], []
        for _ in range(args.batches):  # interleaved so that both see the same machine state
            loop.append(loop_batch())
            floor.append(floor_batch())
            var.append(variant_batch())
    finally:
        gc.enable()
    overhead = statistics.median(loop)
    f_med, f_p99 = statistics.median(floor) - overhead, percentile(floor, 0.99) - overhead
    v_med, v_p99 = statistics.median(var) - overhead, percentile(var, 0.99) - overhead
    ok = client.flush(10.0)
    stats = client.stats()
    client.close()
    print(f"floor   mmh3.hash + table[bucket]: median {f_med:7.1f} ns   p99 {f_p99:7.1f} ns")
    print(f"variant() warm client           : median {v_med:7.1f} ns   p99 {v_p99:7.1f} ns")
    print(f"ratio median {v_med / f_med:.2f}x  (budget: median <= 1000 ns and <= 5x the floor)")
    print(f"events delivered: {ok}, batches sent {stats.batches_sent}, dropped {stats.decisions_dropped}")
    print("PASS" if v_med <= 1000 and v_med <= 5 * f_med else "OVER BUDGET")


if __name__ == "__main__":
    main()
