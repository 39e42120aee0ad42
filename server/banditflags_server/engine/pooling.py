"""Pooling a flag's arm statistics over periods into what the policies see per arm.

Inputs are the per-arm sums of DESIGN.md §3: ``n`` exposures, ``s`` sum of rewards, ``ss`` sum of squared
rewards, each of shape ``(K,)`` or ``(P, K)`` (P periods = allocation versions, oldest first). Pooling
applies the half-life discount and the sliding window over old periods, and estimates the arm means
stratified by period (an additive period effect, so a moving base rate or late conversions bias no arm).
The result, :class:`Arms`, is an effective sample size with sums consistent with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

from banditflags_server.engine.params import MAX_ARMS, PolicyParams

__all__ = ["Arms", "additive_fit", "pool_arms", "validate_stats"]

FloatArray = npt.NDArray[np.float64]


def validate_stats(n: ArrayLike, s: ArrayLike, ss: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate and return n, s, ss as float arrays of shape (P, K)."""
    arrs = [np.asarray(x, dtype=np.float64) for x in (n, s, ss)]
    shape = arrs[0].shape
    for name, a in zip(("n", "s", "ss"), arrs, strict=True):
        if a.shape != shape:
            raise ValueError(f"n, s and ss must have the same shape; {name} has {a.shape}, n has {shape}")
        if a.ndim not in (1, 2) or a.shape[-1] < 1:
            raise ValueError(f"{name} must have shape (K,) or (P, K) with K >= 1, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite")
    if shape[-1] > MAX_ARMS:
        raise ValueError(f"at most {MAX_ARMS} arms, got {shape[-1]}")
    if np.any(arrs[0] < 0) or np.any(arrs[2] < 0):
        raise ValueError("n and ss must be non-negative")
    n2, s2, ss2 = (a.reshape(-1, shape[-1]) for a in arrs)
    return n2, s2, ss2


def _period_weights(p: int, params: PolicyParams) -> FloatArray | None:
    """Weight of each period: ``0.5 ** (age / half_life)``, 0 outside the window; None when all are 1."""
    if params.half_life is None and params.window is None:
        return None
    if params.period_ages is None:
        if p > 1:
            raise ValueError("half_life or window with (P, K) stats needs period_ages (one age per period)")
        return None
    ages = np.asarray(params.period_ages, dtype=np.float64)
    if ages.shape != (p,) or not np.all(np.isfinite(ages)):
        raise ValueError(f"period_ages must be {p} finite numbers, got {params.period_ages!r}")
    # A clock skew must not give a period more than full weight.
    ages = np.maximum(ages, 0.0)
    d = np.ones(p) if params.half_life is None else 0.5 ** (ages / params.half_life)
    if params.window is not None:
        inside = ages <= params.window
        inside[-1] = True  # the current period always counts, however long it has lasted
        d = np.where(inside, d, 0.0)
    return np.asarray(d, dtype=np.float64)


def additive_fit(w: FloatArray, m: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Weighted least squares of ``m[p, k] = a_p + b_k`` with cell weights ``w`` (0: no cell): ``(a, b)``.

    Solved by alternating projections (Gauss-Seidel on the normal equations), which converge quickly when
    every row has several columns. Rows or columns without weight get 0 (``b``: its weighted mean).
    Also used across segment bandits (:mod:`~banditflags_server.engine.segment_pooling`).
    """
    row_w = w.sum(axis=1)
    col_w = w.sum(axis=0)
    safe_r = np.where(row_w > 0, row_w, 1.0)
    safe_c = np.where(col_w > 0, col_w, 1.0)
    wm = w * m
    b = wm.sum(axis=0) / safe_c
    scale = float(np.abs(m).max()) + 1e-300
    a = np.zeros(w.shape[0])
    for _ in range(50):
        a = (wm.sum(axis=1) - w @ b) / safe_r
        nb = (wm.sum(axis=0) - a @ w) / safe_c
        done = float(np.abs(nb - b).max()) <= 1e-10 * scale
        b = nb
        if done:
            break
    return a, b


def _fixed_effects(w: FloatArray, m: FloatArray) -> FloatArray:
    """Arm means under an additive period effect: weighted least squares of ``m[p, k] = a_p + b_k``.

    ``w`` are the cell weights (exposures, discounted), ``m`` the cell means (:func:`additive_fit`).
    Returns ``b_k`` plus the weighted mean period effect, so a balanced design gives back the pooled
    means exactly. Arms without weight get the overall mean.
    """
    a, b = additive_fit(w, m)
    row_w = w.sum(axis=1)
    col_w = w.sum(axis=0)
    cols = col_w > 0
    total = float(row_w.sum())
    base = float(row_w @ a) / total if total > 0 else 0.0
    out = b + base
    if cols.any():
        out = np.where(cols, out, float(col_w @ out) / float(col_w.sum()))
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class Arms:
    """What the policies see per active arm: an effective sample size and sums consistent with it.

    ``n`` is the effective number of exposures (the discounted count), ``s`` and ``ss``
    are ``n * mean`` and ``n * (var + mean^2)`` with the (stratified) mean and the within-period variance
    of one reward, so the posterior samplers work on them exactly as on raw sums.
    """

    n: FloatArray
    s: FloatArray
    ss: FloatArray


def pool_arms(n: FloatArray, s: FloatArray, ss: FloatArray, params: PolicyParams) -> Arms:
    """Pool ``(P, K)`` stats into per-arm effective stats: discount, window and stratification."""
    p = n.shape[0]
    d = _period_weights(p, params)
    stratify = params.stratify and p > 1 and n.shape[1] > 1
    if d is None and not stratify:
        return Arms(n.sum(axis=0), s.sum(axis=0), ss.sum(axis=0))
    dd = np.ones(p) if d is None else d
    w = dd[:, None] * n
    sw = w.sum(axis=0)
    seen = sw > 0
    safe_sw = np.where(seen, sw, 1.0)
    # Discounted Thompson sampling: the evidence is the discounted count (forgetting widens the posterior,
    # which is what lets it follow a moving best arm), not the larger Kish size of the weighted mean.
    n_eff = sw
    safe_n = np.where(n > 0, n, 1.0)
    mean = _fixed_effects(w, s / safe_n) if stratify else (dd @ s) / safe_sw
    if params.reward == "binary":
        mean = np.clip(mean, 0.0, 1.0)
        se = mean * n_eff
        return Arms(n_eff, se, se.copy())
    # Within-period variance of one reward: a moving base rate is not noise of the arm.
    within = dd @ np.maximum(ss - s * s / safe_n, 0.0)
    var = within / safe_sw
    se = mean * n_eff
    return Arms(n_eff, se, n_eff * (var + mean * mean))
