"""The bandit engine: arm statistics in, arm weights out (DESIGN.md §6).

Pure numpy, no I/O, importable without the web server. Inputs are the per-arm sums of DESIGN.md §3:
``n`` exposures, ``s`` sum of rewards, ``ss`` sum of squared rewards, each of shape ``(K,)`` or
``(P, K)`` (P periods = allocation versions, oldest first).

Policies: ``thompson`` (probability that each arm is best, by Monte-Carlo over the posterior),
``top_two_thompson``, ``ucb1``, ``epsilon_greedy`` and ``fixed`` (a plain weighted rollout / A/B test).
The learning policies share burn-in, an additive floor, a maximum step per update, a half-life discount
and a sliding window over old periods, per-period stratified estimates (an additive period effect, so a
moving base rate or late conversions bias no arm), an optional stability guard for arms that cannot yet
be told apart and an optional balance guard that caps every arm until the arms are shown to differ (an
A/A test stays balanced). Inactive (killed/disabled) arms always get exactly 0. Also here: the estimates
of ``/v1/flags/{key}/stats`` (P(best), expected loss), the SRM check, the winner signal and the
guardrail test. docs/bandit.md explains each parameter and shows measured quality.

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
    "SrmResult",
    "arm_estimates",
    "chi2_sf",
    "compute_weights",
    "guardrail_harm",
    "srm_check",
    "winner",
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
#: Default ``stability``: the guard is off (it costs regret, docs/bandit.md); 0.85 is the A/A-safe setting.
STABILITY = 0.0
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
    num("window", 0.0, math.inf, lo_open=True, nullable=True)
    num("stability", 0.0, 1.0)
    num("balance", 0.0, 1.0, lo_open=True, nullable=True)
    num("winner_p", 0.5, 1.0)
    integer("winner_min_n", 0, MAX_BURN_IN)
    if not isinstance(v["auto_promote"], (bool, np.bool_)):
        errs.append(("policy.auto_promote", "must be true or false"))
    if not isinstance(v["stratify"], (bool, np.bool_)):
        errs.append(("policy.stratify", "must be true or false"))
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
    "name", "floor", "burn_in", "max_step", "half_life", "window", "stratify", "stability", "balance",
    "draws", "epsilon", "top_two_beta", "weights", "winner_p", "winner_min_n", "auto_promote",
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
    window: float | None = None
    stratify: bool = True
    stability: float = STABILITY
    balance: float | None = None
    draws: int = 10_000
    epsilon: float = 0.1
    top_two_beta: float = 0.5
    weights: tuple[float, ...] | None = None
    # The winner signal (not used by compute_weights): P(best) >= winner_p with winner_min_n exposures on
    # every arm; auto_promote turns the flag into a 100% rollout of the winner.
    winner_p: float = 0.95
    winner_min_n: int = 1000
    auto_promote: bool = False
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
            window=None if values["window"] is None else float(values["window"]),
            stratify=bool(values["stratify"]),
            stability=float(values["stability"]),
            balance=None if values["balance"] is None else float(values["balance"]),
            draws=int(values["draws"]),
            epsilon=float(values["epsilon"]),
            top_two_beta=float(values["top_two_beta"]),
            weights=weights,
            winner_p=float(values["winner_p"]),
            winner_min_n=int(values["winner_min_n"]),
            auto_promote=bool(values["auto_promote"]),
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


def _fixed_effects(w: FloatArray, m: FloatArray) -> FloatArray:
    """Arm means under an additive period effect: weighted least squares of ``m[p, k] = a_p + b_k``.

    ``w`` are the cell weights (exposures, discounted), ``m`` the cell means. Solved by alternating
    projections (Gauss-Seidel on the normal equations), which converge quickly because every period has
    several arms (the floor). Returns ``b_k`` plus the weighted mean period effect, so a balanced design
    gives back the pooled means exactly. Arms without weight get the overall mean.
    """
    row_w = w.sum(axis=1)
    col_w = w.sum(axis=0)
    rows = row_w > 0
    cols = col_w > 0
    safe_r = np.where(rows, row_w, 1.0)
    safe_c = np.where(cols, col_w, 1.0)
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
    total = float(row_w.sum())
    base = float(row_w @ a) / total if total > 0 else 0.0
    out = b + base
    if cols.any():
        out = np.where(cols, out, float(col_w @ out) / float(col_w.sum()))
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class _Arms:
    """What the policies see per active arm: an effective sample size and sums consistent with it.

    ``n`` is the effective number of exposures (the discounted count), ``s`` and ``ss``
    are ``n * mean`` and ``n * (var + mean^2)`` with the (stratified) mean and the within-period variance
    of one reward, so the posterior samplers work on them exactly as on raw sums.
    """

    n: FloatArray
    s: FloatArray
    ss: FloatArray


def _arms(n: FloatArray, s: FloatArray, ss: FloatArray, params: PolicyParams) -> _Arms:
    """Pool ``(P, K)`` stats into per-arm effective stats: discount, window and stratification."""
    p = n.shape[0]
    d = _period_weights(p, params)
    stratify = params.stratify and p > 1 and n.shape[1] > 1
    if d is None and not stratify:
        return _Arms(n.sum(axis=0), s.sum(axis=0), ss.sum(axis=0))
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
        return _Arms(n_eff, se, se.copy())
    # Within-period variance of one reward: a moving base rate is not noise of the arm.
    within = dd @ np.maximum(ss - s * s / safe_n, 0.0)
    var = within / safe_sw
    se = mean * n_eff
    return _Arms(n_eff, se, n_eff * (var + mean * mean))


# ---------------------------------------------------------------------------------------------------------
# Posterior sampling


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


def _sample_posterior(
    n: FloatArray,
    s: FloatArray,
    ss: FloatArray,
    reward: str,
    draws: int,
    rng: np.random.Generator,
    only: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.float32]:
    """(K, draws) posterior samples of each arm's mean reward, one contiguous row per arm.

    Only the order of the samples within a draw matters, so they are returned on a standardised float32
    scale, ``(x - ref) / unit`` with one ``ref`` and ``unit > 0`` for all arms: half the memory traffic
    of float64, without losing precision for large continuous rewards. ``only``: sample just these arms
    (the Gaussian prior still pools all of them).
    """
    return _sample_scaled(n, s, ss, reward, draws, rng, only)[0]


def _sample_scaled(
    n: FloatArray,
    s: FloatArray,
    ss: FloatArray,
    reward: str,
    draws: int,
    rng: np.random.Generator,
    only: npt.NDArray[np.bool_] | None = None,
) -> tuple[npt.NDArray[np.float32], float]:
    """:func:`_sample_posterior` and its ``unit`` (to turn differences back into reward units)."""
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
        exact = np.minimum(a, b) < _BETA_EXACT_BELOW
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
    loc, scale, df = _gaussian_posterior(n, s, ss)
    if only is not None:
        loc, scale, df = loc[only], scale[only], df[only]
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
        z = np.multiply(_normals(rng, block.shape), (sd / unit).astype(np.float32), out=block)
        z += ((loc[approx, None] - ref) / unit).astype(np.float32)
        if block is not out:
            out[approx] = z
    return out, unit


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
        exact = np.minimum(a, b) < _BETA_EXACT_BELOW
    else:
        mean, scale, df = _gaussian_posterior(n, s, ss)
        exact = df < _T_EXACT_BELOW
        var = scale * scale * df / np.maximum(df - 2.0, 1e-9)
    if not maximize:
        mean = -mean
    lead = int(np.argmax(mean))
    if exact[lead]:
        return np.ones(n.shape[0], dtype=bool)
    z = (mean[lead] - mean) / np.sqrt(var + var[lead])
    return np.asarray(exact | (z < _PRUNE_Z), dtype=bool)


def _thompson(
    n: FloatArray, s: FloatArray, ss: FloatArray, p: PolicyParams, rng: np.random.Generator
) -> FloatArray:
    maximize = p.direction == "maximize"
    keep = _contenders(n, s, ss, p.reward, maximize)
    if keep.all():
        return _best_counts(_sample_posterior(n, s, ss, p.reward, p.draws, rng), maximize)
    out = np.zeros(n.shape[0])
    if keep.sum() == 1:
        out[keep] = 1.0
        return out
    # The Gaussian prior is pooled over the arms: sample the contenders with the prior of all of them.
    samples = _sample_posterior(n, s, ss, p.reward, p.draws, rng, only=keep)
    out[keep] = _best_counts(samples, maximize)
    return out


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


def _mean_var(a: _Arms, reward: str) -> tuple[FloatArray, FloatArray, float]:
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


def _tied_with_leader(a: _Arms, params: PolicyParams) -> npt.NDArray[np.bool_]:
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


def _stability_guard(w: FloatArray, a: _Arms, params: PolicyParams) -> FloatArray:
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


def _differ(a: _Arms, params: PolicyParams) -> bool:
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


def _balance_guard(w: FloatArray, a: _Arms, params: PolicyParams) -> FloatArray:
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


def compute_weights(
    n: ArrayLike, s: ArrayLike, ss: ArrayLike, params: PolicyParams, rng: np.random.Generator
) -> FloatArray:
    """The policy's arm weights: K finite non-negative floats summing to 1.

    Order of operations for the learning policies: pool the periods (discounted by the half-life, if any);
    until every active arm has ``burn_in`` exposures (undiscounted), uniform over the active arms; else
    the policy's weights, through the stability and balance guards if set; then the floor
    ``w = f + (1 - K_active * f) * w`` over active arms; then the step limit towards ``params.previous``.
    Inactive arms get exactly 0. ``fixed`` serves its weights (uniform if none) with no burn-in, floor or
    step limit. Deterministic given ``rng``.

    Raises ValueError on malformed stats or context (shapes, negative counts, all arms inactive).
    The floor is guaranteed when ``previous`` (if used) respects it too.

    Example:
        >>> import numpy as np
        >>> p = PolicyParams(name="epsilon_greedy", epsilon=0.2, floor=0.0, burn_in=0, stability=0.0)
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
    idx = np.flatnonzero(active)
    ka = idx.shape[0]
    raw_n = n2.sum(axis=0)[idx]
    if ka == 1:
        wa = np.ones(1)
    elif np.any(raw_n < params.burn_in):
        wa = np.full(ka, 1.0 / ka)
    else:
        arms = _arms(n2[:, idx], s2[:, idx], ss2[:, idx], params)
        na, sa, ssa = arms.n, arms.s, arms.ss
        if params.name == "thompson":
            wa = _thompson(na, sa, ssa, params, rng)
        elif params.name == "top_two_thompson":
            wa = _top_two(na, sa, ssa, params, rng)
        elif params.name == "ucb1":
            wa = _ucb1(na, sa, ssa, params)
        else:
            wa = _epsilon_greedy(na, sa, params)
        wa = _stability_guard(wa / wa.sum(), arms, params)
        wa = _balance_guard(wa, arms, params)  # the stability guard keeps the sum at 1
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
    arms = _arms(n, s, ss, params)
    samples, unit = _sample_scaled(arms.n, arms.s, arms.ss, params.reward, params.draws, rng)
    maximize = params.direction == "maximize"
    p_best = _best_counts(samples, maximize)
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
    n2, s2, ss2 = _stats(n, s, ss)
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


# ---------------------------------------------------------------------------------------------------------
# Sample ratio mismatch, winner, guardrails


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
