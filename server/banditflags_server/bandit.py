"""The bandit engine: arm statistics in, arm weights out (DESIGN.md §6).

Pure numpy, no I/O, importable without the web server. Inputs are the per-arm sums of DESIGN.md §3:
``n`` exposures, ``s`` sum of rewards, ``ss`` sum of squared rewards, each of shape ``(K,)`` or
``(P, K)`` (P periods = allocation versions, oldest first).

Policies: ``thompson`` (probability that each arm is best, by Monte-Carlo over the posterior),
``top_two_thompson``, ``ucb1``, ``epsilon_greedy`` and ``fixed`` (a plain weighted rollout / A/B test).
The learning policies share burn-in, an additive floor, a maximum step per update, and a half-life discount
of old periods. Inactive (killed/disabled) arms always get exactly 0.

Example:
    >>> import numpy as np
    >>> params = PolicyParams.from_dict({"name": "thompson", "burn_in": 10}, {"reward": "binary"}, 2)
    >>> w = compute_weights([1000, 1000], [50, 150], [50, 150], params, np.random.default_rng(0))
    >>> [round(float(x), 2) for x in w]
    [0.01, 0.99]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

__all__ = [
    "DIRECTIONS",
    "POLICIES",
    "REWARDS",
    "ArmEstimate",
    "ParamError",
    "PolicyParams",
    "arm_estimates",
    "compute_weights",
]

FloatArray = npt.NDArray[np.float64]

POLICIES = ("thompson", "top_two_thompson", "ucb1", "epsilon_greedy", "fixed")
REWARDS = ("binary", "continuous")
DIRECTIONS = ("maximize", "minimize")

MAX_ARMS = 255
MAX_BURN_IN = 10**12
MIN_DRAWS, MAX_DRAWS = 100, 100_000

# Beta posteriors whose smaller shape is at least this are sampled as a skew-corrected normal (Cornish-Fisher,
# quantiles within ~1% of the Beta's down to 0.1%): exact Beta sampling costs ~4x a normal and would break
# the recompute budget (DESIGN.md §8). Smaller shapes (few successes or few failures) are sampled exactly.
_BETA_EXACT_BELOW = 10.0
# Student t with at least this many degrees of freedom is sampled as a variance-matched normal.
_T_EXACT_BELOW = 30.0
_Z975 = 1.959963984540054
# Two-sided 95% Student t quantiles for df = 1..30.
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


class ParamError(ValueError):
    """An invalid policy or objective parameter.

    ``field`` is the first offending field as a dotted path (``"policy.floor"``, ``"policy.weights[2]"``,
    ``"objective.reward"``), ``message`` says what is wrong, and ``errors`` lists every
    ``(field, message)`` found.

    Example:
        >>> e = ParamError("policy.floor", "must be in [0, 0.5]")
        >>> str(e), e.field
        ('policy.floor: must be in [0, 0.5]', 'policy.floor')
    """

    def __init__(self, field: str, message: str, errors: Sequence[tuple[str, str]] | None = None) -> None:
        self.field = field
        self.message = message
        self.errors: list[tuple[str, str]] = list(errors) if errors else [(field, message)]
        super().__init__(f"{field}: {message}")


def _is_num(x: object) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _check_fields(v: Mapping[str, Any], k: int | None) -> list[tuple[str, str]]:
    """Every problem with the user parameters in ``v`` (``k`` = number of arms, if known)."""
    errs: list[tuple[str, str]] = []

    def num(name: str, lo: float, hi: float, *, lo_open: bool = False, nullable: bool = False) -> None:
        x = v[name]
        field = f"policy.{name}"
        if x is None and nullable:
            return
        if not _is_num(x) or not math.isfinite(float(x)):
            errs.append((field, "must be a finite number" + (" or null" if nullable else "")))
            return
        xf = float(x)
        bad_lo = xf <= lo if lo_open else xf < lo
        if bad_lo or xf > hi:
            lb = "(" if lo_open else "["
            hi_s = "inf" if math.isinf(hi) else _fmt(hi)
            errs.append((field, f"must be in {lb}{_fmt(lo)}, {hi_s}], got {_fmt(xf)}"))

    def integer(name: str, lo: int, hi: int) -> None:
        x = v[name]
        if not _is_int(x):
            errs.append((f"policy.{name}", "must be an integer"))
        elif not lo <= int(x) <= hi:
            errs.append((f"policy.{name}", f"must be in [{lo}, {hi}], got {int(x)}"))

    if not isinstance(v["name"], str) or v["name"] not in POLICIES:
        errs.append(("policy.name", f"must be one of {', '.join(POLICIES)}"))
    if not isinstance(v["reward"], str) or v["reward"] not in REWARDS:
        errs.append(("objective.reward", f"must be one of {', '.join(REWARDS)}"))
    if not isinstance(v["direction"], str) or v["direction"] not in DIRECTIONS:
        errs.append(("objective.direction", f"must be one of {', '.join(DIRECTIONS)}"))
    # floor <= 1/K: K floors must fit in the unit of weight. A hair of slack so floor=1/3 passes for K=3.
    num("floor", 0.0, (1.0 / k) * (1 + 1e-12) if k else 1.0)
    integer("burn_in", 0, MAX_BURN_IN)
    num("max_step", 0.0, 1.0, lo_open=True, nullable=True)
    num("half_life", 0.0, math.inf, lo_open=True, nullable=True)
    integer("draws", MIN_DRAWS, MAX_DRAWS)
    num("epsilon", 0.0, 1.0)
    num("top_two_beta", 0.0, 1.0)
    w = v["weights"]
    if w is not None:
        if isinstance(w, (str, bytes)) or not isinstance(w, Sequence):
            errs.append(("policy.weights", "must be a list of numbers or null"))
        elif k is not None and len(w) != k:
            errs.append(("policy.weights", f"must have one weight per variant ({k}), got {len(w)}"))
        else:
            ok = True
            for i, x in enumerate(w):
                if not _is_num(x) or not math.isfinite(float(x)) or float(x) < 0:
                    errs.append((f"policy.weights[{i}]", "must be a non-negative finite number"))
                    ok = False
            if ok and (len(w) == 0 or math.fsum(float(x) for x in w) <= 0):
                errs.append(("policy.weights", "must have a positive sum"))
    return errs


_USER_FIELDS = (
    "name", "floor", "burn_in", "max_step", "half_life", "draws", "epsilon", "top_two_beta", "weights",
)  # fmt: skip


@dataclass(frozen=True)
class PolicyParams:
    """A flag's bandit policy, its objective, and the per-call context the engine needs.

    Build it from the API's JSON with :meth:`from_dict` (which validates everything and names the bad
    field); add the per-call context with :func:`dataclasses.replace`.

    Example:
        >>> import dataclasses
        >>> p = PolicyParams.from_dict({"name": "ucb1", "floor": 0.05}, {"direction": "minimize"}, 3)
        >>> p.to_dict()["floor"], p.direction
        (0.05, 'minimize')
        >>> p = dataclasses.replace(p, active=(True, False, True))
    """

    name: str = "thompson"
    reward: str = "binary"
    direction: str = "maximize"
    floor: float = 0.01
    burn_in: int = 100
    max_step: float | None = None
    half_life: float | None = None
    draws: int = 10_000
    epsilon: float = 0.1
    top_two_beta: float = 0.5
    weights: tuple[float, ...] | None = None
    # Per-call context, not user parameters (not in to_dict()).
    previous: tuple[float, ...] | None = None
    active: tuple[bool, ...] | None = None
    period_ages: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        errs = _check_fields({f.name: getattr(self, f.name) for f in fields(self)}, None)
        if errs:
            raise ParamError(errs[0][0], errs[0][1], errs)

    @classmethod
    def from_dict(
        cls, policy: Mapping[str, Any], objective: Mapping[str, Any] | None, k: int
    ) -> PolicyParams:
        """Validate the API's ``policy`` and ``objective`` objects for a flag with ``k`` arms.

        Missing parameters take their defaults; unknown policy parameters are an error; objective keys
        other than ``reward`` and ``direction`` (``unit``, ``credit_window``) are the server's business and
        ignored here. Fixed ``weights`` are normalised to sum to 1. Raises :class:`ParamError` naming the
        first bad field, with all of them in ``.errors``.

        Example:
            >>> PolicyParams.from_dict({"name": "fixed", "weights": [3, 1]}, None, 2).weights
            (0.75, 0.25)
            >>> try:
            ...     PolicyParams.from_dict({"floor": 0.6}, None, 2)
            ... except ParamError as e:
            ...     print(e.field, "|", e.message)
            policy.floor | must be in [0, 0.5], got 0.6
        """
        if not _is_int(k) or not 1 <= k <= MAX_ARMS:
            raise ValueError(f"k must be an int in [1, {MAX_ARMS}], got {k!r}")
        if not isinstance(policy, Mapping):
            raise ParamError("policy", "must be an object")
        if objective is not None and not isinstance(objective, Mapping):
            raise ParamError("objective", "must be an object")
        defaults = cls()
        values: dict[str, Any] = {f: getattr(defaults, f) for f in _USER_FIELDS}
        values["reward"] = defaults.reward
        values["direction"] = defaults.direction
        errs: list[tuple[str, str]] = []
        for key, val in policy.items():
            if key in _USER_FIELDS:
                values[key] = val
            else:
                errs.append((f"policy.{key}", "unknown parameter"))
        for key in ("reward", "direction"):
            if objective is not None and key in objective:
                values[key] = objective[key]
        errs.extend(_check_fields(values, k))
        if errs:
            raise ParamError(errs[0][0], errs[0][1], errs)
        w = values["weights"]
        weights = None
        if w is not None:
            total = math.fsum(float(x) for x in w)
            weights = tuple(float(x) / total for x in w)
        return cls(
            name=values["name"],
            reward=values["reward"],
            direction=values["direction"],
            floor=float(values["floor"]),
            burn_in=int(values["burn_in"]),
            max_step=None if values["max_step"] is None else float(values["max_step"]),
            half_life=None if values["half_life"] is None else float(values["half_life"]),
            draws=int(values["draws"]),
            epsilon=float(values["epsilon"]),
            top_two_beta=float(values["top_two_beta"]),
            weights=weights,
        )

    def to_dict(self) -> dict[str, Any]:
        """The user parameters with their values (the ``policy`` object of ``GET /v1/flags/{key}``).

        Example:
            >>> PolicyParams().to_dict()["name"]
            'thompson'
        """
        out: dict[str, Any] = {f: getattr(self, f) for f in _USER_FIELDS}
        out["weights"] = None if self.weights is None else list(self.weights)
        return out


# ---------------------------------------------------------------------------------------------------------
# Input handling


def _stats(n: ArrayLike, s: ArrayLike, ss: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
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


def _active(params: PolicyParams, k: int) -> npt.NDArray[np.bool_]:
    if params.active is None:
        return np.ones(k, dtype=bool)
    if len(params.active) != k:
        raise ValueError(f"active must have {k} entries, got {len(params.active)}")
    mask = np.array([bool(a) for a in params.active], dtype=bool)
    if not mask.any():
        raise ValueError("at least one arm must be active")
    return mask


def _discounted(
    n: FloatArray, s: FloatArray, ss: FloatArray, params: PolicyParams
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Pool the periods, weighting period p by 0.5 ** (age_p / half_life) when a half-life is set."""
    if params.half_life is None:
        return n.sum(axis=0), s.sum(axis=0), ss.sum(axis=0)
    p = n.shape[0]
    if params.period_ages is None:
        if p > 1:
            raise ValueError("half_life with (P, K) stats needs period_ages (one age per period)")
        return n.sum(axis=0), s.sum(axis=0), ss.sum(axis=0)
    ages = np.asarray(params.period_ages, dtype=np.float64)
    if ages.shape != (p,) or not np.all(np.isfinite(ages)):
        raise ValueError(f"period_ages must be {p} finite numbers, got {params.period_ages!r}")
    # A clock skew must not give a period more than full weight.
    d = 0.5 ** (np.maximum(ages, 0.0) / params.half_life)
    return d @ n, d @ s, d @ ss


