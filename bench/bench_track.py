"""``track()`` cost (budget: <= 1 us whole cost, tracing off) and the memory of a client holding 1,000 flags.

``track()`` is measured four ways on a client whose threads run, against the same floor as
``bench_variant.py``: by :class:`Decision` (the common case), by token string (a reward from another
process: the token is parsed) and by flag + unit id (of a unit the client served and remembers, and of
one it never served: bucketed now, its decision id hashed). The **whole cost** is the process CPU (every
thread) per first conversion of a distinct decision, including the flush that delivers it, over
``--rounds`` rounds of fresh clients (median, min and max printed); the caller-only median beside it
times repeats (duplicates, answered False: the cheaper path).

Every route runs on a client with the default ``decision_memory_size`` (100,000) except "served",
whose client must remember the 200,000 units it served (a memory of 800,000); a unit never served is
also timed on that larger memory, where every lookup is costlier (bigger dicts, more cache misses).
Both implementations are timed in the same run: the compiled fast path (``banditflags._speedups``,
what a client uses when it was built) and the Python method alone (``BANDITFLAGS_NO_SPEEDUPS=1``).

Memory: ``tracemalloc`` counts what the config
snapshot of 1,000 three-variant flags allocates (decoded 10,000-bucket tables, prebuilt decisions),
and the process RSS growth is shown next to it.

Run: .venv/bin/python bench/bench_track.py [--batches 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import compare, config, floor_and_loop, transport

from banditflags import Client

ROUTES = (
    "by Decision",
    "by token",
    "by flag + unit, served",
    "by flag + unit, not served",
    "not served, memory 800,000",
)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_client(compiled: bool, memory: int | None = None) -> Client:
    """A client of the compiled fast path or of the Python method alone (read at construction)."""
    if compiled:
        os.environ.pop("BANDITFLAGS_NO_SPEEDUPS", None)
    else:
        os.environ["BANDITFLAGS_NO_SPEEDUPS"] = "1"
    extra = {"decision_memory_size": memory} if memory else {}
    c = Client("http://bench", "bf_sdk_bench", transport=transport(config()), flush_interval=1.0, **extra)
    os.environ.pop("BANDITFLAGS_NO_SPEEDUPS", None)
    assert c.wait_until_ready(5.0) and c.speedups is compiled
    return c


def whole_cost(n: int, compiled: bool, tag: str) -> tuple[dict[str, float], int]:
    """Process CPU (all threads) per track() over ``n`` distinct decisions, including the flush that
    delivers them, minus the empty loop (binary conversions), per route; and the conversions dropped."""
    out: dict[str, float] = {}
    dropped = 0
    for i, route in enumerate(ROUTES):
        roomy = i in (2, 4)
        client = make_client(compiled, 4 * n if roomy else None)
        if i >= 2:
            client.track("checkout-button", "someone")  # the flag's units are remembered from now on
        ids = [f"{tag}-{i}-user-{k}" for k in range(n)]
        decisions = [client.decide("checkout-button", u) for u in ids] if i < 3 else []
        assert client.flush(60.0)
        tokens = [d.token or "" for d in decisions]
        track = client.track
        items: list[object] = [decisions, tokens, ids, ids, ids][i]
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
        s = client.stats()
        assert s.duplicates == 0 and s.rewards_rejected == 0, s
        dropped += s.decisions_dropped
        client.close()
    return out, dropped


def make_client_probe() -> bool:
    """Whether this install has the compiled fast path."""
    try:
        from banditflags import _speedups  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--ids", type=int, default=200_000, help="distinct decisions per whole-cost route")
    ap.add_argument("--rounds", type=int, default=3, help="whole-cost rounds (fresh clients each)")
    args = ap.parse_args()
    n = args.batch_size
    ids = [f"user-{i}" for i in range(n)]
    perf = time.perf_counter_ns

    has_compiled = make_client_probe()
    kinds = (True, False) if has_compiled else (False,)
    runs: dict[bool, list[dict[str, float]]] = {k: [] for k in kinds}
    dropped = {k: 0 for k in kinds}
    for r in range(args.rounds):
        for k in kinds:  # interleaved: both see the same machine state
            cost, lost = whole_cost(args.ids, k, f"r{r}{'c' if k else 'p'}")
            runs[k].append(cost)
            dropped[k] += lost
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
    print(
        f"caller-only ({'compiled' if client.speedups else 'Python'}), repeats"
        " (after the first round every call is a duplicate, answered False):"
    )
    for name in ("by Decision", "by token", "by flag + unit"):
        med, p99 = r[name][0] - overhead, r[name][1] - overhead
        print(f"track() {name:<26} median {med:8.1f} ns   p99 {p99:8.1f} ns   {med / f_med:5.1f}x floor")
    print(
        f"whole cost, process CPU per first conversion over {args.ids:,} distinct decisions, incl. flush"
        f" (median of {args.rounds} rounds [min-max]):"
    )
    worst = 0.0
    for k in kinds:
        label = "compiled fast path (_speedups)" if k else "Python method alone (BANDITFLAGS_NO_SPEEDUPS=1)"
        print(f"  {label}; conversions dropped: {dropped[k]}")
        for name in ROUTES:
            xs = [run[name] for run in runs[k]]
            med = statistics.median(xs)
            verdict = "ok" if med <= 1000 else "OVER"
            if k == kinds[0] and name != ROUTES[-1]:
                worst = max(worst, med)
            print(
                f"  track() {name:<28} {med:8.1f} ns [{min(xs):7.1f}-{max(xs):7.1f}]"
                f"   {med / f_med:5.1f}x floor   {verdict}"
            )
    if has_compiled:
        for name in ROUTES:
            ratio = statistics.median(r[name] for r in runs[False]) / statistics.median(
                r[name] for r in runs[True]
            )
            print(f"  compiled vs Python, {name:<28} {ratio:4.1f}x less CPU")
    print(
        f"track() budget (what a client runs, default memory): whole cost <= 1000 ns: "
        f"{'PASS' if worst <= 1000 else 'OVER'}"
    )
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
