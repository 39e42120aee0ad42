"""The simulator's segment scenarios: one flag whose users fall into segments, each with its own arm means.

A segment is a bandit rule (``"serve": {"bandit": true}``, DESIGN.md §9) and the first segment is the
flag's default allocation (everyone no rule matches). Three ways to run the flag's bandit are compared on
total regret:

``global``       one bandit on all the traffic, ignoring the segments (the flag without rules)
``independent``  a bandit per segment, each on its own data (``"pooling": "off"``)
``pooled``       a bandit per segment with the empirical-Bayes prior from the flag's other segments
                 (:func:`~banditflags_server.engine.segment_pooling.rule_priors`, ``"pooling": "auto"``)

Scenarios (``--scenario``): ``segments`` (most segments share the population's best arm, two do not),
``segments-alike`` (every segment has the population's arm effects), ``segments-differ`` (the segments'
best arms rotate, the population has no common best arm). Conversion rates differ between segments in all
three (a segment's level is not what pooling is about).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from banditflags_server.cli.sim_runner import RunResult, Summary, summarise
from banditflags_server.cli.sim_scenarios import FloatArray
from banditflags_server.engine import GroupStats, PolicyParams, compute_weights, rule_priors
from banditflags_server.engine.segment_pooling import DEFAULT

__all__ = [
    "SEGMENT_POLICIES",
    "SEGMENT_SCENARIOS",
    "SegmentRun",
    "SegmentScenario",
    "SegmentSummary",
    "make_segment_scenario",
    "run_segments_once",
    "simulate_segments",
]

SEGMENT_SCENARIOS = ("segments", "segments-alike", "segments-differ")
SEGMENT_POLICIES = ("global", "independent", "pooled")

# Traffic share and base conversion rate of each segment; the first is the default allocation.
_SHARES = np.array([0.40, 0.15, 0.10, 0.08, 0.07, 0.06, 0.05, 0.05, 0.04])
_BASES = np.array([0.05, 0.04, 0.06, 0.03, 0.05, 0.08, 0.05, 0.04, 0.06])
# The population's arm effects (added to a segment's base rate): arm 2 best by 0.8 points.
_EFFECTS = np.array([0.0, 0.003, 0.008])
# segments: segments 4 and 6 have another best arm (arm 0 by 1 point, arm 1 by 1.2 points).
_ODD = {4: np.array([0.010, 0.003, 0.0]), 6: np.array([0.0, 0.012, 0.002])}


@dataclass
class SegmentScenario:
    """Stationary arm means per segment (``means[s, k]``) and each segment's share of the traffic.

    Example:
        >>> sc = make_segment_scenario("segments", steps=10)
        >>> sc.means.shape, sc.k, [int(b) for b in sc.means.argmax(axis=1)]
        ((9, 3), 3, [2, 2, 2, 2, 0, 2, 1, 2, 2])
    """

    name: str
    means: FloatArray  # (S, K)
    shares: FloatArray  # (S,) summing to 1
    steps: int = 100
    batch: int = 2000

    @property
    def k(self) -> int:
        """Number of arms."""
        return int(self.means.shape[1])

    @property
    def segments(self) -> int:
        """Number of segments (the default allocation included)."""
        return int(self.means.shape[0])

    @property
    def aligned(self) -> npt.NDArray[np.bool_]:
        """Segments whose best arm is the population's (traffic-weighted) best arm."""
        population = self.shares @ self.means
        return np.asarray(self.means.argmax(axis=1) == int(population.argmax()), dtype=bool)


def make_segment_scenario(
    name: str, *, steps: int | None = None, batch: int | None = None
) -> SegmentScenario:
    """A named segment scenario (see the module docstring)."""
    if name not in SEGMENT_SCENARIOS:
        raise ValueError(f"unknown segment scenario {name!r}; choose from {', '.join(SEGMENT_SCENARIOS)}")
    effects = np.repeat(_EFFECTS[None, :], _SHARES.shape[0], axis=0)
    if name == "segments":
        for i, e in _ODD.items():
            effects[i] = e
    elif name == "segments-differ":
        # Every segment has its own best arm (by 0.8-1.2 points), rotating through the arms.
        for i in range(effects.shape[0]):
            effects[i] = np.roll(_EFFECTS, i % 3) * (1.0 + 0.25 * (i % 2))
    means = _BASES[:, None] + effects
    return SegmentScenario(name, means, _SHARES.copy(), steps or 100, batch or 2000)


@dataclass
class SegmentRun:
    """One replication: total regret per update, and per segment over the run; share to each segment's
    best arm per update (traffic-weighted)."""

    regret: FloatArray  # (T,)
    by_segment: FloatArray  # (S,)
    best_share: FloatArray  # (T,)


def _ages(t: int, step: float) -> tuple[float, ...]:
    return tuple((t - (p + 0.5)) * step for p in range(t)) if t else (0.0,)


