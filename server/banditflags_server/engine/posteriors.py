"""Posterior sampling of each arm's mean reward, and the share of draws in which each arm is best.

Binary rewards: a Beta posterior (uniform prior). Continuous rewards: the Student t marginal of a
Normal-Inverse-Gamma model with an empirical prior pooled over the arms. Large Beta shapes are sampled as
a skew-corrected normal (Cornish-Fisher) and large degrees of freedom as a normal, with the standard
normals taken from one fixed pool at offsets drawn from the caller's rng: fast enough for the recompute
budget (DESIGN.md §8) and deterministic given the rng.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "BETA_EXACT_BELOW",
    "T_EXACT_BELOW",
    "best_counts",
    "gaussian_posterior",
    "sample_posterior",
]

FloatArray = npt.NDArray[np.float64]

# Beta posteriors whose smaller shape is at least this are sampled as a skew-corrected normal (Cornish-Fisher,
# quantiles within ~1% of the Beta's down to 0.1%): exact Beta sampling costs ~4x a normal and would break
# the recompute budget (DESIGN.md §8). Smaller shapes (few successes or few failures) are sampled exactly.
BETA_EXACT_BELOW = 10.0
# Student t with at least this many degrees of freedom is sampled as a variance-matched normal.
T_EXACT_BELOW = 30.0


# Standard normals are most of the cost of a Thompson update (~9 ns each, 100,000 per update for 10 arms).
# Updates take them from one fixed pool at an offset drawn from their rng instead: within an update the
# arms get disjoint stretches (independent), across updates the offsets are independent. A copy costs
# ~1/40 of generating; the result stays deterministic given the rng.
_POOL_SIZE = 1 << 21
_pool: list[npt.NDArray[np.float32]] = []


def _normals(rng: np.random.Generator, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
    """Standard normal float32 values of ``shape`` (read-only when taken from the pool)."""
    total = math.prod(shape)
    if total > _POOL_SIZE // 4:
        return rng.standard_normal(shape, dtype=np.float32)
    if not _pool:
        block = np.random.default_rng(0x5EED_BF).standard_normal(_POOL_SIZE, dtype=np.float32)
        block.flags.writeable = False
        _pool.append(block)
    start = int(rng.integers(0, _POOL_SIZE - total + 1))
    return _pool[0][start : start + total].reshape(shape)


def sample_posterior(
    n: FloatArray,
    s: FloatArray,
    ss: FloatArray,
    reward: str,
    draws: int,
    rng: np.random.Generator,
    only: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.float32], float]:
    """(K, draws) posterior samples of each arm's mean reward, one contiguous row per arm, and their unit.

    Only the order of the samples within a draw matters, so they are returned on a standardised float32
    scale, ``(x - ref) / unit`` with one ``ref`` and ``unit > 0`` for all arms: half the memory traffic
    of float64, without losing precision for large continuous rewards. ``unit`` turns differences back
    into reward units. ``only``: sample just these arms (the Gaussian prior still pools all of them).
    """
    if reward == "binary" and only is not None:
        n, s, ss = n[only], s[only], ss[only]
    k = n.shape[0] if (only is None or reward == "binary") else int(only.sum())
    out = np.empty((k, draws), dtype=np.float32)
    if reward == "binary":
        sc = np.clip(s, 0.0, n)
        a, b = 1.0 + sc, 1.0 + n - sc
        ab = a + b
        mean = a / ab
        sd = np.sqrt(a * b / (ab * ab * (ab + 1.0)))
        ref, unit = float(mean.mean()), float(sd.max())
        exact = np.minimum(a, b) < BETA_EXACT_BELOW
        if exact.any():
            x = rng.beta(a[exact, None], b[exact, None], size=(int(exact.sum()), draws))
            out[exact] = (x - ref) / unit
        approx = ~exact
        if approx.any():
            aa, bb, abx = a[approx, None], b[approx, None], ab[approx, None]
            skew = 2.0 * (bb - aa) * np.sqrt(abx + 1.0) / ((abx + 2.0) * np.sqrt(aa * bb))
            block = out if approx.all() else np.empty((int(approx.sum()), draws), dtype=np.float32)
            z = _normals(rng, block.shape)
            # Cornish-Fisher: z + skew/6 (z^2 - 1) matches the Beta's skewness; in place to spare temporaries.
            y = z * z
            y -= 1.0
            y *= (skew / 6.0).astype(np.float32)
            y += z
            y *= (sd[approx, None] / unit).astype(np.float32)
            y += ((mean[approx, None] - ref) / unit).astype(np.float32)
            out[approx] = y
        return out, unit
    loc, scale, df = gaussian_posterior(n, s, ss)
    if only is not None:
        loc, scale, df = loc[only], scale[only], df[only]
    ref, unit = float(loc.mean()), float(scale.max())
    exact = df < T_EXACT_BELOW
    if exact.any():
        t = rng.standard_t(df[exact, None], size=(int(exact.sum()), draws))
        out[exact] = (loc[exact, None] - ref) / unit + (scale[exact, None] / unit) * t
    approx = ~exact
    if approx.any():
        dfa = df[approx, None]
        sd = scale[approx, None] * np.sqrt(dfa / (dfa - 2.0))
        block = out if approx.all() else np.empty((int(approx.sum()), draws), dtype=np.float32)
        z = np.multiply(_normals(rng, block.shape), (sd / unit).astype(np.float32), out=block)
        z += ((loc[approx, None] - ref) / unit).astype(np.float32)
        if block is not out:
            out[approx] = z
    return out, unit


def gaussian_posterior(
    n: FloatArray, s: FloatArray, ss: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Student-t marginal posterior (loc, scale, df) of each arm's mean under a Normal-Inverse-Gamma model.

    The prior is weakly informative and empirical: centred on the pooled mean of all arms with the pooled
    variance, worth one observation (kappa0 = nu0 = 1). It covers arms with n < 2 and a zero sample
    variance; for n in the hundreds the posterior is ~ mean s/n, scale sd/sqrt(n), df n.
    """
    total = float(n.sum())
    if total > 0:
        m0 = float(s.sum()) / total
        v0 = max(float(ss.sum()) / total - m0 * m0, 0.0)
    else:
        m0, v0 = 0.0, 1.0
    # Floor relative to the scale of the data: ties between identical arms are then broken by sampling noise.
    v0 = max(v0, 1e-12 * max(1.0, m0 * m0))
    kappa0 = nu0 = 1.0
    safe_n = np.where(n > 0, n, 1.0)
    xbar = np.where(n > 0, s / safe_n, m0)
    ssd = np.where(n > 0, np.maximum(ss - s * s / safe_n, 0.0), 0.0)
    kn = kappa0 + n
    loc = (kappa0 * m0 + n * xbar) / kn
    nun = nu0 + n
    sig2 = (nu0 * v0 + ssd + kappa0 * n / kn * (xbar - m0) ** 2) / nun
    return loc, np.sqrt(sig2 / kn), nun


def best_counts(samples: npt.NDArray[np.float32], maximize: bool) -> FloatArray:
    """Share of draws (columns) in which each arm (row) is best."""
    idx = samples.argmax(axis=0) if maximize else samples.argmin(axis=0)
    counts = np.bincount(idx, minlength=samples.shape[0]).astype(np.float64)
    return np.asarray(counts / samples.shape[1], dtype=np.float64)
