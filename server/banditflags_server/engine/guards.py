"""The guards that keep arms which the data cannot tell apart from drifting to unequal traffic.

The stability guard (``stability``) caps every arm tied with the leader at a share of the tied arms'
weight; the balance guard (``balance``) caps every arm until the arms are shown not to be all equal, so an
A/A test stays balanced. Both decide with anytime-valid tests (a mixture sequential probability ratio
test; a mixture likelihood ratio), so checking at every update does not wear them out. Both are off by
default: they cost regret (docs/bandit.md).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from banditflags_server.engine.params import PolicyParams
from banditflags_server.engine.pooling import Arms

__all__ = ["balance_guard", "stability_guard"]

FloatArray = npt.NDArray[np.float64]

# The stability guard calls two arms distinguishable once a mixture sequential probability ratio test
# (mSPRT, normal mixture) of their difference exceeds 1/_GUARD_ALPHA. Under equal arms that happens with
# probability <= _GUARD_ALPHA however often it is checked, so an A/A test stays balanced over its whole life.
# The mixture's variance is the variance of a difference measured with _GUARD_N0 exposures per arm.
_GUARD_ALPHA = 0.1
_GUARD_N0 = 300
# The balance guard (``balance``) keeps every arm at or below ``balance`` of the traffic until a mixture
# likelihood ratio of "the arm means differ" against "all arms are equal" reaches 1/_BALANCE_ALPHA. Under
# equal arms that happens with probability <= _BALANCE_ALPHA however often it is checked (Ville's
# inequality), so an A/A test stays balanced over its whole life. The mixture puts the arm effects on
# N(0, tau^2) with tau^2 = (variance of one reward) / n0 for each n0 in _BALANCE_N0 (equal weights): an
# effect that n0 exposures per arm measure with a standard error of its own size. 300 cost the least on
# the Bernoulli and Gaussian scenarios of 150 / 300 / 600 / 1000 / 3000 (1000: a little less on revenue,
# more on Gaussian); bench/bench_aa_guard.py and docs/bandit.md have the numbers.
_BALANCE_ALPHA = 0.05
_BALANCE_N0: tuple[float, ...] = (300.0,)


def _mean_var(a: Arms, reward: str) -> tuple[FloatArray, FloatArray, float]:
    """Each arm's mean, the variance of that mean, and the pooled variance of one reward."""
    n = a.n
    if reward == "binary":
        m = (a.s + 1.0) / (n + 2.0)  # smoothed, so 0 of n still has a variance
        one = m * (1.0 - m)
        v = one / (n + 3.0)
    else:
        seen = n > 0
        safe = np.where(seen, n, 1.0)
        m = np.where(seen, a.s / safe, 0.0)
        one = np.where(seen, np.maximum(a.ss / safe - m * m, 0.0), 0.0)
        v = np.where(seen, one / safe, np.inf)
    total = float(n.sum())
    pooled = float(n @ one) / total if total > 0 else 0.0
    return m, v, pooled


def _tied_with_leader(a: Arms, params: PolicyParams) -> npt.NDArray[np.bool_]:
    """Arms the data cannot yet tell from the leader (anytime-valid mSPRT at level _GUARD_ALPHA)."""
    m, v, pooled = _mean_var(a, params.reward)
    if params.direction == "minimize":
        m = -m
    lead = int(np.argmax(m))
    diff = m[lead] - m
    tau2 = 2.0 * pooled / max(params.burn_in, _GUARD_N0)
    tiny = 1e-300 + 1e-24 * float(np.abs(m).max()) ** 2
    var = np.maximum(v[lead] + v, tiny)
    tau2 = max(tau2, tiny)
    with np.errstate(over="ignore", invalid="ignore"):
        log_lr = 0.5 * np.log(var / (var + tau2)) + tau2 * diff * diff / (2.0 * var * (var + tau2))
    tied = ~(np.nan_to_num(log_lr, nan=0.0) >= math.log(1.0 / _GUARD_ALPHA))
    tied[lead] = True
    return np.asarray(tied, dtype=bool)


