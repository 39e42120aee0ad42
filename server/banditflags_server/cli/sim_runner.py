"""The simulator's runs: the real bandit engine against a scenario's synthetic arms, and their summaries.

Every replication runs the server's own :func:`~banditflags_server.bandit.compute_weights` in this process,
the way the server's recompute loop does: users arrive in batches (one batch per update, ``--batch`` users);
each update is one allocation version (a period), with its age, the previous weights (for ``max_step``)
and only the rewards that have *arrived* by then (``--delay``: conversions arrive a geometric number of
updates after the exposure, credited to the exposure's period, as the SDK does). The true means may
drift or switch over time. The oracle always serves the arm that is best at that moment; regret is the
expected reward the policy lost against it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from banditflags_server.cli.sim_scenarios import FloatArray, Policy, Scenario
from banditflags_server.engine import PolicyParams, compute_weights


@dataclass
class RunResult:
    """One replication of one policy: per-update regret, served shares and the best arm."""

    regret: FloatArray  # (T,) expected regret of each update's batch
    shares: FloatArray  # (T, K) served weights
    best: npt.NDArray[np.int64]  # (T,) the best arm at each update


def _draw_rewards(
    sc: Scenario, counts: npt.NDArray[np.int64], mu: FloatArray, rng: np.random.Generator
) -> list[tuple[npt.NDArray[np.int64], FloatArray]]:
    """Per arm: (delay of each rewarded user, reward value); users with reward 0 are left out."""
    out = []
    q = sc.delay / (1.0 + sc.delay)  # geometric with mean `delay`
    for k, c in enumerate(counts):
        if sc.reward == "bernoulli":
            hits = int(rng.binomial(int(c), min(max(mu[k], 0.0), 1.0)))
            vals = np.ones(hits)
        elif sc.reward == "gaussian":
            vals = rng.normal(mu[k], sc.sd, int(c))
        else:  # revenue: convert with mu / value, then pay a log-normal amount with mean `value`
            hits = int(rng.binomial(int(c), min(max(mu[k] / sc.value, 0.0), 1.0)))
            sigma = 1.0
            vals = rng.lognormal(math.log(sc.value) - sigma * sigma / 2.0, sigma, hits)
        delays = (
            np.zeros(vals.shape[0], dtype=np.int64)
            if q <= 0
            else rng.geometric(1.0 - q, vals.shape[0]).astype(np.int64) - 1
        )
        out.append((delays, vals))
    return out


def run_once(
    sc: Scenario, spec: dict[str, Any] | None, seed: int | Sequence[int], *, draws: int | None = None
) -> RunResult:
    """One replication: update the weights ``sc.steps`` times with the real engine, serve, reward.

    Example:
        >>> from banditflags_server.cli.sim_scenarios import make_scenario
        >>> r = run_once(make_scenario("bernoulli", steps=5), {"name": "thompson"}, 1)
        >>> r.regret.shape, r.shares.shape
        ((5,), (5, 3))
    """
    rng_env = np.random.default_rng([*np.atleast_1d(seed).tolist(), 1])
    rng_pol = np.random.default_rng([*np.atleast_1d(seed).tolist(), 2])
    t_max, k = sc.steps, sc.k
    params: PolicyParams | None = None
    if spec is not None:
        params = PolicyParams.from_dict(spec, sc.objective, k)
        if draws is not None:
            params = dataclasses.replace(params, draws=draws)
    n = np.zeros((t_max, k))
    s = np.zeros((t_max, k))
    ss = np.zeros((t_max, k))
    horizon = t_max + 1
    arr_s = np.zeros((horizon, t_max, k))  # rewards arriving at update a, for period p, arm k
    arr_ss = np.zeros((horizon, t_max, k))
    regret = np.zeros(t_max)
    shares = np.zeros((t_max, k))
    best = sc.means.argmax(axis=1)
    previous: tuple[float, ...] | None = None
    uniform = np.full(k, 1.0 / k)
    step = sc.step_seconds
    for t in range(t_max):
        if params is None:
            w = uniform
        else:
            ages = tuple((t - (p + 0.5)) * step for p in range(t)) if t else ()
            if t == 0:
                pn = ps = pss = np.zeros((1, k))
                ages = (0.0,)
            else:
                pn, ps, pss = n[:t], s[:t], ss[:t]
            ctx = dataclasses.replace(params, previous=previous, period_ages=ages)
            w = compute_weights(pn, ps, pss, ctx, rng_pol)
            previous = tuple(float(x) for x in w)
        shares[t] = w
        mu = sc.means[t]
        counts = rng_env.multinomial(sc.batch, w)
        n[t] = counts
        regret[t] = float(counts @ (mu.max() - mu))
        for arm, (delays, vals) in enumerate(_draw_rewards(sc, counts, mu, rng_env)):
            if vals.shape[0] == 0:
                continue
            at = np.minimum(t + delays, horizon - 1)
            np.add.at(arr_s[:, t, arm], at, vals)
            np.add.at(arr_ss[:, t, arm], at, vals * vals)
        # What has arrived by the end of update t counts for the next weights.
        s += arr_s[t]
        ss += arr_ss[t]
    return RunResult(regret, shares, best)


@dataclass
class Summary:
    """Replications of one policy on one scenario, aggregated for the table and the plot."""

    policy: str
    regret: FloatArray  # (R,) total regret per replication
    curve: FloatArray  # (T,) mean cumulative regret
    shares: FloatArray  # (T, K) mean served weights
    best_share_end: FloatArray  # (R,) share to the best arm in the last update
    converge: FloatArray  # (R,) updates until the best arm keeps >= 50% (nan: never)
    max_share: FloatArray  # (R,) the largest share any arm got during the run
    best_share_curve: FloatArray = field(default_factory=lambda: np.zeros(0))  # (T,) mean share to best

    @property
    def mean(self) -> float:
        """Mean total regret."""
        return float(self.regret.mean())

    @property
    def se(self) -> float:
        """Standard error of the mean total regret."""
        r = self.regret.shape[0]
        return float(self.regret.std(ddof=1) / math.sqrt(r)) if r > 1 else 0.0


def _converge_time(res: RunResult, threshold: float = 0.5) -> float:
    """Updates after the last change of the best arm until its share stays >= threshold to the end."""
    best = res.best
    changes = np.flatnonzero(best[1:] != best[:-1])
    start = int(changes[-1]) + 1 if changes.shape[0] else 0
    share = res.shares[np.arange(best.shape[0]), best][start:]
    below = np.flatnonzero(share < threshold)
    if below.shape[0] == 0:
        return 0.0
    last = int(below[-1])
    if last == share.shape[0] - 1:
        return math.nan
    return float(last + 1)


def summarise(policy: str, runs: Sequence[RunResult]) -> Summary:
    """Aggregate the replications of one policy."""
    regret = np.array([r.regret.sum() for r in runs])
    curve = np.mean([np.cumsum(r.regret) for r in runs], axis=0)
    shares = np.mean([r.shares for r in runs], axis=0)
    idx = [np.arange(r.best.shape[0]) for r in runs]
    best_curve = np.mean([r.shares[i, r.best] for r, i in zip(runs, idx, strict=True)], axis=0)
    return Summary(
        policy=policy,
        regret=regret,
        curve=curve,
        shares=shares,
        best_share_end=np.array([r.shares[-1, r.best[-1]] for r in runs]),
        converge=np.array([_converge_time(r) for r in runs]),
        max_share=np.array([r.shares.max() for r in runs]),
        best_share_curve=best_curve,
    )


def simulate(
    sc: Scenario,
    policies: Sequence[Policy],
    replications: int,
    seed: int = 0,
    *,
    draws: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Summary]:
    """Run every policy ``replications`` times on the same seeds (common random numbers)."""
    total = replications * len(policies)
    done = 0
    out = []
    for pol in policies:
        runs = []
        for r in range(replications):
            runs.append(run_once(sc, pol.spec, [seed, r], draws=draws))
            done += 1
            if progress is not None:
                progress(done, total)
        out.append(summarise(pol.name, runs))
    return out
