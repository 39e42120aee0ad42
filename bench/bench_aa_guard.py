"""A/A guards against the issue-3 bar: balanced A/A without more than +10% regret on stationary problems.

Every candidate runs the simulator (the real engine in-process) on the scenarios and seeds of
bench/bench_quality.py (seed 2024, replication r uses seed [2024, r]; 100 replications, 200 for A/A) and
is compared with plain Thompson sampling (pooled, same 1% floor, same burn-in) on the same seeds. The
table gives each stationary scenario's regret change (mean of the paired differences ± its standard
error, in % of plain Thompson's regret) and the share of A/A runs in which no arm ever gets 0.6 of the
traffic. Candidates (docs/bandit.md, "A/A balance"):

- ``stability 0.85`` and ``balance 0.59``: the engine's two guards.
- ``eb-dl`` / ``eb-q13.8``: empirical-Bayes shrinkage in the Thompson posterior (normal approximation;
  between-arm variance tau^2 by DerSimonian-Laird, or a conservative version that stays 0 until
  Cochran's Q exceeds 13.8, the 99.9% point of chi-squared with 2 df; uniform while tau^2 = 0).
- ``temper p0``: Thompson's P(best) mixed with the uniform split by the posterior probability that the
  arms differ (the balance guard's mixture likelihood ratio with prior probability p0 of a difference).
- ``chi2 12.5``: the balance cap with a repeated significance test instead of the mixture likelihood
  ratio: lifted once Cochran's Q (chi-squared homogeneity statistic, pooled variance) reaches 12.5 at any
  update. Calibrated to the 100 updates of these runs (not anytime-valid: a longer A/A run crosses more
  often).
- ``oracle test`` / ``oracle test fill``: the balance cap lifted by a test no real guard can have: a
  sequential likelihood ratio that knows the scenario's true arm means (all but their order, which it
  averages over) and the common mean under "all equal", at the guard's threshold 20 (so A/A false lifts
  stay below 5% by Ville's inequality). It is the most powerful test of "all equal" against these arms,
  so its cost bounds from below what any A/A-safe cap-until-shown rule can cost. ``fill``: while capped,
  the excess goes to the next arms by rank (the runner-up first) instead of in proportion, which is the
  cheapest allocation under the cap when the ranking is right. For the revenue scenario the likelihood
  is the normal approximation with the true variance of one reward.
- ``lift at t``: an oracle bound: the balance cap until update t whatever the data, then plain Thompson.
  It shows how early any rule must let the leader past 0.6 to keep within +10%.

Not a test: it prints numbers, it asserts nothing.

    python bench/bench_aa_guard.py                          # ~10 min on 2 cores
    python bench/bench_aa_guard.py --replications 40 --candidates thompson,balance
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from multiprocessing import Pool
from typing import Any

import numpy as np
import numpy.typing as npt

from banditflags_server.cli.simulate import make_scenario, run_once
from banditflags_server.engine import guards, policies

FloatArray = npt.NDArray[np.float64]
PLAIN = {"name": "thompson", "stratify": False, "stability": 0.0}
CANDIDATES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (flag policy, experiment settings)
    "thompson": (PLAIN, {}),
    "banditflags": ({"name": "thompson"}, {}),
    "stability 0.85": ({"name": "thompson", "stability": 0.85}, {}),
    "balance 0.59": ({"name": "thompson", "balance": 0.59}, {}),
    "balance 0.59 alpha 0.1": ({"name": "thompson", "balance": 0.59}, {"alpha": 0.1}),
    "balance 0.59 n0 1000": ({"name": "thompson", "balance": 0.59}, {"n0": (1000.0,)}),
    "eb-dl": ({"name": "thompson"}, {"eb": 2.0}),
    "eb-q13.8": ({"name": "thompson"}, {"eb": 13.8}),
    "temper 0.05": ({"name": "thompson"}, {"temper": 0.05}),
    "chi2 12.5": ({"name": "thompson", "balance": 0.59}, {"chi2": 12.5}),
    "oracle test": ({"name": "thompson", "balance": 0.59}, {"oracle": 20.0}),
    "oracle test fill": ({"name": "thompson", "balance": 0.59}, {"oracle": 20.0, "fill": True}),
    "lift at 3": ({"name": "thompson", "balance": 0.59}, {"lift": 3}),
    "lift at 6": ({"name": "thompson", "balance": 0.59}, {"lift": 6}),
    "lift at 20": ({"name": "thompson", "balance": 0.59}, {"lift": 20}),
}
SCENARIOS = ("bernoulli", "gaussian", "revenue", "aa")


def _pooled_means(n: FloatArray, s: FloatArray, ss: FloatArray, reward: str) -> tuple[FloatArray, FloatArray]:
    """Arm means and their variances under "all equal" (pooled variance of one reward)."""
    m = s / n
    if reward == "binary":
        pb = float(s.sum() + 1.0) / float(n.sum() + 2.0)
        pooled = pb * (1.0 - pb)
    else:
        pooled = float(np.maximum(ss - s * s / n, 0.0).sum() / n.sum())
    return m, pooled / n


def _fill_cap(w: FloatArray, cap: float) -> FloatArray:
    """No entry above ``cap``; the excess goes to the others by rank (largest first), each up to cap."""
    out: FloatArray = np.minimum(w, cap)
    excess = float(w.sum() - out.sum())
    for i in np.argsort(-w, kind="stable"):
        add = min(excess, cap - float(out[i]))
        out[i] += add
        excess -= add
    return out


def _oracle_differ(scenario: str, threshold: float) -> Any:
    """A likelihood ratio test of the scenario's true arm means (any order) against all equal to their
    average, the mean of the orders' likelihood ratios reaching ``threshold``. A/A runs are tested
    against the Bernoulli scenario's arms (the A/A arms are at its average rate)."""
    sc = make_scenario("bernoulli" if scenario == "aa" else scenario)
    alt = sc.means[0]
    null = float(alt.mean())
    orders = [np.array(q) for q in itertools.permutations(alt.tolist())]
    # Revenue: conversion p = mean / value, then a log-normal amount with sigma 1 (E[x^2] = value^2 e).
    var = null * sc.value * math.e - null * null if sc.reward == "revenue" else sc.sd**2

    def differ(a: Any, params: Any) -> bool:
        logs = []
        for q in orders:
            if sc.reward == "bernoulli":
                ll = a.s @ np.log(q / null) + (a.n - a.s) @ np.log((1.0 - q) / (1.0 - null))
            else:
                ll = (a.s @ (q - null) - a.n @ (q * q - null * null) / 2.0) / var
            logs.append(float(ll))
        top = max(logs)
        return top + math.log(sum(math.exp(x - top) for x in logs) / len(logs)) >= math.log(threshold)

    return differ


