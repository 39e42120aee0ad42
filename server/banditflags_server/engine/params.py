"""A flag's bandit policy parameters: their names, ranges and defaults, and their validation.

:class:`PolicyParams` holds the policy, the objective (reward kind and direction) and the per-call
context the engine needs; :meth:`PolicyParams.from_dict` validates the API's JSON and raises a
:class:`ParamError` naming every bad field. docs/bandit.md explains each parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

__all__ = [
    "DIRECTIONS",
    "MAX_ARMS",
    "MAX_BURN_IN",
    "MAX_DRAWS",
    "MAX_STEP",
    "MIN_DRAWS",
    "POLICIES",
    "POOLING",
    "REWARDS",
    "STABILITY",
    "ParamError",
    "PolicyParams",
]

POLICIES = ("thompson", "top_two_thompson", "ucb1", "epsilon_greedy", "fixed")
REWARDS = ("binary", "continuous")
#: ``pooling`` across a flag's segment bandits: ``auto`` (an empirical-Bayes prior from the flag's other
#: rules and default allocation) or ``off`` (every rule's bandit learns from its own data only).
POOLING = ("auto", "off")
DIRECTIONS = ("maximize", "minimize")

MAX_ARMS = 255
MAX_BURN_IN = 10**12
MIN_DRAWS, MAX_DRAWS = 100, 100_000

#: Default ``stability``: the guard is off (it costs regret, docs/bandit.md); 0.85 is the A/A-safe setting.
STABILITY = 0.0
#: Default ``max_step``: no weight moves by more than 0.3 per update, so a first recompute does not send
#: 98% of the traffic to an arm at once (0.33 -> 0.63 -> 0.93); it costs 0-8% regret on the simulator's
#: scenarios (docs/bandit.md, "max_step"). ``null`` turns it off.
MAX_STEP = 0.3


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
    if not isinstance(v["pooling"], str) or v["pooling"] not in POOLING:
        errs.append(("policy.pooling", f"must be one of {', '.join(POOLING)}"))
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
    "draws", "epsilon", "top_two_beta", "weights", "winner_p", "winner_min_n", "auto_promote", "pooling",
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
    max_step: float | None = MAX_STEP
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
    # Segment bandits: borrow strength from the flag's other rules (segment_pooling.rule_priors).
    pooling: str = "auto"
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
            pooling=str(values["pooling"]),
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