def _cap(w: FloatArray, cap: float) -> FloatArray:
    """Water-filling: no entry above ``cap``, the excess going to the others in proportion to their weight
    (equally among those with none). ``sum(w)`` is kept; needs ``cap * len(w) >= sum(w)``."""
    out: FloatArray = w.copy()
    for _ in range(out.shape[0]):
        over = out > cap * (1 + 1e-12)
        if not over.any():
            break
        excess = float((out[over] - cap).sum())
        out[over] = cap
        free = out < cap * (1 - 1e-12)
        room = np.where(free, out, 0.0)
        if room.sum() > 0:
            out += excess * room / room.sum()
        else:
            out[free] += excess / max(int(free.sum()), 1)
    return out


def stability_guard(w: FloatArray, a: Arms, params: PolicyParams) -> FloatArray:
    """No arm tied with the leader gets more than a capped share of the tied arms' total weight.

    With m tied arms the cap is ``1/m + (1 - 1/m) * (1 - stability)`` of their total (3 arms at the
    default 0.85: 0.43; 2 arms: 0.575), the excess going to the other tied arms in proportion to the
    policy's weights. So identical arms cannot drift to wildly unequal traffic, while an arm that the
    data has told apart from the leader keeps the policy's weight, and the leader keeps the largest share.
    """
    if params.stability <= 0.0 or w.shape[0] < 2:
        return w
    tied = _tied_with_leader(a, params)
    count = int(tied.sum())
    mass = float(w[tied].sum())
    if count < 2 or mass <= 0.0:
        return w
    cap = 1.0 / count + (1.0 - 1.0 / count) * (1.0 - params.stability)
    out: FloatArray = w.copy()
    out[tied] = _cap(w[tied], cap * mass)
    return out


def _log_mix_lr(m: FloatArray, v: FloatArray, tau2: float) -> float:
    """Log likelihood ratio of "arm effects ~ N(0, tau2)" against "all arms equal" for arm means ``m``
    with variances ``v`` (normal approximation), the common mean integrated out with a flat prior."""

    def log_marginal(d: FloatArray) -> float:
        p = 1.0 / d
        sp = float(p.sum())
        q = float(p @ (m * m)) - float(p @ m) ** 2 / sp
        return -0.5 * (float(np.log(d).sum()) + math.log(sp) + q)

    return log_marginal(v + tau2) - log_marginal(v)


def _differ(a: Arms, params: PolicyParams) -> bool:
    """Whether the data shows that the arms are not all equal (anytime-valid mixture test)."""
    m, _, pooled = _mean_var(a, params.reward)
    if np.any(a.n <= 0) or pooled <= 0.0:
        return False
    # Under "all equal" every arm has the pooled variance: an arm's own (smaller, by chance) variance would
    # make its deviation look more significant than it is.
    if params.reward == "binary":
        mb = float(a.s.sum() + 1.0) / float(a.n.sum() + 2.0)
        pooled = mb * (1.0 - mb)
    v = pooled / a.n
    # Shift and scale so that the sums stay well conditioned for large rewards.
    ref, unit = float(m.mean()), math.sqrt(pooled)
    ms, vs = (m - ref) / unit, v / (unit * unit)
    lrs = [_log_mix_lr(ms, vs, 1.0 / n0) for n0 in _BALANCE_N0]
    top = max(lrs)
    log_avg = top + math.log(sum(math.exp(x - top) for x in lrs) / len(lrs))
    return log_avg >= math.log(1.0 / _BALANCE_ALPHA)


def balance_guard(w: FloatArray, a: Arms, params: PolicyParams) -> FloatArray:
    """Until the arms are shown not to be all equal, no arm's served share (after the floor) exceeds
    ``balance`` (at least 1/K); the excess goes to the other arms in proportion to their weight."""
    ka = w.shape[0]
    if params.balance is None or ka < 2 or params.balance >= 1.0:
        return w
    f = min(params.floor, 1.0 / ka)
    cap = max(params.balance, 1.0 / ka)
    pre = (cap - f) / (1.0 - ka * f) if ka * f < 1.0 else 1.0
    pre = max(pre, 1.0 / ka)
    if float(w.max()) <= pre or _differ(a, params):
        return w
    return _cap(w, pre)
