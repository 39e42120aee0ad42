"""What a default ``max_step`` costs: the regret of the engine's defaults with a step limit, paired with
the same runs without one (common random numbers), and how far the weights jump in one update.

Issue 11: the demo's weights jumped from 33% to 98% at its first recompute. A step limit makes the move
gradual; this measures its price on the simulator's scenarios (docs/bandit.md, "max_step").

    python bench/bench_max_step.py                        # 300 replications, ~16 min on 2 cores
    python bench/bench_max_step.py --replications 50 --steps 0.2,0.3
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from banditflags_server.cli.sim_runner import run_once
from banditflags_server.cli.sim_scenarios import make_scenario

SCENARIOS = ("bernoulli", "gaussian", "revenue", "drift", "switch", "seasonal")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--replications", type=int, default=300)
    ap.add_argument("--steps", default="0.2,0.25,0.3", help="max_step values against none")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    limits: list[float | None] = [None, *(float(x) for x in args.steps.split(","))]
    print(
        "| scenario | max_step | regret (mean ± s.e.) | vs none (paired) | largest move of a weight in one "
        "update (median / max) | share to best at end |\n|---|---:|---:|---:|---:|---:|"
    )
    for name in args.scenarios.split(","):
        sc = make_scenario(name)
        started = time.monotonic()
        totals: dict[float | None, np.ndarray] = {}
        for limit in limits:
            spec = {"name": "thompson"} if limit is None else {"name": "thompson", "max_step": limit}
            runs = [run_once(sc, spec, [args.seed, r]) for r in range(args.replications)]
            regret = np.array([r.regret.sum() for r in runs])
            totals[limit] = regret
            jumps = np.array([np.abs(np.diff(r.shares, axis=0)).max() for r in runs])
            end = np.mean([r.shares[-1, r.best[-1]] for r in runs])
            se = regret.std(ddof=1) / math.sqrt(len(regret))
            paired = "-"
            if limit is not None:
                d = regret - totals[None]
                d_se = d.std(ddof=1) / math.sqrt(len(d))
                paired = (
                    f"{100 * d.mean() / totals[None].mean():+.1f}% ± {100 * d_se / totals[None].mean():.1f}"
                )
            shown = "none" if limit is None else f"{limit:g}"
            print(
                f"| {name} | {shown} | {regret.mean():,.1f} ± {se:,.1f} | {paired} | "
                f"{np.median(jumps):.2f} / {jumps.max():.2f} | {end:.2f} |"
            )
            sys.stdout.flush()
        print(f"<!-- {name}: {time.monotonic() - started:.0f} s -->")


if __name__ == "__main__":
    main()
