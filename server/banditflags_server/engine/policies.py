"""The policies: each turns the pooled stats of the active arms into weights summing to 1.

``thompson`` (the probability that each arm is best, by Monte-Carlo over the posterior),
``top_two_thompson``, ``ucb1``, ``epsilon_greedy`` and ``fixed`` (a plain weighted rollout / A/B test).
Burn-in, the floor, the guards and the step limit are applied around them by
:func:`~banditflags_server.engine.weights.compute_weights`.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from banditflags_server.engine.params import PolicyParams
from banditflags_server.engine.posteriors import (
    BETA_EXACT_BELOW,
    T_EXACT_BELOW,
    best_counts,
    gaussian_posterior,
    sample_posterior,
)

__all__ = ["epsilon_greedy", "fixed", "thompson", "top_two", "ucb1"]

FloatArray = npt.NDArray[np.float64]


# An arm whose posterior mean lies this many standard deviations (of the difference) below the leader's
# beats the leader in a draw with probability < 3e-7: in 10,000 draws the chance that pruning changes a
# single count is ~0.3%. Skewed small-count posteriors are never pruned. Most arms of a mature bandit are
# such arms, and sampling is the cost of a recompute (DESIGN.md §8).
_PRUNE_Z = 5.0


def _contenders(
    n: FloatArray, s: FloatArray, ss: FloatArray, reward: str, maximize: bool
) -> npt.NDArray[np.bool_]:
    """Arms that can be best in some posterior draw (see _PRUNE_Z)."""
    if reward == "binary":
        sc = np.clip(s, 0.0, n)
        a, b = 1.0 + sc, 1.0 + n - sc
        ab = a + b
        mean = a / ab
        var = a * b / (ab * ab * (ab + 1.0))
        exact = np.minimum(a, b) < BETA_EXACT_BELOW
    else:
        mean, scale, df = gaussian_posterior(n, s, ss)
        exact = df < T_EXACT_BELOW
        var = scale * scale * df / np.maximum(df - 2.0, 1e-9)
    if not maximize:
        mean = -mean
    lead = int(np.argmax(mean))
    if exact[lead]:
        return np.ones(n.shape[0], dtype=bool)
    z = (mean[lead] - mean) / np.sqrt(var + var[lead])
    return np.asarray(exact | (z < _PRUNE_Z), dtype=bool)


def thompson(
    n: FloatArray, s: FloatArray, ss: FloatArray, p: PolicyParams, rng: np.random.Generator
) -> FloatArray:
    """Each arm's probability of being best, by Monte-Carlo over the posterior (non-contenders get 0)."""
    maximize = p.direction == "maximize"
    keep = _contenders(n, s, ss, p.reward, maximize)
    if keep.all():
        return best_counts(sample_posterior(n, s, ss, p.reward, p.draws, rng)[0], maximize)
    out = np.zeros(n.shape[0])
    if keep.sum() == 1:
        out[keep] = 1.0
        return out
    # The Gaussian prior is pooled over the arms: sample the contenders with the prior of all of them.
    samples, _ = sample_posterior(n, s, ss, p.reward, p.draws, rng, only=keep)
    out[keep] = best_counts(samples, maximize)
    return out


def top_two(
    n: FloatArray, s: FloatArray, ss: FloatArray, p: PolicyParams, rng: np.random.Generator
) -> FloatArray:
    """Expected top-two Thompson allocation over the Monte-Carlo draws.

    The leader of a draw is played with probability beta; otherwise the challenger: the best arm of a
    draw whose best arm differs, i.e. arm j with probability p_j / (1 - p_i) given leader i. When no
    draw has a different best arm, the challenger is the runner-up within the draws.
    """
    maximize = p.direction == "maximize"
    samples, _ = sample_posterior(n, s, ss, p.reward, p.draws, rng)
    pb = best_counts(samples, maximize)
    beta = p.top_two_beta
    w = beta * pb
    for i in np.flatnonzero(pb):
        rest = pb.copy()
        rest[i] = 0.0
        other = float(rest.sum())
        if other > 0:
            w += (1.0 - beta) * pb[i] * rest / other
        else:
            masked = samples.copy()
            masked[i] = -np.inf if maximize else np.inf
            w += (1.0 - beta) * pb[i] * best_counts(masked, maximize)
    return w


def _split_ties(score: FloatArray) -> FloatArray:
    best = score == score.max()
    return np.asarray(best / best.sum(), dtype=np.float64)


def _means(n: FloatArray, s: FloatArray, reward: str) -> FloatArray:
    safe_n = np.where(n > 0, n, 1.0)
    m = s / safe_n
    return np.clip(m, 0.0, 1.0) if reward == "binary" else m


def ucb1(n: FloatArray, s: FloatArray, ss: FloatArray, p: PolicyParams) -> FloatArray:
    """All weight on the highest upper confidence bound (ties split); unplayed arms first."""
    seen = n > 0
    if not seen.all():
        return _split_ties(np.where(seen, 0.0, 1.0))
    m = _means(n, s, p.reward)
    if p.direction == "minimize":
        m = -m
    if p.reward == "continuous":
        # UCB1 assumes rewards in a unit range: divide by the spread of the rewards (4 pooled standard
        # deviations, ~95% of them) or of the arm means, whichever is larger.
        total = float(n.sum())
        mu = float(s.sum()) / total
        sd = math.sqrt(max(float(ss.sum()) / total - mu * mu, 0.0))
        spread = max(4.0 * sd, float(m.max() - m.min()))
        m = m / spread if spread > 0 else m * 0.0
    bonus = np.sqrt(2.0 * math.log(max(float(n.sum()), 1.0)) / n)
    return _split_ties(m + bonus)


def epsilon_greedy(n: FloatArray, s: FloatArray, p: PolicyParams) -> FloatArray:
    """``epsilon`` spread evenly, the rest on the best mean (ties split); uniform before any data."""
    k = n.shape[0]
    seen = n > 0
    if not seen.any():
        return np.full(k, 1.0 / k)
    m = _means(n, s, p.reward)
    score = np.where(seen, m if p.direction == "maximize" else -m, -np.inf)
    return np.asarray(p.epsilon / k + (1.0 - p.epsilon) * _split_ties(score), dtype=np.float64)


def fixed(params: PolicyParams, active: npt.NDArray[np.bool_]) -> FloatArray:
    """The configured weights (uniform if none) over the active arms, renormalised."""
    k = active.shape[0]
    if params.weights is None:
        w = np.ones(k)
    else:
        if len(params.weights) != k:
            raise ValueError(f"fixed weights must have {k} entries, got {len(params.weights)}")
        w = np.asarray(params.weights, dtype=np.float64)
    w = np.where(active, w, 0.0)
    if w.sum() <= 0:  # every weighted arm is inactive: spread over what is left
        w = active.astype(np.float64)
    return np.asarray(w / w.sum(), dtype=np.float64)
