"""The statistical tests behind a flag's health: sample ratio mismatch, the winner signal, guardrails.

:func:`srm_check` tests the observed exposures against the served weights (chi-squared), :func:`winner`
names the arm whose P(best) passes the flag's threshold, and :func:`guardrail_harm` gives the
probability that an arm's guardrail metric is worse than the control's by more than the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from banditflags_server.engine.estimates import ArmEstimate

__all__ = ["SRM_P", "SrmResult", "chi2_sf", "guardrail_harm", "srm_check", "winner"]


# Hand-written (series and continued fraction of the regularised gamma) to keep scipy out of the engine.
def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for a chi-squared variable with ``df`` degrees of freedom (regularised gamma Q).

    Example:
        >>> round(chi2_sf(3.841458820694124, 1), 4), round(chi2_sf(10.0, 4), 4), chi2_sf(0.0, 2)
        (0.05, 0.0404, 1.0)
    """
    if df < 1:
        raise ValueError("df must be >= 1")
    if x <= 0:
        return 1.0
    a, z = df / 2.0, x / 2.0
    if z <= 0.0:  # x / 2 underflowed
        return 1.0
    lg = math.lgamma(a)
    if z < a + 1.0:  # series for P, then Q = 1 - P
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= z / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-z + a * math.log(z) - lg))
    # Continued fraction for Q (modified Lentz).
    tiny = 1e-300
    b = z + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return min(1.0, math.exp(-z + a * math.log(z) - lg) * h)


@dataclass(frozen=True)
class SrmResult:
    """Sample ratio mismatch: observed exposures against the served weights, per period and overall.

    ``periods`` holds ``(chi2, df, p_value)`` per period (None where it cannot be tested: no exposures
    or a single arm served); the overall test adds the periods' statistics and degrees of freedom.

    Example:
        >>> r = srm_check([[5000, 5000]], [[0.5, 0.5]])
        >>> r.p_value, r.mismatch
        (1.0, False)
    """

    chi2: float
    df: int
    p_value: float | None
    mismatch: bool
    periods: tuple[tuple[float, int, float] | None, ...]


#: A sample ratio mismatch is reported when the chi-squared p-value is below this (as GrowthBook does).
SRM_P = 0.001


def srm_check(observed: ArrayLike, weights: ArrayLike, threshold: float = SRM_P) -> SrmResult:
    """Chi-squared test of exposures ``observed[p, k]`` against the served ``weights[p, k]`` per period.

    An arm served with weight 0 that has exposures is a mismatch outright (p-value 0).

    Example:
        >>> srm_check([[5400, 4600]], [[0.5, 0.5]]).mismatch
        True
    """
    obs = np.atleast_2d(np.asarray(observed, dtype=np.float64))
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if obs.shape != w.shape:
        raise ValueError(f"observed {obs.shape} and weights {w.shape} must have the same shape")
    per: list[tuple[float, int, float] | None] = []
    total_chi2, total_df = 0.0, 0
    for o, wp in zip(obs, w, strict=True):
        n = float(o.sum())
        served = wp > 0
        if n <= 0 or wp.sum() <= 0:
            per.append(None)
            continue
        if np.any(o[~served] > 0):
            per.append((math.inf, max(int(served.sum()) - 1, 1), 0.0))
            total_chi2, total_df = math.inf, total_df + max(int(served.sum()) - 1, 1)
            continue
        if served.sum() < 2:
            per.append(None)
            continue
        expected = n * wp[served] / wp[served].sum()
        chi2 = float((((o[served] - expected) ** 2) / expected).sum())
        df = int(served.sum()) - 1
        per.append((chi2, df, chi2_sf(chi2, df)))
        total_chi2 += chi2
        total_df += df
    if total_df == 0:
        return SrmResult(0.0, 0, None, False, tuple(per))
    p = 0.0 if math.isinf(total_chi2) else chi2_sf(total_chi2, total_df)
    return SrmResult(total_chi2, total_df, p, p < threshold, tuple(per))


def winner(estimates: Sequence[ArmEstimate], p_threshold: float, min_n: int) -> int | None:
    """The arm with P(best) >= ``p_threshold`` once every arm with a P(best) has ``min_n`` exposures.

    Example:
        >>> e = [ArmEstimate(5000, 0, 0.1, 0, 0, 0.01), ArmEstimate(5000, 0, 0.2, 0, 0, 0.99)]
        >>> winner(e, 0.95, 1000), winner(e, 0.95, 10_000)
        (1, None)
    """
    rated = [i for i, e in enumerate(estimates) if e.p_best is not None]
    if len(rated) < 2 or any(estimates[i].n < min_n for i in rated):
        return None
    best = max(rated, key=lambda i: estimates[i].p_best or 0.0)
    return best if (estimates[best].p_best or 0.0) >= p_threshold else None


# Hand-written from math.erfc to keep scipy out of the engine.
def _norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def guardrail_harm(
    n: ArrayLike,
    s: ArrayLike,
    ss: ArrayLike,
    control: int,
    *,
    binary: bool,
    direction: str,
    tolerance: float,
    relative: bool,
) -> list[float | None]:
    """For each arm, the probability that its guardrail metric is worse than the control's by more
    than the tolerance (None for the control and for arms without exposures).

    ``n`` are exposures, ``s``/``ss`` the metric's sums per arm (pooled, shape ``(K,)``); a decision
    without a metric value counts as 0. "Worse" is higher for ``minimize`` (errors, latency), lower for
    ``maximize``. A relative tolerance is a fraction of the control's mean. Normal approximation of the
    difference of means (binary means are smoothed so that 0 errors still have a variance).

    Example:
        >>> harm = guardrail_harm([5000, 5000], [50, 150], [50, 150], 0, binary=True,
        ...                       direction="minimize", tolerance=0.2, relative=True)
        >>> harm[0], harm[1] > 0.99
        (None, True)
    """
    nn = np.asarray(n, dtype=np.float64)
    sn = np.asarray(s, dtype=np.float64)
    ssn = np.asarray(ss, dtype=np.float64)
    out: list[float | None] = [None] * nn.shape[0]
    if not 0 <= control < nn.shape[0] or nn[control] <= 0:
        return out

    def mean_var(i: int) -> tuple[float, float]:
        ni = float(nn[i])
        if binary:
            m = (float(sn[i]) + 0.5) / (ni + 1.0)
            m_raw = min(max(float(sn[i]) / ni, 0.0), 1.0)
            return m_raw, m * (1.0 - m) / ni
        m = float(sn[i]) / ni
        return m, max(float(ssn[i]) / ni - m * m, 0.0) / max(ni - 1.0, 1.0)

    mc, vc = mean_var(control)
    allowed = tolerance * abs(mc) if relative else tolerance
    sign = 1.0 if direction == "minimize" else -1.0
    for i in range(nn.shape[0]):
        if i == control or nn[i] <= 0:
            continue
        mi, vi = mean_var(i)
        excess = sign * (mi - mc) - allowed
        sd = math.sqrt(vi + vc)
        out[i] = (1.0 if excess > 0 else 0.0) if sd <= 0 else _norm_cdf(excess / sd)
    return out
