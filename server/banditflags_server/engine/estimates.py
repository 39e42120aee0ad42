"""Per-arm estimates for the API (``GET /v1/flags/{key}`` and ``/stats``).

Each arm's mean with a 95% interval (Wilson for binary rewards, Student t for continuous ones), and the
engine's view of it: the probability that it is best and the expected loss of serving it, by
Monte-Carlo over the same posterior the policies sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

from banditflags_server.engine.params import PolicyParams
from banditflags_server.engine.pooling import pool_arms, validate_stats
from banditflags_server.engine.posteriors import best_counts, sample_posterior

__all__ = ["ArmEstimate", "arm_estimates"]

FloatArray = npt.NDArray[np.float64]

_Z975 = 1.959963984540054
# Two-sided 95% Student t quantiles for df = 1..30.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


@dataclass(frozen=True)
class ArmEstimate:
    """One arm's statistics: exposures, reward sum, mean with a 95% interval, P(best), expected loss.

    ``n``, ``rewards_sum``, ``mean`` and the interval are pooled over all periods; ``p_best`` and
    ``expected_loss`` (how much reward per exposure is lost, on average over the posterior, by serving
    this arm instead of the best one) are the engine's view: stratified by period, discounted if the
    policy discounts. They are None when the arm has no exposures; the interval is also None for a
    continuous arm with fewer than 2 exposures.

    Example:
        >>> ArmEstimate(n=0, rewards_sum=0.0, mean=None, ci_low=None, ci_high=None, p_best=None).n
        0
    """

    n: int
    rewards_sum: float
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    p_best: float | None
    expected_loss: float | None = None


# Hand-written (a table, then a Cornish-Fisher expansion) to keep scipy out of the engine.
def _t975(df: int) -> float:
    """Two-sided 95% Student t quantile (table to 30, Cornish-Fisher expansion beyond: error < 1e-4)."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def _best_and_loss(
    n: FloatArray, s: FloatArray, ss: FloatArray, params: PolicyParams, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """P(best) and expected loss of each arm (all with data) under the engine's posterior."""
    arms = pool_arms(n, s, ss, params)
    samples, unit = sample_posterior(arms.n, arms.s, arms.ss, params.reward, params.draws, rng)
    maximize = params.direction == "maximize"
    p_best = best_counts(samples, maximize)
    top = samples.max(axis=0) if maximize else samples.min(axis=0)
    gap = (top[None, :] - samples) if maximize else (samples - top[None, :])
    loss = gap.mean(axis=1, dtype=np.float64) * unit
    return p_best, np.asarray(loss, dtype=np.float64)


def arm_estimates(
    n: ArrayLike, s: ArrayLike, ss: ArrayLike, params: PolicyParams, rng: np.random.Generator
) -> list[ArmEstimate]:
    """Per-arm estimates for ``GET /v1/flags/{key}`` and ``/stats`` (see :class:`ArmEstimate`).

    Binary: mean s/n with a Wilson score interval. Continuous: mean s/n with a Student t interval.
    ``p_best``: the share of ``params.draws`` posterior draws in which the arm is best (respecting the
    direction) among the active arms (``params.active``), once every active arm has exposures; None
    before that (an arm with one exposure must not read as "100% best" beside arms with none).

    Example:
        >>> import numpy as np
        >>> est = arm_estimates([100, 0], [10, 0], [10, 0], PolicyParams(), np.random.default_rng(0))
        >>> round(est[0].mean, 3), est[0].p_best, est[1].mean
        (0.1, None, None)
        >>> est = arm_estimates([100, 100], [10, 30], [10, 30], PolicyParams(), np.random.default_rng(0))
        >>> est[1].p_best > 0.99
        True
    """
    n2, s2, ss2 = validate_stats(n, s, ss)
    nn, sn, ssn = n2.sum(axis=0), s2.sum(axis=0), ss2.sum(axis=0)
    k = nn.shape[0]
    active = np.ones(k, dtype=bool)
    if params.active is not None and len(params.active) == k:
        active = np.array([bool(a) for a in params.active])
    mask = (nn > 0) & active
    if mask.sum() < active.sum():
        mask[:] = False  # an active arm without data: P(best) is not known yet
    seen = np.flatnonzero(mask)
    p_best = np.full(k, np.nan)
    loss = np.full(k, np.nan)
    if seen.shape[0] == 1:
        p_best[seen] = 1.0
        loss[seen] = 0.0
    elif seen.shape[0] > 1:
        p_best[seen], loss[seen] = _best_and_loss(n2[:, seen], s2[:, seen], ss2[:, seen], params, rng)
    out: list[ArmEstimate] = []
    for i in range(k):
        ni, si, ssi = float(nn[i]), float(sn[i]), float(ssn[i])
        if ni <= 0:
            out.append(ArmEstimate(round(ni), si, None, None, None, None, None))
            continue
        lo: float | None
        hi: float | None
        if params.reward == "binary":
            mean = min(max(si / ni, 0.0), 1.0)
            z2 = _Z975**2
            centre = (mean + z2 / (2 * ni)) / (1 + z2 / ni)
            half = _Z975 * math.sqrt(mean * (1 - mean) / ni + z2 / (4 * ni * ni)) / (1 + z2 / ni)
            lo, hi = max(centre - half, 0.0), min(centre + half, 1.0)
        else:
            mean = si / ni
            if ni >= 2:
                var = max(ssi - si * si / ni, 0.0) / (ni - 1)
                half = _t975(max(round(ni) - 1, 1)) * math.sqrt(var / ni)
                lo, hi = mean - half, mean + half
            else:
                lo = hi = None
        pb = None if math.isnan(p_best[i]) else float(p_best[i])
        el = None if math.isnan(loss[i]) else float(loss[i])
        out.append(ArmEstimate(round(ni), si, mean, lo, hi, pb, el))
    return out
