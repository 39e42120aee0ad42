"""Benchmark: one OpenFeature evaluation through ``BanditflagsProvider`` vs the SDK's own
``InMemoryProvider`` (a peer measured in the same run), and the bare ``Client.variant()``.

Both providers go through the same openfeature-sdk client (hooks, context merging, details), so the
ratio shows what the banditflags provider adds on top of the OpenFeature machinery. Timing: batches of
calls with ``perf_counter_ns``; medians over the per-call means of the batches.

Run: .venv/bin/python bench/bench_openfeature.py [--batches 300] [--batch-size 200]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

from _common import config, transport
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from banditflags import Client
from banditflags.openfeature import BanditflagsProvider


def per_call_ns(fn: Callable[[int], object], batches: int, size: int) -> float:
    means = []
    gc.disable()
    try:
        for b in range(batches):
            t0 = time.perf_counter_ns()
            for i in range(size):
                fn(b * size + i)
            means.append((time.perf_counter_ns() - t0) / size)
    finally:
        gc.enable()
    return statistics.median(means)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=200)
    args = ap.parse_args()

    client = Client("http://bf", "bf_sdk_bench", transport=transport(config()), max_queue=10**7)
    assert client.wait_until_ready(5.0)
    api.set_provider_and_wait(BanditflagsProvider(client), "banditflags")
    memory = InMemoryProvider({"checkout-button": InMemoryFlag("blue", {"blue": "#00f", "green": "#0f0"})})
    api.set_provider_and_wait(memory, "memory")
    bf, mem = api.get_client("banditflags"), api.get_client("memory")
    contexts = [EvaluationContext(f"user-{i}") for i in range(args.batches * args.batch_size)]
    assert bf.get_string_details("checkout-button", "#000", contexts[0]).reason == "SPLIT"

    variant = per_call_ns(
        lambda i: client.variant("checkout-button", f"user-{i}"), args.batches, args.batch_size
    )
    ofm = per_call_ns(
        lambda i: mem.get_string_value("checkout-button", "#000", contexts[i]), args.batches, args.batch_size
    )
    ofb = per_call_ns(
        lambda i: bf.get_string_value("checkout-button", "#000", contexts[i]), args.batches, args.batch_size
    )
    print(f"Client.variant()                              median {variant / 1000:6.2f} µs per call")
    print(f"OpenFeature get_string_value, InMemoryProvider median {ofm / 1000:6.2f} µs per call")
    print(f"OpenFeature get_string_value, Banditflags      median {ofb / 1000:6.2f} µs per call")
    print(f"ratio banditflags / in-memory provider: {ofb / ofm:.2f}x")
    api.shutdown()
    client.close(1.0)


if __name__ == "__main__":
    main()
