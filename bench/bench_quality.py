"""The bandit quality table of docs/bandit.md: every scenario, every policy, many replications.

Runs the simulator (``banditflags simulate``, the real engine in-process) on the stationary, drift,
switch, seasonal and A/A scenarios, prints one Markdown table per scenario and the quality checks of
issue 3 (regret against plain Thompson sampling, the A/A share), and writes one SVG plot per scenario.
Not a test: it prints numbers, it asserts nothing.

    python bench/bench_quality.py                      # 100 replications (200 for A/A), ~15 min on 2 cores
    python bench/bench_quality.py --replications 20    # quicker, noisier
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from banditflags_server.cli.simulate import Summary, make_scenario, parse_policies, simulate, svg_plot, table

POLICIES = (
    "uniform,thompson,ucb1,epsilon_greedy,banditflags,banditflags-stable,banditflags-balance,banditflags-ns"
)
SCENARIOS = ("bernoulli", "gaussian", "revenue", "drift", "switch", "seasonal", "aa")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--replications", type=int, default=100)
    ap.add_argument("--aa-replications", type=int, default=200)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--plots", default="docs/img", help="directory for the SVG plots ('' for none)")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    results: dict[str, dict[str, Summary]] = {}
    for name in args.scenarios.split(","):
        sc = make_scenario(name)
        reps = args.aa_replications if name == "aa" else args.replications
        started = time.monotonic()
        res = simulate(sc, parse_policies(POLICIES), reps, args.seed)
        results[name] = {r.policy: r for r in res}
        took = time.monotonic() - started
        print(
            f"\n### {name}: {sc.k} arms, {sc.steps} updates of {sc.batch} users, reward {sc.reward}, "
            f"mean delay {sc.delay:g} updates, {reps} replications ({took:.0f} s)\n"
        )
        print(table(sc, res))
        sys.stdout.flush()
        if args.plots:
            Path(args.plots).mkdir(parents=True, exist_ok=True)
            shown = [
                r
                for r in res
                if r.policy in ("uniform", "thompson", "banditflags", "banditflags-stable", "banditflags-ns")
            ]
            Path(args.plots, f"sim-{name}.svg").write_text(
                svg_plot(sc, shown, f"{name}: {reps} replications")
            )

    print("\n### checks\n")

    def ratio(sc: str, a: str, b: str) -> str:
        x, y = results[sc][a], results[sc][b]
        return f"{x.mean:,.1f} ± {x.se:,.1f} vs {y.mean:,.1f} ± {y.se:,.1f}: ratio {x.mean / y.mean:.2f}"

    for sc in ("bernoulli", "gaussian", "revenue", "seasonal"):
        if sc in results:
            print(f"- {sc}: banditflags vs thompson {ratio(sc, 'banditflags', 'thompson')}")
            for guard in ("banditflags-stable", "banditflags-balance"):
                print(f"- {sc}: guard cost, {guard} vs thompson {ratio(sc, guard, 'thompson')}")
                u, g, t = (results[sc][p].mean for p in ("uniform", guard, "thompson"))
                print(f"- {sc}: share of plain Thompson's gain over uniform that {guard} keeps: "
                      f"{(u - g) / (u - t):.3f}")  # fmt: skip
    for sc in ("drift", "switch"):
        if sc in results:
            print(f"- {sc}: banditflags-ns vs thompson {ratio(sc, 'banditflags-ns', 'thompson')}")
    if "aa" in results:
        for p in ("thompson", "banditflags", "banditflags-stable", "banditflags-balance", "banditflags-ns"):
            m = results["aa"][p].max_share
            print(f"- aa: {p}: runs with max share < 0.6: {100 * float((m < 0.6).mean()):.1f}%, "
                  f"95th percentile of the max share {float(np.percentile(m, 95)):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