# ---------------------------------------------------------------------------------------------------------
# Posterior sampling


def _sample_posterior(
    n: FloatArray, s: FloatArray, ss: FloatArray, reward: str, draws: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """(K, draws) posterior samples of each arm's mean reward, one contiguous row per arm.

    Only the order of the samples within a draw matters, so they are returned on a standardised float32
    scale, ``(x - ref) / scale`` with one ``ref`` and ``scale > 0`` for all arms: half the memory traffic
    of float64, without losing precision for large continuous rewards.
    """
    k = n.shape[0]
    out = np.empty((k, draws), dtype=np.float32)
    if reward == "binary":
        sc = np.clip(s, 0.0, n)
        a, b = 1.0 + sc, 1.0 + n - sc
        ab = a + b
        mean = a / ab
        sd = np.sqrt(a * b / (ab * ab * (ab + 1.0)))
        ref, unit = float(mean.mean()), float(sd.max())
        exact = np.minimum(a, b) < _BETA_EXACT_BELOW
        if exact.any():
            x = rng.beta(a[exact, None], b[exact, None], size=(int(exact.sum()), draws))
            out[exact] = (x - ref) / unit
        approx = ~exact
        if approx.any():
            aa, bb, abx = a[approx, None], b[approx, None], ab[approx, None]
            skew = 2.0 * (bb - aa) * np.sqrt(abx + 1.0) / ((abx + 2.0) * np.sqrt(aa * bb))
            block = out if approx.all() else np.empty((int(approx.sum()), draws), dtype=np.float32)
            z = rng.standard_normal(dtype=np.float32, out=block)
            # Cornish-Fisher: z + skew/6 (z^2 - 1) matches the Beta's skewness; in place to spare temporaries.
            y = z * z
            y -= 1.0
            y *= (skew / 6.0).astype(np.float32)
            y += z
            y *= (sd[approx, None] / unit).astype(np.float32)
            y += ((mean[approx, None] - ref) / unit).astype(np.float32)
            out[approx] = y
        return out
    loc, scale, df = _gaussian_posterior(n, s, ss)
    ref, unit = float(loc.mean()), float(scale.max())
    exact = df < _T_EXACT_BELOW
    if exact.any():
        t = rng.standard_t(df[exact, None], size=(int(exact.sum()), draws))
        out[exact] = (loc[exact, None] - ref) / unit + (scale[exact, None] / unit) * t
    approx = ~exact
    if approx.any():
        dfa = df[approx, None]
        sd = scale[approx, None] * np.sqrt(dfa / (dfa - 2.0))
        block = out if approx.all() else np.empty((int(approx.sum()), draws), dtype=np.float32)
        z = rng.standard_normal(dtype=np.float32, out=block)
        z *= (sd / unit).astype(np.float32)
        z += ((loc[approx, None] - ref) / unit).astype(np.float32)
        if block is not out:
            out[approx] = z
    return out


def _gaussian_posterior(
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


def _best_counts(samples: npt.NDArray[np.float32], maximize: bool) -> FloatArray:
    """Share of draws (columns) in which each arm (row) is best."""
    idx = samples.argmax(axis=0) if maximize else samples.argmin(axis=0)
    counts = np.bincount(idx, minlength=samples.shape[0]).astype(np.float64)
    return np.asarray(counts / samples.shape[1], dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# Policies (all on the active arms only; each returns weights summing to 1)


def _thompson(
    n: FloatArray, s: FloatArray, ss: FloatArray, p: PolicyParams, rng: np.random.Generator
) -> FloatArray:
    samples = _sample_posterior(n, s, ss, p.reward, p.draws, rng)
    return _best_counts(samples, p.direction == "maximize")


def _top_two(
    n: FloatArray, s: FloatArray, ss: FloatArray, p: PolicyParams, rng: np.random.Generator
) -> FloatArray:
    """Expected top-two Thompson allocation over the Monte-Carlo draws.

    The leader of a draw is played with probability beta; otherwise the challenger: the best arm of a
    draw whose best arm differs, i.e. arm j with probability p_j / (1 - p_i) given leader i. When no
    draw has a different best arm, the challenger is the runner-up within the draws.
    """
    maximize = p.direction == "maximize"
    samples = _sample_posterior(n, s, ss, p.reward, p.draws, rng)
    pb = _best_counts(samples, maximize)
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
            w += (1.0 - beta) * pb[i] * _best_counts(masked, maximize)
    return w


def _split_ties(score: FloatArray) -> FloatArray:
    best = score == score.max()
    return np.asarray(best / best.sum(), dtype=np.float64)


def _means(n: FloatArray, s: FloatArray, reward: str) -> FloatArray:
    safe_n = np.where(n > 0, n, 1.0)
    m = s / safe_n
    return np.clip(m, 0.0, 1.0) if reward == "binary" else m


def _ucb1(n: FloatArray, s: FloatArray, ss: FloatArray, p: PolicyParams) -> FloatArray:
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


def _epsilon_greedy(n: FloatArray, s: FloatArray, p: PolicyParams) -> FloatArray:
    k = n.shape[0]
    seen = n > 0
    if not seen.any():
        return np.full(k, 1.0 / k)
    m = _means(n, s, p.reward)
    score = np.where(seen, m if p.direction == "maximize" else -m, -np.inf)
    return np.asarray(p.epsilon / k + (1.0 - p.epsilon) * _split_ties(score), dtype=np.float64)


def _fixed(params: PolicyParams, active: npt.NDArray[np.bool_]) -> FloatArray:
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
    n: ArrayLike, s: ArrayLike, ss: ArrayLike, params: PolicyParams, rng: np.random.Generator
) -> FloatArray:
    """The policy's arm weights: K finite non-negative floats summing to 1.

    Order of operations for the learning policies: pool the periods (discounted by the half-life, if any);
    until every active arm has ``burn_in`` exposures (undiscounted), uniform over the active arms; else
    the policy's weights; then the floor ``w = f + (1 - K_active * f) * w`` over active arms; then the
    step limit towards ``params.previous``. Inactive arms get exactly 0. ``fixed`` serves its weights
    (uniform if none) with no burn-in, floor or step limit. Deterministic given ``rng``.

    Raises ValueError on malformed stats or context (shapes, negative counts, all arms inactive).
    The floor is guaranteed when ``previous`` (if used) respects it too.

    Example:
        >>> import numpy as np
        >>> p = PolicyParams(name="epsilon_greedy", epsilon=0.2, floor=0.0, burn_in=0)
        >>> compute_weights([10, 10], [2.0, 8.0], [2.0, 8.0], p, np.random.default_rng(1)).tolist()
        [0.1, 0.9]
    """
    n2, s2, ss2 = _stats(n, s, ss)
    k = n2.shape[1]
    active = _active(params, k)
    if params.name == "fixed":
        return _fixed(params, active)
    if params.name not in POLICIES:
        raise ValueError(f"unknown policy {params.name!r}")
    ne, se, sse = _discounted(n2, s2, ss2, params)
    idx = np.flatnonzero(active)
    ka = idx.shape[0]
    raw_n = n2.sum(axis=0)[idx]
    if ka == 1:
        wa = np.ones(1)
    elif np.any(raw_n < params.burn_in):
        wa = np.full(ka, 1.0 / ka)
    else:
        na, sa, ssa = ne[idx], se[idx], sse[idx]
        if params.name == "thompson":
            wa = _thompson(na, sa, ssa, params, rng)
        elif params.name == "top_two_thompson":
            wa = _top_two(na, sa, ssa, params, rng)
        elif params.name == "ucb1":
            wa = _ucb1(na, sa, ssa, params)
        else:
            wa = _epsilon_greedy(na, sa, params)
        wa = wa / wa.sum()
    f = min(params.floor, 1.0 / ka)
    wa = f + (1.0 - ka * f) * wa
    w = np.zeros(k)
    w[idx] = wa
    w = _limit_step(w, params, active)
    w = np.where(active, np.maximum(w, 0.0), 0.0)
    return np.asarray(w / w.sum(), dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# Estimates for the API


@dataclass(frozen=True)
class ArmEstimate:
    """One arm's pooled statistics: exposures, reward sum, mean with a 95% interval, P(best).

    ``mean``, the interval and ``p_best`` are None when the arm has no exposures; the interval is also
    None for a continuous arm with fewer than 2 exposures.

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


def arm_estimates(
    n: ArrayLike, s: ArrayLike, ss: ArrayLike, params: PolicyParams, rng: np.random.Generator
) -> list[ArmEstimate]:
    """Per-arm estimates pooled over all periods (no discount), for ``GET /v1/flags/{key}`` and ``/stats``.

    Binary: mean s/n with a Wilson score interval. Continuous: mean s/n with a Student t interval.
    ``p_best``: the share of ``params.draws`` posterior draws in which the arm is best (respecting the
    direction), among the arms with exposures.

    Example:
        >>> import numpy as np
        >>> est = arm_estimates([100, 0], [10, 0], [10, 0], PolicyParams(), np.random.default_rng(0))
        >>> round(est[0].mean, 3), est[0].p_best, est[1].mean
        (0.1, 1.0, None)
    """
    n2, s2, ss2 = _stats(n, s, ss)
    nn, sn, ssn = n2.sum(axis=0), s2.sum(axis=0), ss2.sum(axis=0)
    k = nn.shape[0]
    seen = np.flatnonzero(nn > 0)
    p_best = np.full(k, np.nan)
    if seen.shape[0] == 1:
        p_best[seen] = 1.0
    elif seen.shape[0] > 1:
        samples = _sample_posterior(nn[seen], sn[seen], ssn[seen], params.reward, params.draws, rng)
        p_best[seen] = _best_counts(samples, params.direction == "maximize")
    out: list[ArmEstimate] = []
    for i in range(k):
        ni, si, ssi = float(nn[i]), float(sn[i]), float(ssn[i])
        if ni <= 0:
            out.append(ArmEstimate(round(ni), si, None, None, None, None))
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
        out.append(ArmEstimate(round(ni), si, mean, lo, hi, float(p_best[i])))
    return out
