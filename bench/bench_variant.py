"""A decision's whole cost (DESIGN.md §8, issue 13): ``Client.variant()`` vs the bare bucketing floor.

Budget, over distinct unit ids with the client's threads running, tracing off:

- **whole cost** <= 1 us and <= 5x the floor: the *process* CPU (``time.process_time``: every thread,
  so the event worker's share is in it) per ``variant()``, from the first call until everything has
  been delivered (``flush()``), minus the same loop's cost without the call; the floor
  ``mmh3.hash(key) + table[bucket]`` is measured the same way in the same run;
- **caller-only median** beside it (``perf_counter_ns`` over batches of 100 calls): what the calling
  thread sees, which hides whatever the worker does later;
- **no exposure dropped**: ``stats().decisions_dropped`` and, in a tight loop of ``--tight`` seconds
  from 1 and from 4 threads, the exposures the (in-process) server received equal the calls made.

Run: .venv/bin/python bench/bench_variant.py [--ids 1000000] [--batches 2000] [--tight 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import threading
import time
from typing import Any

import httpx
import mmh3
from _common import SALT, TABLE, config, percentile

from banditflags import Client


class CountingServer:
    """``/v1/config`` and a ``/v1/events`` that adds up the exposures it accepts."""

    def __init__(self) -> None:
        self.payload = config()
        self.exposures = 0
        self.lock = threading.Lock()

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/config":
            return httpx.Response(200, json=self.payload, headers={"ETag": '"1"'})
        if request.url.path == "/v1/events":
            body = json.loads(request.content)
            with self.lock:
                self.exposures += sum(r["count"] for r in body["exposures"])
            return httpx.Response(202, json={"duplicate": False})
        return httpx.Response(404)


def make_client(server: CountingServer, python_only: bool = False) -> Client:
    mock = httpx.MockTransport(server.handler)
    saved = os.environ.get("BANDITFLAGS_NO_SPEEDUPS")
    os.environ["BANDITFLAGS_NO_SPEEDUPS"] = "1" if python_only else ""  # read when a client is made
    try:
        client = Client("http://bench", "bf_sdk_bench", transport=mock, flush_interval=1.0)
    finally:
        if saved is None:
            del os.environ["BANDITFLAGS_NO_SPEEDUPS"]
        else:
            os.environ["BANDITFLAGS_NO_SPEEDUPS"] = saved
    assert client.wait_until_ready(5.0), "config did not load"
    return client


def cpu_per_call(fn: Any, ids: list[str]) -> float:
    """Process CPU (all threads) per item of ``fn(ids)``, in ns."""
    gc.collect()
    t0 = time.process_time_ns()
    fn(ids)
    return (time.process_time_ns() - t0) / len(ids)


def whole_cost(
    n_ids: int, tag: str, method: str = "variant", python_only: bool = False
) -> tuple[float, float, float, int]:
    """(whole ns per ``method`` call, floor ns, empty-loop ns, drops) over ``n_ids`` distinct ids."""
    ids = [f"{tag}-user-{i}" for i in range(n_ids)]
    keys = [f"{SALT}.{u}" for u in ids]
    server = CountingServer()
    client = make_client(server, python_only)
    variant, h, table = getattr(client, method), mmh3.hash, TABLE

    def loop(xs: list[str]) -> None:
        for _ in xs:
            pass

    def floor(xs: list[str]) -> None:
        for k in xs:
            table[(h(k, 0, False) * 10_000) >> 32]

    def decide_all(xs: list[str]) -> None:
        for u in xs:
            variant("checkout-button", u)
        client.flush(60.0)

    empty = cpu_per_call(loop, ids)
    f = cpu_per_call(floor, keys) - empty
    w = cpu_per_call(decide_all, ids) - empty
    drops = client.stats().decisions_dropped + abs(n_ids - server.exposures)  # lost either way
    client.close()
    return w, f, empty, drops


def caller_median(batches: int) -> tuple[float, float, float]:
    """Caller-only: (median ns, p99 ns, floor median ns) over batches of 100 distinct ids."""
    server = CountingServer()
    client = make_client(server)
    variant, h, table, perf = client.variant, mmh3.hash, TABLE, time.perf_counter_ns
    n = 100
    id_batches = [[f"c{b}-{i}" for i in range(n)] for b in range(batches)]
    key_batches = [[f"{SALT}.{u}" for u in ids] for ids in id_batches]
    v, fl, lp = [], [], []
    gc.disable()
    try:
        for ids, keys in zip(id_batches, key_batches, strict=True):
            t0 = perf()
            for _ in ids:
                pass
            t1 = perf()
            for k in keys:
                table[(h(k, 0, False) * 10_000) >> 32]
            t2 = perf()
            for u in ids:
                variant("checkout-button", u)
            t3 = perf()
            lp.append((t1 - t0) / n)
            fl.append((t2 - t1) / n)
            v.append((t3 - t2) / n)
    finally:
        gc.enable()
    client.close()
    o = statistics.median(lp)
    return statistics.median(v) - o, percentile(v, 0.99) - o, statistics.median(fl) - o


def tight_loop(threads: int, seconds: float) -> tuple[int, int, int]:
    """``threads`` threads call variant() as fast as they can: (calls, server count, drops)."""
    server = CountingServer()
    client = make_client(server)
    counts = [0] * threads
    stop = threading.Event()

    def run(t: int) -> None:
        variant, n = client.variant, 0
        while not stop.is_set():
            for i in range(1000):
                variant("checkout-button", f"t{t}-{n + i}")
            n += 1000
        counts[t] = n

    ws = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in ws:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in ws:
        w.join()
    assert client.flush(60.0)
    drops = client.stats().decisions_dropped
    client.close()
    return sum(counts), server.exposures, drops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids", type=int, default=1_000_000, help="distinct ids per whole-cost run")
    ap.add_argument("--repeat", type=int, default=3, help="whole-cost runs (the median is reported)")
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--tight", type=float, default=10.0, help="seconds of each tight loop")
    args = ap.parse_args()

    runs = [whole_cost(args.ids, f"r{r}") for r in range(args.repeat)]
    w = statistics.median(r[0] for r in runs)
    f = statistics.median(r[1] for r in runs)
    drops = sum(r[3] for r in runs)
    c_med, c_p99, c_floor = caller_median(args.batches)
    print(f"whole cost: process CPU per variant() over {args.ids:,} distinct ids, with flush:")
    print(f"  variant()                     : {w:7.1f} ns   (runs: {', '.join(f'{r[0]:.0f}' for r in runs)})")
    print(f"  floor mmh3.hash + table lookup: {f:7.1f} ns   (runs: {', '.join(f'{r[1]:.0f}' for r in runs)})")
    print(f"  ratio to the floor            : {w / f:7.2f}x  (budget: <= 1000 ns and <= 5x)")
    print(f"caller-only (batches of 100 distinct ids): median {c_med:.1f} ns, p99 {c_p99:.1f} ns,")
    print(f"  floor median {c_floor:.1f} ns, ratio {c_med / c_floor:.2f}x")
    print(f"exposures dropped in the whole-cost runs: {drops}")
    # decide() (the full record; no budget of its own): compiled where the extension is built, and
    # the Python path alone, on fresh distinct ids each.
    for label, python_only in (("compiled", False), ("Python alone", True)):
        d_runs = [whole_cost(args.ids, f"d{r}{label[0]}", "decide", python_only) for r in range(args.repeat)]
        d_drops = sum(r[3] for r in d_runs)
        print(
            f"  decide(), {label:<13}       : {statistics.median(r[0] for r in d_runs):7.1f} ns   "
            f"(runs: {', '.join(f'{r[0]:.0f}' for r in d_runs)}; dropped {d_drops}; no budget)"
        )
    ok = w <= 1000 and w <= 5 * f and drops == 0
    for threads in (1, 4):
        calls, got, dropped = tight_loop(threads, args.tight)
        same = calls == got and dropped == 0
        ok = ok and same
        print(
            f"tight loop {args.tight:g} s, {threads} thread(s): {calls:,} calls "
            f"({calls / args.tight / 1e6:.2f} M/s), "
            f"server counted {got:,}, dropped {dropped}: {'exact' if same else 'LOST'}"
        )
    print("PASS" if ok else "OVER BUDGET")


if __name__ == "__main__":
    main()
