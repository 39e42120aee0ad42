"""Empirical-Bayes pooling across a flag's segment bandits: each rule's prior from the flag's other data.

A flag's bandit rules (DESIGN.md §9) and its default allocation are *groups* g, each with per-arm stats.
The model: a group's mean reward on arm k is ``theta[g, k] = a_g + b_k + e[g, k]`` with a group level
``a_g`` (segments convert at different base rates), an arm effect ``b_k`` shared by the whole flag, and
an interaction ``e[g, k] ~ N(0, tau2)``: how much a segment's arm effects depart from the flag's.

* ``tau2`` is estimated from the between-group spread by the Paule-Mandel method of moments: the weighted
  residual sum of squares of the additive fit, with weights ``1 / (tau2 + v[g, k])`` (``v`` = sampling
  variance of the cell mean), equals its degrees of freedom. Rules that agree give ``tau2 = 0``.
* Rule r's prior on arm k is centred on ``a_r + b_k``, with ``b_k`` fitted on the *other* groups only
  (leave-one-out: a rule's data are not counted twice, weights from ``tau2``).
* Its variance is ``tau2_r + Var(b_k)``, where ``tau2_r`` is the rule's *own* departure from the flag:
  the same Paule-Mandel equation on its row alone (``sum_k (x[r, k] - a_r - b_k)^2 / (tau2_r + v[r, k]
  + Var(b_k)) = K - 1``). A common ``tau2`` would spread two odd segments' disagreement over every rule:
  the rules that agree would borrow too little and the odd ones too much (docs/bandit.md measured both).
* The prior is worth ``m = sigma2 / (tau2_r + Var(b_k))`` pseudo-observations (``sigma2`` = variance of
  one reward in the rule; binary: ``mu (1 - mu) / (tau2_r + Var(b_k)) - 1``, the Beta's), at most
  :data:`MAX_STRENGTH`, and 0 when below one observation. For a Beta-Bernoulli arm that is a
  ``Beta(1 + m mu, 1 + m (1 - mu))`` prior; for a continuous arm ``m`` observations at ``mu`` with the
  rule's within-arm variance. A rule without data yet gets the flag's ``tau2``.

So rules that agree borrow up to all the flag's data (the global bandit), rules that disagree borrow
little (independent bandits), and a rule's own data overrule its prior as they grow.
:func:`~banditflags_server.engine.weights.compute_weights` takes the :class:`Prior` (``prior=``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

from banditflags_server.engine.params import PolicyParams
from banditflags_server.engine.pooling import Arms, additive_fit, pool_arms, validate_stats

__all__ = ["DEFAULT", "MAX_STRENGTH", "GroupStats", "Prior", "between_variance", "rule_priors"]

FloatArray = npt.NDArray[np.float64]

#: Largest prior, in pseudo-exposures per arm: bounds how long a segment that starts to differ from the
#: flag takes to break away, whatever the estimate of tau2 says.
MAX_STRENGTH = 5000.0
#: A prior worth less than one observation is noise: dropped (the rules disagree).
MIN_STRENGTH = 1.0
#: The key of the default allocation's prior in :func:`rule_priors`' result (its rule id in the stats).
DEFAULT = ""


@dataclass(frozen=True)
class GroupStats:
    """One allocation's arm stats (the flag's default allocation or one bandit rule's), as for
    :func:`~banditflags_server.engine.weights.compute_weights`: ``(K,)`` or ``(P, K)`` with the age of
    each period in seconds (needed with ``half_life`` / ``window`` and several periods)."""

    n: ArrayLike
    s: ArrayLike
    ss: ArrayLike
    period_ages: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Prior:
    """A rule's prior per arm: ``strength`` pseudo-observations with mean ``mean`` and variance of one
    reward ``var`` (continuous rewards), added to the arm's pooled stats before the policy sees them.
    ``tau2`` is the variance of the rule's arm effects around the flag's that the prior assumes
    (its own departure; for reports).

    Example:
        >>> p = Prior.none(2)
        >>> p.strength, p.active
        ((0.0, 0.0), False)
    """

    mean: tuple[float, ...]
    strength: tuple[float, ...]
    var: tuple[float, ...]
    tau2: float = math.nan

    @classmethod
    def none(cls, k: int) -> Prior:
        """No prior: the rule learns from its own data only (``pooling: "off"``)."""
        zero = (0.0,) * k
        return cls(zero, zero, zero)

    @property
    def active(self) -> bool:
        """Whether any arm has a prior."""
        return any(x > 0 for x in self.strength)

    def apply(self, arms: Arms, idx: npt.NDArray[np.intp], reward: str) -> Arms:
        """``arms`` (the arms ``idx`` of the flag) with the prior's pseudo-observations added."""
        m = np.asarray(self.strength, dtype=np.float64)[idx]
        mu = np.asarray(self.mean, dtype=np.float64)[idx]
        n = arms.n + m
        s = arms.s + m * mu
        if reward == "binary":
            return Arms(n, s, s.copy())
        var = np.asarray(self.var, dtype=np.float64)[idx]
        return Arms(n, s, arms.ss + m * (mu * mu + var))


