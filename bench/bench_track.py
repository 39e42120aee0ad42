"""``track()`` cost (budget: <= 1 us, tracing off) and the memory of a client holding 1,000 flags.

``track()`` is timed three ways on a warm client whose threads run, against the same floor as
``bench_variant.py``: by :class:`Decision` (the common case), by token string (a reward from another
process: the token is parsed) and by flag + unit id. Memory: ``tracemalloc`` counts what the config
snapshot of 1,000 three-variant flags allocates (decoded 10,000-bucket tables, prebuilt decisions),
and the process RSS growth is shown next to it.

Run: .venv/bin/python bench/bench_track.py [--batches 300]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import compare, config, floor_and_loop, transport

from banditflags import Client


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=100)
    args = ap.parse_args()
    n = args.batch_size
    ids = [f"user-{i}" for i in range(n)]
    perf = time.perf_counter_ns

    client = Client("http://bench", "bf_sdk_bench", transport=transport(config()), max_queue=10_000_000)
    assert client.wait_until_ready(5.0)
    decisions = [client.decide("checkout-button", u) for u in ids]
    tokens = [d.token or "" for d in decisions]
    track = client.track

    floor, loop = floor_and_loop(ids)  # the floor, and the timing loop's own cost

    def by_decision() -> float:
        t0 = perf()
        for d in decisions:
            track(d)
        return (perf() - t0) / n

    def by_token() -> float:
        t0 = perf()
        for t in tokens:
            track(t)
        return (perf() - t0) / n

    def by_unit() -> float:
        t0 = perf()
        for u in ids:
            track("checkout-button", u)
        return (perf() - t0) / n

    r = compare(
        {
            "loop": loop,
            "floor": floor,
            "by Decision": by_decision,
            "by token": by_token,
            "by flag + unit": by_unit,
        },
        args.batches,
    )
    overhead = r["loop"][0]
    f_med = r["floor"][0] - overhead
    print(f"{'floor: mmh3.hash + table[bucket]':<34} median {f_med:8.1f} ns")
    worst = 0.0
    for name in ("by Decision", "by token", "by flag + unit"):
        med, p99 = r[name][0] - overhead, r[name][1] - overhead
        worst = max(worst, med)
        print(f"track() {name:<26} median {med:8.1f} ns   p99 {p99:8.1f} ns   {med / f_med:5.1f}x floor")
    print(f"track() budget: median <= 1000 ns: {'PASS' if worst <= 1000 else 'OVER'}")
    assert client.flush(30.0)
    client.close()

    gc.collect()
    payload = config(1000)
    rss0 = rss_bytes()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    big = Client("http://bench", "bf_sdk_bench", transport=transport(payload))
    assert big.wait_until_ready(30.0) and len(big._flags) == 1000
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    rss = rss_bytes() - rss0
    print(
        f"client holding 1,000 flags (3 variants, 10,000-bucket tables): {held / 2**20:.1f} MiB allocated "
        f"and held ({held / 1000 / 1024:.1f} KiB per flag); process RSS grew {rss / 2**20:.1f} MiB"
    )
    big.close()


if __name__ == "__main__":
    main()
