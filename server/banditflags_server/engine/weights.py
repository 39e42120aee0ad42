"""Arm statistics in, arm weights out: :func:`compute_weights`, the engine's entry point (DESIGN.md §6).

It validates and pools the stats (:mod:`~banditflags_server.engine.pooling`), holds the arms uniform
during burn-in, runs the policy (:mod:`~banditflags_server.engine.policies`) and the guards
(:mod:`~banditflags_server.engine.guards`), adds the floor and limits the step from the previous
weights. Inactive (killed/disabled) arms always get exactly 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

from banditflags_server.engine import guards, policies
from banditflags_server.engine.params import POLICIES, PolicyParams
from banditflags_server.engine.pooling import pool_arms, validate_stats
from banditflags_server.engine.segment_pooling import Prior

__all__ = ["compute_weights"]

FloatArray = npt.NDArray[np.float64]


def _active(params: PolicyParams, k: int) -> npt.NDArray[np.bool_]:
    if params.active is None:
        return np.ones(k, dtype=bool)
    if len(params.active) != k:
        raise ValueError(f"active must have {k} entries, got {len(params.active)}")
    mask = np.array([bool(a) for a in params.active], dtype=bool)
    if not mask.any():
        raise ValueError("at least one arm must be active")
    return mask


def _limit_step(w: FloatArray, params: PolicyParams, active: npt.NDArray[np.bool_]) -> FloatArray:
    """Move from the previous weights towards ``w`` by at most max_step on any arm."""
    if params.max_step is None or params.previous is None:
        return w
    prev = np.asarray(params.previous, dtype=np.float64)
    if prev.shape != w.shape or not np.all(np.isfinite(prev)) or np.any(prev < 0):
        raise ValueError(f"previous must be {w.shape[0]} non-negative finite weights")
    # A killed arm drops to 0 at once; the rest of the previous weights are renormalised.
    prev = np.where(active, prev, 0.0)
    if prev.sum() <= 0:
        return w
    prev = prev / prev.sum()
    diff = w - prev
    largest = float(np.abs(diff).max())
    if largest <= params.max_step:
        return w
    # Interpolating (rather than clipping each arm) keeps the sum at 1 and keeps any floor both ends respect.
    return np.asarray(prev + diff * (params.max_step / largest), dtype=np.float64)


def compute_weights(
    n: ArrayLike,
    s: ArrayLike,
    ss: ArrayLike,
    params: PolicyParams,
    rng: np.random.Generator,
    prior: Prior | None = None,
) -> FloatArray:
    """The policy's arm weights: K finite non-negative floats summing to 1.

    Order of operations for the learning policies: pool the periods (discounted by the half-life, if any);
    until every active arm has ``burn_in`` exposures (undiscounted), uniform over the active arms; else
    the policy's weights, through the stability and balance guards if set; then the floor
    ``w = f + (1 - K_active * f) * w`` over active arms; then the step limit towards ``params.previous``.
    Inactive arms get exactly 0. ``prior`` (a segment bandit's, from
    :func:`~banditflags_server.engine.segment_pooling.rule_priors`) adds its pseudo-observations to the
    pooled stats the policy sees and counts toward the burn-in; the guards see the data only. ``fixed``
    serves its weights (uniform if none) with no burn-in, floor or step limit. Deterministic given ``rng``.

    Raises ValueError on malformed stats or context (shapes, negative counts, all arms inactive).
    The floor is guaranteed when ``previous`` (if used) respects it too.

    Example:
        >>> import numpy as np
        >>> params = PolicyParams.from_dict({"name": "thompson", "burn_in": 10}, {"reward": "binary"}, 2)
        >>> w = compute_weights([1000, 1000], [50, 150], [50, 150], params, np.random.default_rng(0))
        >>> [round(float(x), 2) for x in w]
        [0.01, 0.99]
        >>> p = PolicyParams(name="epsilon_greedy", epsilon=0.2, floor=0.0, burn_in=0, stability=0.0)
        >>> compute_weights([10, 10], [2.0, 8.0], [2.0, 8.0], p, np.random.default_rng(1)).tolist()
        [0.1, 0.9]
    """
    n2, s2, ss2 = validate_stats(n, s, ss)
    k = n2.shape[1]
    active = _active(params, k)
    if params.name == "fixed":
        return policies.fixed(params, active)
    if params.name not in POLICIES:
        raise ValueError(f"unknown policy {params.name!r}")
    idx = np.flatnonzero(active)
    ka = idx.shape[0]
    raw_n = n2.sum(axis=0)[idx]
    if prior is not None:
        if len(prior.strength) != k:
            raise ValueError(f"prior must have {k} arms, got {len(prior.strength)}")
        raw_n = raw_n + np.asarray(prior.strength, dtype=np.float64)[idx]
    if ka == 1:
        wa = np.ones(1)
    elif np.any(raw_n < params.burn_in):
        wa = np.full(ka, 1.0 / ka)
    else:
        arms = pool_arms(n2[:, idx], s2[:, idx], ss2[:, idx], params)
        seen = arms if prior is None else prior.apply(arms, idx, params.reward)
        na, sa, ssa = seen.n, seen.s, seen.ss
        if params.name == "thompson":
            wa = policies.thompson(na, sa, ssa, params, rng)
        elif params.name == "top_two_thompson":
            wa = policies.top_two(na, sa, ssa, params, rng)
        elif params.name == "ucb1":
            wa = policies.ucb1(na, sa, ssa, params)
        else:
            wa = policies.epsilon_greedy(na, sa, params)
        wa = guards.stability_guard(wa / wa.sum(), arms, params)
        wa = guards.balance_guard(wa, arms, params)  # the stability guard keeps the sum at 1
        wa = wa / wa.sum()
    f = min(params.floor, 1.0 / ka)
    wa = f + (1.0 - ka * f) * wa
    w = np.zeros(k)
    w[idx] = wa
    w = _limit_step(w, params, active)
    w = np.where(active, np.maximum(w, 0.0), 0.0)
    return np.asarray(w / w.sum(), dtype=np.float64)
