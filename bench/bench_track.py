"""``track()`` cost (budget: <= 1 us whole cost, tracing off) and the memory of a client holding 1,000 flags.

``track()`` is measured three ways on a client whose threads run, against the same floor as
``bench_variant.py``: by :class:`Decision` (the common case), by token string (a reward from another
process: the token is parsed) and by flag + unit id (of a unit the client served and remembers, and of
one it never served: bucketed now). The **whole cost** is the process CPU (every
thread) per first conversion of a distinct decision, including the flush that delivers it; the
caller-only median beside it times repeats (duplicates, answered False: the cheaper path).

Memory: ``tracemalloc`` counts what the config
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


def whole_cost(n: int) -> dict[str, float]:
    """Process CPU (all threads) per track() over ``n`` distinct decisions, including the flush that
    delivers them, minus the empty loop (binary conversions): by Decision, by token, and by flag + unit
    id two ways: units this client served (remembered: a client whose ``decision_memory_size`` holds
    them) and units it never served (bucketed now, their decision id hashed; what a unit that left the
    memory costs too)."""
    out: dict[str, float] = {}
    routes = ("by Decision", "by token", "by flag + unit, served", "by flag + unit, not served")
    default = Client("http://bench", "bf_sdk_bench", transport=transport(config()), flush_interval=1.0)
    roomy = Client(
        "http://bench",
        "bf_sdk_bench",
        transport=transport(config()),
        flush_interval=1.0,
        decision_memory_size=4 * n,
    )
    for c in (default, roomy):
        assert c.wait_until_ready(5.0)
    roomy.track("checkout-button", "someone")  # the flag's units are remembered from now on
    for i, route in enumerate(routes):
        client = default if i < 2 else roomy
        ids = [f"{i}-user-{k}" for k in range(n)]
        decisions = [client.decide("checkout-button", u) for u in ids] if i < 3 else []
        assert client.flush(60.0)
        tokens = [d.token or "" for d in decisions]
        track = client.track
        items: list[object] = [decisions, tokens, ids, ids][i]
        gc.collect()
        t0 = time.process_time_ns()
        for _ in items:
            pass
        empty = time.process_time_ns() - t0
        t0 = time.process_time_ns()
        if i >= 2:
            for u in ids:
                track("checkout-button", u)
        else:
            for x in items:
                track(x)  # type: ignore[arg-type]
        assert client.flush(60.0)
        out[route] = (time.process_time_ns() - t0 - empty) / n
    for c in (default, roomy):
        s = c.stats()
        assert s.decisions_dropped == 0 and s.duplicates == 0 and s.rewards_rejected == 0, s
        c.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--ids", type=int, default=200_000, help="distinct decisions per whole-cost route")
    args = ap.parse_args()
    n = args.batch_size
    ids = [f"user-{i}" for i in range(n)]
    perf = time.perf_counter_ns

    whole = whole_cost(args.ids)
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
    print("caller-only, repeats (after the first round every call is a duplicate, answered False):")
    for name in ("by Decision", "by token", "by flag + unit"):
        med, p99 = r[name][0] - overhead, r[name][1] - overhead
        print(f"track() {name:<26} median {med:8.1f} ns   p99 {p99:8.1f} ns   {med / f_med:5.1f}x floor")
    print(f"whole cost, process CPU per first conversion over {args.ids:,} distinct decisions, incl. flush:")
    for name, ns in whole.items():
        verdict = "ok" if ns <= 1000 else "OVER"
        print(f"track() {name:<26} {ns:8.1f} ns   {ns / f_med:5.1f}x floor   {verdict}")
    worst = max(whole.values())
    print(f"track() budget: whole cost <= 1000 ns: {'PASS' if worst <= 1000 else 'OVER'}")
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
