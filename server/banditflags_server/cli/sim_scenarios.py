"""The simulator's scenarios and policies: true arm means over time, and the policies to compare.

Scenarios (``--scenario``): ``bernoulli``, ``gaussian``, ``revenue`` (stationary); ``drift``, ``switch``
(non-stationary); ``seasonal`` (a base rate that moves with the time of day, the same for every arm);
``aa`` (3 identical arms). ``--arms 0.04,0.05,0.07`` replaces the arms of the scenario.

Policies (``--policies``): ``uniform``, ``thompson`` (plain Thompson sampling the way GrowthBook and
MABWiser run it: pooled history, 1% floor, burn-in 100), ``ucb1`` and ``epsilon_greedy`` (MABWiser's),
``banditflags`` (this engine's defaults: Thompson sampling on stratified estimates), ``banditflags-stable``
(with the stability guard at 0.85), ``banditflags-balance`` (with the balance guard at 0.59),
``banditflags-ns`` (the defaults with a one-day half-life), ``top_two``; or ``NAME={json policy}`` for any
parameters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

#: Policies by name: the ``policy`` object of a flag (None: the uniform split).
POLICY_PRESETS: dict[str, dict[str, Any] | None] = {
    "uniform": None,
    # The peers' engines (GrowthBook, MABWiser): pooled history, no step limit.
    "thompson": {"name": "thompson", "stratify": False, "stability": 0.0, "max_step": None},
    "ucb1": {"name": "ucb1", "stratify": False, "stability": 0.0, "max_step": None},
    "epsilon_greedy": {"name": "epsilon_greedy", "stratify": False, "stability": 0.0, "max_step": None},
    "top_two": {"name": "top_two_thompson"},
    "banditflags": {"name": "thompson"},
    "banditflags-stable": {"name": "thompson", "stability": 0.85},
    "banditflags-balance": {"name": "thompson", "balance": 0.59},
    "banditflags-ns": {"name": "thompson", "half_life": 86_400.0},
}


@dataclass
class Scenario:
    """True arm means over time and how rewards are drawn and delivered.

    ``means[t, k]`` is arm k's expected reward during update t. ``reward`` is ``bernoulli``, ``gaussian``
    (normal with standard deviation ``sd``) or ``revenue`` (converts with ``means / value`` and then pays
    a log-normal amount of mean ``value``: heavy-tailed). ``delay`` is the mean delay of a reward in
    updates (0: before the next update).

    Example:
        >>> s = make_scenario("switch", steps=10)
        >>> s.means.shape, int(s.means[0].argmax()), int(s.means[-1].argmax())
        ((10, 3), 0, 2)
    """

    name: str
    means: FloatArray
    reward: str = "bernoulli"
    sd: float = 1.0
    value: float = 40.0
    delay: float = 0.0
    batch: int = 1000
    step_seconds: float = 3600.0
    aa: bool = False

    @property
    def steps(self) -> int:
        """Number of updates."""
        return int(self.means.shape[0])

    @property
    def k(self) -> int:
        """Number of arms."""
        return int(self.means.shape[1])

    @property
    def objective(self) -> dict[str, Any]:
        """The flag objective the engine is given."""
        return {"reward": "binary" if self.reward == "bernoulli" else "continuous"}


SCENARIOS = ("bernoulli", "gaussian", "revenue", "drift", "switch", "seasonal", "aa")


def make_scenario(
    name: str,
    *,
    steps: int | None = None,
    arms: Sequence[float] | None = None,
    batch: int | None = None,
    delay: float | None = None,
) -> Scenario:
    """A named scenario, optionally with other arms (stationary means), length, batch size or delay.

    Example:
        >>> make_scenario("bernoulli", arms=[0.1, 0.2], steps=5).means.tolist()[0]
        [0.1, 0.2]
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    t = steps or (200 if name in ("drift", "switch", "seasonal") else 100)
    x = np.linspace(0.0, 1.0, t)[:, None]
    kw: dict[str, Any] = {}
    if name == "bernoulli":
        base = np.array([0.04, 0.05, 0.06])
    elif name == "gaussian":
        base = np.array([1.0, 1.05, 1.1])
        kw = {"reward": "gaussian", "sd": 1.0}
    elif name == "revenue":
        base = np.array([2.0, 2.1, 2.3])
        kw = {"reward": "revenue", "value": 40.0}
    elif name == "aa":
        base = np.array([0.05, 0.05, 0.05])
        kw = {"aa": True}
    elif name == "seasonal":
        base = np.array([0.05, 0.055, 0.06])
    else:
        base = np.array([0.06, 0.045, 0.03])
    if arms is not None:
        base = np.asarray([float(a) for a in arms])
    means = np.repeat(base[None, :], t, axis=0)
    if name == "switch" and arms is None:
        means = np.where(x < 0.5, base[None, :], base[::-1][None, :])
    elif name == "drift" and arms is None:
        # The best and the worst arm trade places linearly; the middle one stays.
        means = base[None, :] + x * (base[::-1] - base)[None, :]
    elif name == "seasonal":
        # A daily cycle of the base rate (x0.5 .. x1.5) with a larger share of traffic at the peak hours.
        hours = np.arange(t)[:, None] % 24
        means = means * (1.0 + 0.5 * np.sin(2 * np.pi * hours / 24.0))
    if name == "seasonal":
        kw["delay"] = 2.0
    if delay is not None:
        kw["delay"] = float(delay)
    return Scenario(name=name, means=np.asarray(means, dtype=np.float64), batch=batch or 1000, **kw)


@dataclass
class Policy:
    """A named policy: a flag's ``policy`` object, or None for the uniform split."""

    name: str
    spec: dict[str, Any] | None


def parse_policies(text: str) -> list[Policy]:
    """``thompson,banditflags,mine={"name": "ucb1"}`` → policies (presets or JSON policy objects).

    Example:
        >>> [p.name for p in parse_policies('thompson,x={"name": "ucb1"}')]
        ['thompson', 'x']
    """
    out: list[Policy] = []
    depth = 0
    part = ""
    parts: list[str] = []
    for ch in text:  # split on commas outside JSON braces
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(part)
            part = ""
        else:
            part += ch
    parts.append(part)
    for raw in (p.strip() for p in parts):
        if not raw:
            continue
        if "=" in raw:
            name, _, js = raw.partition("=")
            try:
                spec = json.loads(js)
            except ValueError as exc:
                raise ValueError(f"policy {name!r}: not valid JSON: {exc}") from None
            if not isinstance(spec, dict):
                raise ValueError(f"policy {name!r}: must be a JSON object")
            out.append(Policy(name.strip(), spec))
        elif raw in POLICY_PRESETS:
            out.append(Policy(raw, POLICY_PRESETS[raw]))
        else:
            raise ValueError(f"unknown policy {raw!r}; presets: {', '.join(POLICY_PRESETS)}")
    if not out:
        raise ValueError("no policy given")
    return out