def _cells(
    groups: list[GroupStats], params: PolicyParams, idx: npt.NDArray[np.intp]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per group and active arm: effective exposures, mean, and the group's variance of one reward."""
    g, ka = len(groups), idx.shape[0]
    n, x, sig2 = np.zeros((g, ka)), np.zeros((g, ka)), np.zeros(g)
    for i, st in enumerate(groups):
        n2, s2, ss2 = validate_stats(st.n, st.s, st.ss)
        if n2.shape[1] <= int(idx.max()):
            raise ValueError(f"every group must have the flag's arms; one has {n2.shape[1]}")
        ctx = dataclasses.replace(params, period_ages=st.period_ages)
        arms = pool_arms(n2[:, idx], s2[:, idx], ss2[:, idx], ctx)
        seen = arms.n > 0
        safe = np.where(seen, arms.n, 1.0)
        n[i] = np.where(seen, arms.n, 0.0)
        x[i] = np.where(seen, arms.s / safe, 0.0)
        total = float(n[i].sum())
        if params.reward == "binary":
            p = (float(arms.s[seen].sum()) + 1.0) / (total + 2.0)  # smoothed: 0 of n still varies
            sig2[i] = p * (1.0 - p)
        elif total > 0:
            sig2[i] = float(np.maximum(arms.ss - arms.s * x[i], 0.0).sum()) / total
    if params.reward != "binary":
        # A group without data (or without spread) gets the flag's pooled variance of one reward.
        tot = float(n.sum())
        pooled = float((sig2 * n.sum(axis=1)).sum()) / tot if tot > 0 else 1.0
        scale = float(np.abs(x).max()) if n.any() else 1.0
        pooled = max(pooled, 1e-12 * max(1.0, scale * scale))
        sig2 = np.where(sig2 > 0, sig2, pooled)
    return n, x, sig2


def _q(tau2: float, x: FloatArray, v: FloatArray, cell: npt.NDArray[np.bool_]) -> float:
    """The weighted residual sum of squares of the additive fit with weights 1 / (tau2 + v)."""
    w = np.where(cell, 1.0 / (tau2 + np.where(cell, v, 1.0)), 0.0)
    a, b = additive_fit(w, x)
    r = x - a[:, None] - b[None, :]
    return float((w * r * r).sum())


def between_variance(x: FloatArray, v: FloatArray, cell: npt.NDArray[np.bool_]) -> float:
    """Paule-Mandel estimate of the interaction variance ``tau2`` of ``x[g, k] = a_g + b_k + e``.

    ``v`` is each cell's sampling variance, ``cell`` marks the observed cells. NaN when the design has no
    degrees of freedom left (fewer than two groups with two arms each), 0 when the residuals are no
    larger than sampling noise explains.

    Example:
        >>> x = np.array([[0.10, 0.20], [0.30, 0.40], [0.50, 0.60]])  # same arm effect, other levels
        >>> between_variance(x, np.full((3, 2), 1e-4), np.ones((3, 2), bool))
        0.0
        >>> x = np.array([[0.10, 0.30], [0.30, 0.10]])  # opposite arm effects
        >>> round(between_variance(x, np.full((2, 2), 1e-4), np.ones((2, 2), bool)), 4)
        0.0399
    """
    rows = cell.sum(axis=1) >= 2  # a group with one observed arm only tells its own level
    cell = cell & rows[:, None]
    cols = cell.any(axis=0)
    dof = int(cell.sum()) - int(rows.sum()) - int(cols.sum()) + 1
    if dof <= 0 or rows.sum() < 2:
        return math.nan
    return _solve(lambda tau2: _q(tau2, x, v, cell), dof, float(x[cell].var()) + float(v[cell].max()))


def _solve(q: Callable[[float], float], dof: float, start: float) -> float:
    """The ``tau2 >= 0`` where the decreasing ``q(tau2)`` equals ``dof`` (0 if it is below at 0)."""
    if q(0.0) <= dof:
        return 0.0
    lo, hi = 0.0, max(start, 1e-300)
    while q(hi) > dof:
        hi *= 4.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if q(mid) > dof:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-3 * hi:  # tau2 to 0.1%: far finer than its noise
            break
    return hi


def _departure(x: FloatArray, b: FloatArray, var: FloatArray) -> float:
    """A rule's own interaction variance: how far its arm effects ``x - level`` are from the flag's ``b``
    beyond the noise ``var`` of each difference (Paule-Mandel on one row, the level fitted)."""

    def q(tau2: float) -> float:
        w = 1.0 / (tau2 + var)
        r = x - b
        r = r - float((w * r).sum() / w.sum())
        return float((w * r * r).sum())

    if x.shape[0] < 2:
        return 0.0
    return _solve(q, x.shape[0] - 1, float((x - b).var()) + float(var.max()))


def rule_priors(
    default: GroupStats | None, rules: Mapping[str, GroupStats], params: PolicyParams
) -> dict[str, Prior]:
    """Each bandit rule's prior, shrunk toward the flag's pooled arm means (see the module docstring).

    ``default`` is the default allocation's stats (None: not pooled), ``rules`` each bandit rule's; all
    have the flag's K arms. The result has a prior for every rule and, under the key :data:`DEFAULT`
    (``""``), for the default allocation, which borrows from the rules the same way. ``params`` is the
    flag's policy with its context (``active``); ``pooling: "off"``, the ``fixed`` policy, or too little
    data give every rule :meth:`Prior.none`.

    Example:
        >>> import numpy as np
        >>> p = PolicyParams(burn_in=0)
        >>> same = GroupStats(np.array([1000, 1000]), np.array([50, 80]), np.array([50, 80]))
        >>> small = GroupStats(np.array([20, 20]), np.array([1, 2]), np.array([1, 2]))
        >>> pr = rule_priors(same, {"a": same, "b": same, "small": small}, p)
        >>> pr["small"].strength[0] > 1000, round(pr["small"].mean[1] - pr["small"].mean[0], 3)
        (True, 0.03)
    """
    groups = ([default] if default is not None else []) + list(rules.values())
    names = ([DEFAULT] if default is not None else []) + list(rules)
    if not groups:
        return {}
    k = np.asarray(groups[0].n).shape[-1]
    out = {name: Prior.none(k) for name in names}
    if params.pooling == "off" or params.name == "fixed" or len(groups) < 2:
        return out
    active = np.ones(k, bool) if params.active is None else np.array(params.active, bool)
    idx = np.flatnonzero(active)
    n, x, sig2 = _cells(groups, params, idx)
    cell = n > 0
    v = np.where(cell, sig2[:, None] / np.where(cell, n, 1.0), np.inf)
    tau2 = between_variance(x, v, cell)
    if math.isnan(tau2):
        return out
    for i, name in enumerate(names):
        others = cell.copy()
        others[i] = False
        if others.sum(axis=0).max() == 0:
            continue
        w = np.where(others, 1.0 / (tau2 + np.where(others, v, 1.0)), 0.0)
        a, b = additive_fit(w, x)
        col_w = w.sum(axis=0)
        own = cell[i] & (col_w > 0)
        var_b = np.where(col_w > 0, 1.0 / np.where(col_w > 0, col_w, 1.0), np.inf)
        if own.any():
            # The rule's own departure from the flag: a rule that agrees borrows everything the others
            # know, one that differs little, whatever the other rules do.
            noise = v[i, own] + var_b[own]
            tau2_r = _departure(x[i, own], b[own], noise)
            wi = 1.0 / (tau2_r + noise)
            level = float((wi * (x[i, own] - b[own])).sum() / wi.sum())
        else:  # no data yet: the flag's level, weighted by each group's evidence
            tau2_r = tau2
            gw = w.sum(axis=1)
            level = float((gw * a).sum() / gw.sum())
        mu = level + b
        one = np.full(mu.shape[0], sig2[i])
        if params.reward == "binary":
            mu = np.clip(mu, 0.0, 1.0)
            # The Beta's own variance at the prior mean (kept off 0 so a 0% arm still has a prior).
            edge = np.clip(mu, 1e-3, 1.0 - 1e-3)
            one = edge * (1.0 - edge)
        strength = one / (tau2_r + var_b)
        if params.reward == "binary":
            strength = strength - 1.0  # a Beta(m mu, m (1 - mu)) has variance mu (1 - mu) / (m + 1)
        strength = np.where(strength >= MIN_STRENGTH, np.minimum(strength, MAX_STRENGTH), 0.0)
        full_mu, full_m, full_v = np.zeros(k), np.zeros(k), np.zeros(k)
        full_mu[idx], full_m[idx], full_v[idx] = mu, strength, one
        out[name] = Prior(
            tuple(float(z) for z in full_mu),
            tuple(float(z) for z in full_m),
            tuple(float(z) for z in full_v),
            tau2_r,
        )
    return out
