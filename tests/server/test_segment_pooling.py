"""Segment bandits' empirical-Bayes priors (engine.segment_pooling) and compute_weights with a prior."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from bf_strategies import active_arms, arm_stats
from hypothesis import given, settings
from hypothesis import strategies as st

from banditflags_server.engine import (
    POLICIES,
    GroupStats,
    ParamError,
    PolicyParams,
    Prior,
    compute_weights,
    rule_priors,
)
from banditflags_server.engine.segment_pooling import MAX_STRENGTH, between_variance


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def binary(n: list[float], rates: list[float]) -> GroupStats:
    s = np.round(np.asarray(n) * np.asarray(rates))
    return GroupStats(np.asarray(n, float), s, s.copy())


@st.composite
def flag_case(draw: st.DrawFn) -> tuple[GroupStats | None, dict[str, GroupStats], PolicyParams]:
    """A flag's default allocation and 1..5 rules with random (P, K) stats of one reward kind."""
    k = draw(st.integers(2, 5))
    reward = draw(st.sampled_from(["binary", "continuous"]))
    groups = []
    for _ in range(draw(st.integers(2, 6))):
        p = draw(st.integers(1, 3))
        while True:
            n, s, ss, kind = arm_stats(draw, k, p, draw(st.sampled_from([0, 30, 3000, 10**6])))
            if kind == reward:
                break
        ages = tuple(float(x) for x in np.arange(p, 0, -1) * 3600.0)
        groups.append(GroupStats(n, s, ss, ages))
    params = PolicyParams(
        name=draw(st.sampled_from([x for x in POLICIES if x != "fixed"])),
        reward=reward,
        direction=draw(st.sampled_from(["maximize", "minimize"])),
        floor=draw(st.floats(0, 1 / k)),
        burn_in=draw(st.sampled_from([0, 100])),
        half_life=draw(st.none() | st.floats(100, 1e6)),
        stratify=draw(st.booleans()),
        draws=500,
        active=active_arms(draw, k),
    )
    default = groups[0] if draw(st.booleans()) else None
    return default, {f"r{i}": g for i, g in enumerate(groups[1:])}, params


@settings(max_examples=150, deadline=None)
@given(flag_case())
def test_priors_are_bounded_and_weights_a_distribution(
    case: tuple[GroupStats | None, dict[str, GroupStats], PolicyParams],
) -> None:
    default, rules, params = case
    priors = rule_priors(default, rules, params)
    assert set(priors) == set(rules) | ({""} if default is not None else set())
    active = np.array(params.active)
    for name, prior in priors.items():
        m = np.array(prior.strength)
        assert np.all(np.isfinite(m)) and np.all((m == 0) | ((m >= 1) & (m <= MAX_STRENGTH)))
        assert np.all(m[~active] == 0)
        assert np.all(np.isfinite(prior.mean)) and np.all(np.isfinite(prior.var))
        if params.reward == "binary":
            assert np.all((np.array(prior.mean) >= 0) & (np.array(prior.mean) <= 1))
        st_ = rules[name] if name else default
        assert st_ is not None
        w = compute_weights(st_.n, st_.s, st_.ss, dataclasses.replace(params, period_ages=st_.period_ages),
                            rng(), prior)  # fmt: skip
        assert np.all(np.isfinite(w)) and math.isclose(float(w.sum()), 1.0, rel_tol=1e-9)
        assert np.all(w[~active] == 0.0)
        assert np.all(w[active] >= min(params.floor, 1 / active.sum()) - 1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6), st.integers(1, 6), st.sampled_from(["binary", "continuous"]))
def test_zero_data_gives_no_prior_and_uniform_weights(k: int, rules: int, reward: str) -> None:
    z = np.zeros(k)
    params = PolicyParams(reward=reward)
    priors = rule_priors(GroupStats(z, z, z), {f"r{i}": GroupStats(z, z, z) for i in range(rules)}, params)
    for prior in priors.values():
        assert prior == Prior.none(k)
        assert np.allclose(compute_weights(z, z, z, params, rng(), prior), 1 / k)  # burn-in
        w = compute_weights(z, z, z, dataclasses.replace(params, burn_in=0), rng(), prior)
        assert np.all(np.isfinite(w)) and math.isclose(float(w.sum()), 1.0)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 0.7), st.integers(100, 100_000))
def test_strength_falls_as_the_rules_disagree(gap: float, n: int) -> None:
    """Two camps of rules with opposite arm effects of size ``gap``: more disagreement, weaker priors;
    opposite effects far beyond noise drop the prior altogether."""
    params = PolicyParams(burn_in=0)
    ns = [float(n)] * 2

    def strength(g: float) -> float:
        up, down = [0.5 - g / 2, 0.5 + g / 2], [0.5 + g / 2, 0.5 - g / 2]
        rules = {"a": binary(ns, up), "b": binary(ns, down), "c": binary(ns, up), "d": binary(ns, down)}
        return float(np.mean(rule_priors(binary(ns, up), rules, params)["a"].strength))

    assert strength(gap) >= strength(gap + 0.2) - 1e-9
    assert strength(0.9) == 0.0  # 5% / 95% against 95% / 5%