def run_segments_once(
    sc: SegmentScenario,
    policy: str,
    seed: int | Sequence[int],
    *,
    spec: dict[str, Any] | None = None,
    draws: int | None = None,
) -> SegmentRun:
    """One replication of ``policy`` (global, independent or pooled) with the flag policy ``spec``.

    Example:
        >>> sc = make_segment_scenario("segments", steps=3, batch=300)
        >>> run_segments_once(sc, "pooled", 1, draws=200).by_segment.shape
        (9,)
    """
    if policy not in SEGMENT_POLICIES:
        raise ValueError(f"unknown segment policy {policy!r}; choose from {', '.join(SEGMENT_POLICIES)}")
    rng_env = np.random.default_rng([*np.atleast_1d(seed).tolist(), 1])
    rng_pol = np.random.default_rng([*np.atleast_1d(seed).tolist(), 2])
    k, g, t_max = sc.k, sc.segments, sc.steps
    params = PolicyParams.from_dict(spec or {"name": "thompson"}, {"reward": "binary"}, k)
    params = dataclasses.replace(params, pooling="off" if policy == "independent" else "auto")
    if draws is not None:
        params = dataclasses.replace(params, draws=draws)
    n = np.zeros((g, t_max, k))
    s = np.zeros((g, t_max, k))
    prev: list[tuple[float, ...] | None] = [None] * g
    regret, best_share, by_segment = np.zeros(t_max), np.zeros(t_max), np.zeros(g)
    best = sc.means.argmax(axis=1)
    gap = sc.means.max(axis=1)[:, None] - sc.means
    names = [DEFAULT] + [f"segment-{i}" for i in range(1, g)]
    for t in range(t_max):
        # The stats so far, one period per update (one empty period before the first).
        cur_n = n[:, :t] if t else np.zeros((g, 1, k))
        cur_s = s[:, :t] if t else np.zeros((g, 1, k))
        ctx = dataclasses.replace(params, period_ages=_ages(t, 3600.0))
        if policy == "global":
            w_all = compute_weights(cur_n.sum(axis=0), cur_s.sum(axis=0), cur_s.sum(axis=0),
                                    dataclasses.replace(ctx, previous=prev[0]), rng_pol)  # fmt: skip
            weights = [w_all] * g
            prev = [tuple(float(x) for x in w_all)] * g
        else:
            stats = [GroupStats(cur_n[i], cur_s[i], cur_s[i], ctx.period_ages) for i in range(g)]
            priors = rule_priors(stats[0], dict(zip(names[1:], stats[1:], strict=True)), ctx)
            weights = []
            for i in range(g):
                prior = priors[names[i]]
                w = compute_weights(cur_n[i], cur_s[i], cur_s[i],
                                    dataclasses.replace(ctx, previous=prev[i]), rng_pol, prior)  # fmt: skip
                prev[i] = tuple(float(x) for x in w)
                weights.append(w)
        users = rng_env.multinomial(sc.batch, sc.shares)
        for i in range(g):
            counts = rng_env.multinomial(int(users[i]), weights[i])
            n[i, t] = counts
            s[i, t] = rng_env.binomial(counts, sc.means[i])
            lost = float(counts @ gap[i])
            regret[t] += lost
            by_segment[i] += lost
            best_share[t] += sc.shares[i] * float(weights[i][best[i]])
    return SegmentRun(regret, by_segment, best_share)


@dataclass
class SegmentSummary:
    """Replications of one way of running the flag: the simulator's :class:`Summary` (regret, curves)
    and the regret of the segments that share the population's best arm and of those that do not."""

    summary: Summary
    aligned: FloatArray  # (R,) regret in the aligned segments
    odd: FloatArray  # (R,) regret in the others


def simulate_segments(
    sc: SegmentScenario,
    policies: Sequence[str],
    replications: int,
    seed: int = 0,
    *,
    spec: dict[str, Any] | None = None,
    draws: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[SegmentSummary]:
    """Run every policy ``replications`` times on the same seeds."""
    total, done, out = replications * len(policies), 0, []
    aligned = sc.aligned
    for pol in policies:
        runs = []
        for r in range(replications):
            runs.append(run_segments_once(sc, pol, [seed, r], spec=spec, draws=draws))
            done += 1
            if progress is not None:
                progress(done, total)
        # The best-arm share as a one-arm run: the converge time and curves of the plain simulator apply.
        flat = [RunResult(x.regret, x.best_share[:, None], np.zeros(sc.steps, dtype=np.int64)) for x in runs]
        out.append(
            SegmentSummary(
                summarise(pol, flat),
                np.array([x.by_segment[aligned].sum() for x in runs]),
                np.array([x.by_segment[~aligned].sum() for x in runs]),
            )
        )
    return out
