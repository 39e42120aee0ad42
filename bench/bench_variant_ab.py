"""A/B of ``Client.variant()`` on a plain flag (no targets, no rules): this tree's SDK against another
tree's, in one process, batches interleaved (alternating order), beside the bare bucketing floor.

It checks that a change to the decision path costs a plain flag nothing (issue 12: "a flag without
rules costs what it cost before"). The other tree's package is copied under the name
``banditflags_ab`` (its imports are relative) so both load side by side; each client runs its
background threads against an in-process mock server, tracing off.

Run (the other tree, e.g. the commit before targeting was wired in):
    git archive c502d6c sdk | tar -x -C /tmp/old
    .venv/bin/python bench/bench_variant_ab.py /tmp/old/sdk/banditflags [--batches 3000]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import config, floor_and_loop, transport

import banditflags


def timer(module: Any, ids: list[str]) -> tuple[Any, Callable[[], float]]:
    client = module.Client("http://ab", "bf_sdk_ab", transport=transport(config()), max_queue=10_000_000)
    assert client.wait_until_ready(5.0), "config did not load"
    variant, perf, n = client.variant, time.perf_counter_ns, len(ids)
    for u in ids * 50:
        variant("checkout-button", u)

    def batch() -> float:
        t0 = perf()
        for u in ids:
            variant("checkout-button", u)
        return (perf() - t0) / n

    return client, batch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("other", type=Path, help="the other tree's banditflags package directory")
    ap.add_argument("--batches", type=int, default=3000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bf-ab-"))
    shutil.copytree(args.other, tmp / "banditflags_ab")
    sys.path.insert(0, str(tmp))
    other = importlib.import_module("banditflags_ab")
    ids = [f"user-{i}" for i in range(100)]
    this_client, this = timer(banditflags, ids)
    other_client, that = timer(other, ids)
    floor, loop = floor_and_loop(ids)
    res: dict[str, list[float]] = {"loop": [], "floor": [], "this": [], "other": []}
    gc.disable()
    try:
        for i in range(args.batches):
            order = (("this", this), ("other", that)) if i % 2 else (("other", that), ("this", this))
            for name, fn in (("loop", loop), ("floor", floor), *order):
                res[name].append(fn())
    finally:
        gc.enable()
    lo = statistics.median(res["loop"])
    med = {k: statistics.median(v) - lo for k, v in res.items() if k != "loop"}
    print(f"floor mmh3.hash + table[bucket]: median {med['floor']:7.1f} ns")
    for name in ("other", "this"):
        ratio = med[name] / med["floor"]
        print(f"variant(), {name + ' tree':<10}      : median {med[name]:7.1f} ns   {ratio:.2f}x floor")
    print(f"this / other: {med['this'] / med['other']:.3f} (the machine is shared: repeat, read the ratio)")
    this_client.close()
    other_client.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