def test_agreeing_rules_borrow_the_flag_and_a_small_rule_follows() -> None:
    params = PolicyParams(burn_in=100)
    big = binary([20_000] * 3, [0.05, 0.05, 0.06])
    small = binary([30, 30, 30], [2 / 30, 1 / 30, 1 / 30])  # noise against arm 2
    priors = rule_priors(big, {"x": big, "y": big, "small": small}, params)
    p = priors["small"]
    assert p.tau2 == 0.0 and min(p.strength) >= 1000
    assert int(np.argmax(p.mean)) == 2
    w = compute_weights(small.n, small.s, small.ss, params, rng(), p)
    assert int(np.argmax(w)) == 2  # the prior counts toward the burn-in, and leads
    plain = compute_weights(small.n, small.s, small.ss, params, rng())
    assert np.allclose(plain, 1 / 3)  # without it: still in burn-in


def test_a_rule_that_differs_keeps_its_own_best_arm() -> None:
    params = PolicyParams(burn_in=100)
    pop = binary([20_000] * 3, [0.05, 0.05, 0.06])
    odd = binary([5000] * 3, [0.08, 0.05, 0.05])  # arm 0 best here, clearly
    rules = {"a": pop, "b": pop, "c": binary([20_000] * 3, [0.07, 0.05, 0.04]), "odd": odd}
    p = rule_priors(pop, rules, params)["odd"]
    assert p.tau2 > 0 and max(p.strength) < 5000
    assert int(np.argmax(compute_weights(odd.n, odd.s, odd.ss, params, rng(), p))) == 0


def test_levels_do_not_count_as_disagreement() -> None:
    """Segments converting at 2% and 10% with the same arm effect: tau2 = 0."""
    ns = [50_000.0] * 3
    lo, hi = binary(ns, [0.02, 0.025, 0.03]), binary(ns, [0.10, 0.105, 0.11])
    assert rule_priors(lo, {"hi": hi, "lo": lo}, PolicyParams())["hi"].tau2 == 0.0


def test_pooling_off_fixed_and_no_prior_change_nothing() -> None:
    g = binary([1000, 1000], [0.05, 0.07])
    for params in (PolicyParams(pooling="off"), PolicyParams(name="fixed")):
        assert rule_priors(g, {"a": g, "b": g}, params)["a"] == Prior.none(2)
    p = PolicyParams(burn_in=0)
    assert np.array_equal(
        compute_weights(g.n, g.s, g.ss, p, rng()), compute_weights(g.n, g.s, g.ss, p, rng(), Prior.none(2))
    )
    assert rule_priors(None, {}, p) == {}
    assert rule_priors(None, {"only": g}, p)["only"] == Prior.none(2)


def test_continuous_prior_keeps_the_scale() -> None:
    r = np.random.default_rng(1)
    groups = {}
    for name, effect in (("a", 0.0), ("b", 0.0), ("c", 0.0)):
        x = r.normal([100.0, 100.0 + effect, 105.0], 20.0, size=(4000, 3))
        groups[name] = GroupStats(np.full(3, 4000.0), x.sum(0), (x * x).sum(0))
    p = rule_priors(None, groups, PolicyParams(reward="continuous"))["a"]
    assert np.allclose(p.mean, [100, 100, 105], atol=2) and np.allclose(p.var, 400, rtol=0.2)


def test_between_variance_needs_degrees_of_freedom() -> None:
    x = np.array([[0.1, 0.2]])
    assert math.isnan(between_variance(x, np.full((1, 2), 1e-3), np.ones((1, 2), bool)))


def test_pooling_is_validated() -> None:
    assert PolicyParams.from_dict({"pooling": "off"}, None, 2).pooling == "off"
    assert PolicyParams.from_dict({}, None, 2).to_dict()["pooling"] == "auto"
    with pytest.raises(ParamError) as e:
        PolicyParams.from_dict({"pooling": "yes"}, None, 2)
    assert e.value.field == "policy.pooling"


def test_prior_of_the_wrong_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="prior"):
        compute_weights([10, 10], [1, 2], [1, 2], PolicyParams(burn_in=0), rng(), Prior.none(3))


def test_segment_priors_from_a_flag_and_its_periods() -> None:
    """The recompute's entry point: stats per allocation version (Periods), ages from their creation."""
    from banditflags_server.api.validation import validate_new_flag
    from banditflags_server.engine.planning import new_flag, segment_priors
    from banditflags_server.records import Periods

    def periods(rates: list[float], n: float = 20_000.0) -> Periods:
        nn = np.full((2, len(rates)), n / 2)
        s = np.round(nn * np.asarray(rates))
        return Periods([1, 2], [0.0, 3600.0], nn, s, s, s.copy())

    spec = validate_new_flag(
        {"key": "seg", "variants": ["a", "b", "c"], "policy": {"name": "thompson"}}, 60.0
    )
    flag, _ = new_flag(spec, rng(), 0.0)
    pop = periods([0.05, 0.05, 0.06])
    empty = Periods([], [], np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
    priors = segment_priors(flag, pop, {"us": pop, "de": pop, "new": empty}, now=7200.0)
    assert set(priors) == {"", "us", "de", "new"}
    assert int(np.argmax(priors["new"].mean)) == 2 and min(priors["new"].strength) > 1000
    off = dataclasses.replace(flag, policy={"name": "thompson", "pooling": "off"})
    assert segment_priors(off, pop, {"us": pop}, now=7200.0)["us"] == Prior.none(3)