def _install(settings: dict[str, Any], scenario: str) -> None:
    """Set the experiment's variant of the engine in this (worker) process."""
    orig_thompson, orig_differ = policies.thompson, guards._differ
    if settings.get("fill"):
        guards._cap = _fill_cap
    if "oracle" in settings:
        guards._differ = _oracle_differ(scenario, settings["oracle"])
        return
    guards._BALANCE_ALPHA = settings.get("alpha", guards._BALANCE_ALPHA)
    guards._BALANCE_N0 = settings.get("n0", guards._BALANCE_N0)
    if "lift" in settings:
        lift = settings["lift"]

        def differ(a: Any, params: Any) -> bool:
            return bool(float(a.n.sum()) >= lift * 1000 - 1)  # the scenarios serve 1,000 users per update

        guards._differ = differ
        return
    if "chi2" in settings:
        thr = settings["chi2"]

        def differ_q(a: Any, params: Any) -> bool:
            if np.any(a.n <= 0):
                return False
            m, v = _pooled_means(a.n, a.s, a.ss, params.reward)
            w = 1.0 / v
            mw = float(w @ m) / float(w.sum())
            return bool(float(w @ (m - mw) ** 2) >= thr)

        guards._differ = differ_q
        return
    if "eb" not in settings and "temper" not in settings:
        return

    def thompson(
        n: FloatArray, s: FloatArray, ss: FloatArray, p: Any, rng: np.random.Generator
    ) -> FloatArray:
        k = n.shape[0]
        m, v = _pooled_means(n, s, ss, p.reward)
        if p.direction == "minimize":
            m = -m
        if "temper" in settings:
            prior = settings["temper"]
            unit = math.sqrt(max(float(v[0] * n[0]), 1e-300))  # the pooled standard deviation
            le = guards._log_mix_lr((m - m.mean()) / unit, v / unit**2, 1.0 / guards._BALANCE_N0[0])
            lo = math.log(prior / (1.0 - prior)) + le
            q = 1.0 / (1.0 + math.exp(-lo)) if lo > -700 else 0.0
            return np.asarray(q * orig_thompson(n, s, ss, p, rng) + (1.0 - q) / k, dtype=np.float64)
        w = 1.0 / v
        mw = float(w @ m) / float(w.sum())
        cq = float(w @ (m - mw) ** 2)
        tau2 = max(0.0, (cq - settings["eb"]) / (float(w.sum()) - float((w * w).sum()) / float(w.sum())))
        if tau2 <= 0.0:
            return np.full(k, 1.0 / k)
        b = v / (v + tau2)
        mu = mw + (1.0 - b) * (m - mw)
        sd = np.sqrt((1.0 - b) * v + b * b / float(w.sum()))
        x = mu[:, None] + sd[:, None] * rng.standard_normal((k, p.draws))
        return np.asarray(np.bincount(x.argmax(axis=0), minlength=k) / p.draws, dtype=np.float64)

    policies.thompson = thompson
    del orig_differ


