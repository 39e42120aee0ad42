"""One server recompute cycle over 1,000 flags x 10 arms on SQLite (DESIGN.md §8: <= 2 s).

Builds a temporary database through the server's own store (flags, versions, arm stats with realistic
binary counts: 1,000-5,000 exposures per arm and cycle, rates 2-8%, each cycle's counts in the flag's
current allocation version, so the engine stratifies over a growing number of periods), then times
``recompute_due`` — loading the stats, the bandit engine (default policy: Thompson with stratified
estimates), the minimal-movement tables and the writes — for a few cycles.

    python bench/bench_recompute.py [--flags 1000] [--arms 10] [--cycles 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from banditflags_server.api.validation import validate_new_flag
from banditflags_server.engine.planning import new_flag
from banditflags_server.records import EventBatch, EventRow
from banditflags_server.service.recompute import recompute_due
from banditflags_server.settings import database_url
from banditflags_server.storage.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flags", type=int, default=1000)
    ap.add_argument("--arms", type=int, default=10)
    ap.add_argument("--cycles", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(database_url(str(Path(tmp) / "bench.db")))
        now = time.time()
        for i in range(args.flags):
            spec = validate_new_flag(
                {
                    "key": f"flag-{i:04d}",
                    "variants": [f"v{j}" for j in range(args.arms)],
                    "recompute_interval": 1,
                },
                60.0,
            )
            flag, first = new_flag(spec, rng, now)
            store.create_flag(flag, first)
        times = []
        version = {f"flag-{i:04d}": 1 for i in range(args.flags)}
        for cycle in range(args.cycles):
            exposures, rewards = [], []
            for i in range(args.flags):
                n = rng.integers(1000, 5000, size=args.arms)
                s = rng.binomial(n, rng.uniform(0.02, 0.08, size=args.arms))
                for arm in range(args.arms):
                    key = f"flag-{i:04d}"
                    v = version[key]
                    exposures.append(EventRow("exposures[0]", key, v, arm, int(n[arm])))
                    rewards.append(
                        EventRow("rewards[0]", key, v, arm, int(s[arm]), True, float(s[arm]), float(s[arm]))
                    )
            store.ingest(EventBatch(f"bench-{cycle}", exposures, rewards))
            started = time.perf_counter()
            results = recompute_due(store, rng, now=time.time() + 10 * (cycle + 1))
            times.append(time.perf_counter() - started)
            version.update({r.key: r.version for r in results})
            written = sum(r.written for r in results)
            print(
                f"cycle {cycle}: {len(results)} flags recomputed, {written} new versions, {times[-1]:.2f} s"
            )
        store.close()
    med = statistics.median(times)
    print(
        f"median cycle {med:.2f} s for {args.flags} flags x {args.arms} arms;"
        f" budget 2.00 s: ratio {med / 2.0:.2f}"
    )


if __name__ == "__main__":
    main()