def _task(job: tuple[str, str, int, int]) -> list[tuple[float, float]]:
    cand, scenario, r0, r1 = job
    spec, settings = CANDIDATES[cand]
    _install(settings, scenario)
    sc = make_scenario(scenario)
    out = []
    for r in range(r0, r1):
        res = run_once(sc, spec, [2024, r])
        out.append((float(res.regret.sum()), float(res.shares.max())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--replications", type=int, default=100)
    ap.add_argument("--aa-replications", type=int, default=200)
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--procs", type=int, default=2)
    args = ap.parse_args()
    cands = [c.strip() for c in args.candidates.split(",")]
    if "thompson" not in cands:
        cands.insert(0, "thompson")
    jobs: list[tuple[str, str, int, int]] = []
    for c in cands:
        for sc in SCENARIOS:
            reps = args.aa_replications if sc == "aa" else args.replications
            step = max(reps // 4, 1)
            jobs += [(c, sc, r0, min(reps, r0 + step)) for r0 in range(0, reps, step)]
    started = time.monotonic()
    # maxtasksperchild=1: every job gets a fresh engine (the candidates patch module attributes).
    with Pool(args.procs, maxtasksperchild=1) as pool:
        parts = pool.map(_task, jobs, chunksize=1)
    res: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for (c, sc, _, _), part in zip(jobs, parts, strict=True):
        res.setdefault((c, sc), []).extend(part)
    arr = {key: np.array(v) for key, v in res.items()}
    print(f"{args.replications} replications ({args.aa_replications} A/A), seed 2024, "
          f"{time.monotonic() - started:.0f} s\n")  # fmt: skip
    print("| candidate | bernoulli | gaussian | revenue | A/A: runs with max share < 0.6 (95th pct) | both |")
    print("|---|---:|---:|---:|---:|---|")
    for c in cands:
        cells, ok = [], True
        for sc in SCENARIOS[:3]:
            a, b = arr[(c, sc)][:, 0], arr[("thompson", sc)][:, 0]
            d = (a - b) / b.mean()
            pct, se = 100.0 * float(d.mean()), 100.0 * float(d.std(ddof=1)) / math.sqrt(d.shape[0])
            cells.append(f"{a.mean():,.0f} ({pct:+.0f} ± {se:.0f}%)")
            ok &= pct <= 10.0
        m = arr[(c, "aa")][:, 1]
        share = 100.0 * float((m < 0.6).mean())
        ok &= share >= 95.0
        aa = f"{share:.1f}% ({float(np.percentile(m, 95)):.2f})"
        print(f"| {c} | {' | '.join(cells)} | {aa} | {'yes' if ok else 'no'} |")
    print()
    _aa_evidence()
    sys.stdout.flush()


def _aa_evidence(runs: int = 4000) -> None:
    """How often chance alone makes 3 equal arms look different: Cochran's Q (chi-squared, 2 df) of
    3 arms at 5%, 333 users per arm per update, watched at each of 100 updates."""
    rng = np.random.default_rng(1)
    conv = rng.binomial(333, 0.05, size=(runs, 100, 3)).cumsum(axis=1)
    n = 333.0 * np.arange(1, 101)[None, :, None]
    p = conv / n
    pb = p.mean(axis=2, keepdims=True)
    q = (((p - pb) ** 2) / (pb * (1.0 - pb) / n)).sum(axis=2).max(axis=1)
    for thr in (5.3, 10.5, 12.5, 13.8):
        print(f"- A/A, even split: Q reaches {thr} at some update in {100 * float((q >= thr).mean()):.0f}% "
              f"of {runs} runs")  # fmt: skip


if __name__ == "__main__":
    main()
