"""Tests for banditflags_server.engine: weight invariants, policies, parameters, estimates."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from bf_strategies import active_arms, arm_stats
from hypothesis import given, settings
from hypothesis import strategies as st

from banditflags_server.engine import (
    POLICIES,
    ArmEstimate,
    ParamError,
    PolicyParams,
    arm_estimates,
    compute_weights,
)

LEARNING = [p for p in POLICIES if p != "fixed"]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@st.composite
def stats_case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, PolicyParams]:
    """Random (P, K) or (K,) stats with consistent sums and random valid parameters and context."""
    k = draw(st.integers(1, 6))
    p = draw(st.integers(1, 3))
    n, s, ss, reward = arm_stats(draw, k, p, 5000)
    active = active_arms(draw, k)
    prev = draw(st.none() | st.lists(st.floats(0.01, 1), min_size=k, max_size=k))
    params = PolicyParams(
        name=draw(st.sampled_from(POLICIES)),
        reward=reward,
        direction=draw(st.sampled_from(["maximize", "minimize"])),
        floor=draw(st.floats(0, 1 / k)),
        burn_in=draw(st.sampled_from([0, 10, 100])),
        max_step=draw(st.none() | st.floats(0.01, 1)),
        half_life=draw(st.none() | st.floats(1, 1e6)),
        draws=draw(st.sampled_from([100, 1000])),
        epsilon=draw(st.floats(0, 1)),
        top_two_beta=draw(st.floats(0, 1)),
        weights=draw(st.none() | st.lists(st.floats(0.1, 10), min_size=k, max_size=k).map(tuple)),
        previous=None if prev is None else tuple(np.array(prev) / sum(prev)),
        active=active,
        period_ages=tuple(float(x) for x in np.arange(p, 0, -1) * 1000.0),
    )
    if draw(st.booleans()) and p == 1:
        return n[0], s[0], ss[0], params
    return n, s, ss, params


@settings(max_examples=300, deadline=None)
@given(stats_case())
def test_weights_invariants(case: tuple[np.ndarray, np.ndarray, np.ndarray, PolicyParams]) -> None:
    n, s, ss, params = case
    w = compute_weights(n, s, ss, params, rng())
    k = n.shape[-1]
    active = np.array(params.active)
    assert w.shape == (k,)
    assert np.all(np.isfinite(w)) and np.all(w >= 0)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-9)
    assert np.all(w[~active] == 0.0)
    if params.name != "fixed" and params.previous is None:
        assert np.all(w[active] >= params.floor - 1e-12)
    # Deterministic given the generator's seed.
    assert np.array_equal(w, compute_weights(n, s, ss, params, rng()))


@settings(max_examples=200, deadline=None)
@given(stats_case())
def test_max_step_respected(case: tuple[np.ndarray, np.ndarray, np.ndarray, PolicyParams]) -> None:
    n, s, ss, params = case
    k = n.shape[-1]
    prev = np.where(np.array(params.active), 1.0, 0.0)
    prev[0] += 5.0 if params.active and params.active[0] else 0.0
    prev = prev / prev.sum()
    params = dataclasses.replace(params, name=LEARNING[k % 4], max_step=0.05, previous=tuple(prev))
    w = compute_weights(n, s, ss, params, rng())
    assert np.max(np.abs(w - prev)) <= 0.05 + 1e-9


def test_floor_with_previous_that_respects_it() -> None:
    prev = (0.02, 0.96, 0.02)
    p = PolicyParams(name="ucb1", floor=0.02, burn_in=0, max_step=0.1, previous=prev)
    w = compute_weights([1000, 1000, 1000], [900, 100, 100], [900, 100, 100], p, rng())
    assert np.all(w >= 0.02 - 1e-12)
    assert np.max(np.abs(w - prev)) <= 0.1 + 1e-12
    assert w[0] > prev[0]


@pytest.mark.parametrize("name", LEARNING)
def test_burn_in_gives_uniform_over_active(name: str) -> None:
    p = PolicyParams(name=name, burn_in=100, active=(True, True, False, True))
    n = [500, 99, 0, 500]  # arm 1 has not finished burn-in; arm 2 is inactive and does not count
    w = compute_weights(n, [400, 1, 0, 10], [400, 1, 0, 10], p, rng())
    assert w.tolist() == pytest.approx([1 / 3, 1 / 3, 0.0, 1 / 3])
    assert w[2] == 0.0
    # Once every active arm has its exposures the policy adapts.
    w2 = compute_weights([500, 100, 0, 500], [400, 1, 0, 10], [400, 1, 0, 10], p, rng())
    assert int(np.argmax(w2)) == 0 and w2[0] > 0.45  # top-two gives the leader ~beta = 0.5


@pytest.mark.parametrize("name", LEARNING)
@pytest.mark.parametrize("reward", ["binary", "continuous"])
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_clear_winner_gets_most_weight(name: str, reward: str, direction: str) -> None:
    g = rng(42)
    k, n = 4, 2000
    winner = 2
    if reward == "binary":
        rates = (
            np.array([0.10, 0.10, 0.16, 0.10]) if direction == "maximize" else np.array([0.2, 0.2, 0.12, 0.2])
        )
        s = g.binomial(n, rates).astype(float)
        ss = s.copy()
    else:
        mu = np.array([5.0, 5.0, 5.6, 5.0]) if direction == "maximize" else np.array([5.0, 5.0, 4.4, 5.0])
        x = g.normal(mu, 2.0, size=(n, k))
        s, ss = x.sum(axis=0), (x * x).sum(axis=0)
    p = PolicyParams(name=name, reward=reward, direction=direction, floor=0.01, burn_in=100)
    w = compute_weights(np.full(k, float(n)), s, ss, p, rng(1))
    assert int(np.argmax(w)) == winner
    assert w[winner] > (0.45 if name == "top_two_thompson" else 0.5)
    # The loser arms get at least the floor but not much more under Thompson/UCB.
    assert np.all(w >= 0.01 - 1e-12)


def test_thompson_equal_arms_share_evenly() -> None:
    p = PolicyParams(burn_in=0, floor=0.0, draws=20_000)
    w = compute_weights([1000] * 3, [100] * 3, [100] * 3, p, rng())
    assert np.allclose(w, 1 / 3, atol=0.03)
    pc = PolicyParams(reward="continuous", burn_in=0, floor=0.0, draws=20_000)
    w = compute_weights([1000] * 3, [0.0] * 3, [0.0] * 3, pc, rng())  # all rewards 0: no variance at all
    assert np.allclose(w, 1 / 3, atol=0.03)


def test_top_two_gives_challenger_share() -> None:
    n = np.array([5000.0, 5000.0, 5000.0])
    s = np.array([1000.0, 500.0, 400.0])  # arm 0 is certainly best
    p = PolicyParams(name="top_two_thompson", top_two_beta=0.5, floor=0.0, burn_in=0, stability=0.0)
    w = compute_weights(n, s, s, p, rng())
    assert w[0] == pytest.approx(0.5, abs=0.01)
    assert w[1] > 0.4  # the runner-up is the challenger
    pt = dataclasses.replace(p, name="thompson")
    assert compute_weights(n, s, s, pt, rng())[0] > 0.99


def test_epsilon_greedy_and_ucb_exact() -> None:
    p = PolicyParams(
        name="epsilon_greedy", epsilon=0.3, floor=0.0, burn_in=0, active=(True, True, True, False),
        stability=0.0,
    )  # fmt: skip
    w = compute_weights([10, 10, 10, 10], [1, 5, 2, 9], [1, 5, 2, 9], p, rng())
    assert w.tolist() == pytest.approx([0.1, 0.8, 0.1, 0.0])
    u = PolicyParams(name="ucb1", floor=0.0, burn_in=0, stability=0.0)
    assert compute_weights([10, 0], [5, 0], [5, 0], u, rng()).tolist() == [0.0, 1.0]  # unplayed first
    w = compute_weights([1000, 1000], [300, 500], [300, 500], u, rng())
    assert w.tolist() == [0.0, 1.0]


def test_fixed_policy() -> None:
    p = PolicyParams(name="fixed", weights=(0.9, 0.1), floor=0.2, burn_in=10**6)
    assert compute_weights([0, 0], [0, 0], [0, 0], p, rng()).tolist() == pytest.approx([0.9, 0.1])
    u = PolicyParams(name="fixed")
    assert compute_weights([5, 5, 5], [1, 1, 1], [1, 1, 1], u, rng()).tolist() == pytest.approx([1 / 3] * 3)
    killed = dataclasses.replace(p, active=(False, True))
    assert compute_weights([0, 0], [0, 0], [0, 0], killed, rng()).tolist() == [0.0, 1.0]


@settings(max_examples=100, deadline=None)
@given(stats_case())
def test_periods_equal_pooled_without_half_life(
    case: tuple[np.ndarray, np.ndarray, np.ndarray, PolicyParams],
) -> None:
    n, s, ss, params = case
    params = dataclasses.replace(params, half_life=None, stratify=False)
    n2, s2, ss2 = np.atleast_2d(n), np.atleast_2d(s), np.atleast_2d(ss)
    pooled = compute_weights(n2.sum(0), s2.sum(0), ss2.sum(0), params, rng())
    assert np.allclose(compute_weights(n2, s2, ss2, params, rng()), pooled, rtol=0, atol=1e-12)


def test_half_life_makes_recent_periods_dominate() -> None:
    # Arm 0 was better long ago (lots of data), arm 1 is better recently.
    n = np.array([[20_000.0, 20_000.0], [2_000.0, 2_000.0]])
    s = np.array([[3_000.0, 2_000.0], [150.0, 250.0]])
    base = PolicyParams(floor=0.0, burn_in=0, period_ages=(30 * 86_400.0, 3_600.0))
    assert compute_weights(n, s, s, base, rng())[0] > 0.99
    discounted = dataclasses.replace(base, half_life=86_400.0)
    assert compute_weights(n, s, s, discounted, rng())[1] > 0.99
    with pytest.raises(ValueError, match="period_ages"):
        compute_weights(n, s, s, dataclasses.replace(discounted, period_ages=None), rng())


def test_compute_weights_rejects_bad_stats() -> None:
    p = PolicyParams()
    with pytest.raises(ValueError):
        compute_weights([1, 2], [1], [1], p, rng())
    with pytest.raises(ValueError):
        compute_weights([-1, 2], [0, 0], [0, 0], p, rng())
    with pytest.raises(ValueError):
        compute_weights([1, 2], [math.nan, 0], [0, 0], p, rng())
    with pytest.raises(ValueError):
        compute_weights([1, 2], [0, 0], [0, 0], dataclasses.replace(p, active=(False, False)), rng())


# --- parameters -------------------------------------------------------------------------------------


def test_from_dict_defaults_and_round_trip() -> None:
    p = PolicyParams.from_dict({}, None, 3)
    assert p == PolicyParams()
    d = p.to_dict()
    assert set(d) == {"name", "floor", "burn_in", "max_step", "half_life", "window", "stratify", "stability",
                      "balance", "draws", "epsilon", "top_two_beta", "weights", "winner_p", "winner_min_n",
                      "auto_promote", "pooling"}  # fmt: skip
    assert PolicyParams.from_dict(d, {"reward": "binary"}, 3) == p
    q = PolicyParams.from_dict(
        {"name": "fixed", "weights": [1, 3], "max_step": 0.2, "half_life": 3600}, {"direction": "minimize",
         "reward": "continuous", "unit": "user", "credit_window": 60}, 2)  # fmt: skip
    assert q.weights == (0.25, 0.75) and q.direction == "minimize" and q.reward == "continuous"
    assert q.to_dict()["weights"] == [0.25, 0.75]
    assert PolicyParams.from_dict({"floor": 1 / 3}, None, 3).floor == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("policy", "objective", "field"),
    [
        ({"name": "greedy"}, None, "policy.name"),
        ({"floor": 0.6}, None, "policy.floor"),
        ({"floor": -0.1}, None, "policy.floor"),
        ({"floor": "0.1"}, None, "policy.floor"),
        ({"floor": math.nan}, None, "policy.floor"),
        ({"burn_in": -1}, None, "policy.burn_in"),
        ({"burn_in": True}, None, "policy.burn_in"),
        ({"burn_in": 10.0}, None, "policy.burn_in"),
        ({"max_step": 0}, None, "policy.max_step"),
        ({"max_step": 1.5}, None, "policy.max_step"),
        ({"half_life": 0}, None, "policy.half_life"),
        ({"half_life": math.inf}, None, "policy.half_life"),
        ({"draws": 99}, None, "policy.draws"),
        ({"draws": 100_001}, None, "policy.draws"),
        ({"epsilon": 1.1}, None, "policy.epsilon"),
        ({"top_two_beta": -0.5}, None, "policy.top_two_beta"),
        ({"pooling": "on"}, None, "policy.pooling"),
        ({"pooling": False}, None, "policy.pooling"),
        ({"weights": [1, 2, 3]}, None, "policy.weights"),
        ({"weights": [1, -2]}, None, "policy.weights[1]"),
        ({"weights": [1, True]}, None, "policy.weights[1]"),
        ({"weights": [0, 0]}, None, "policy.weights"),
        ({"weights": "1,1"}, None, "policy.weights"),
        ({"colour": "red"}, None, "policy.colour"),
        ({}, {"reward": "binomial"}, "objective.reward"),
        ({}, {"direction": "up"}, "objective.direction"),
    ],
)
def test_from_dict_names_the_field(
    policy: dict[str, Any], objective: dict[str, Any] | None, field: str
) -> None:
    with pytest.raises(ParamError) as exc:
        PolicyParams.from_dict(policy, objective, 2)
    assert exc.value.field == field
    assert str(exc.value) == f"{field}: {exc.value.message}"
    assert isinstance(exc.value, ValueError)


def test_from_dict_collects_all_errors() -> None:
    with pytest.raises(ParamError) as exc:
        PolicyParams.from_dict({"floor": 2, "draws": 5, "bogus": 1}, {"reward": "x"}, 2)
    fields = {f for f, _ in exc.value.errors}
    assert fields == {"policy.floor", "policy.draws", "policy.bogus", "objective.reward"}


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ParamError):
        PolicyParams(name="nope")
    with pytest.raises(ParamError):
        PolicyParams(epsilon=2.0)


# --- estimates --------------------------------------------------------------------------------------


def test_arm_estimates_binary() -> None:
    n = np.array([[400.0, 50.0, 0.0], [600.0, 50.0, 0.0]])
    s = np.array([[40.0, 10.0, 0.0], [60.0, 10.0, 0.0]])
    est = arm_estimates(n, s, s, PolicyParams(), rng())
    assert [e.n for e in est] == [1000, 100, 0]
    assert est[0].mean == pytest.approx(0.1) and est[1].mean == pytest.approx(0.2)
    assert est[2] == ArmEstimate(n=0, rewards_sum=0.0, mean=None, ci_low=None, ci_high=None, p_best=None)
    for e in est[:2]:
        assert e.ci_low is not None and e.ci_high is not None and e.mean is not None
        assert 0 <= e.ci_low < e.mean < e.ci_high <= 1
    assert est[0].ci_low == pytest.approx(0.0829, abs=1e-3)  # Wilson 95% for 100/1000
    assert est[0].ci_high == pytest.approx(0.1203, abs=1e-3)
    # an active arm without exposures: P(best) is not known for anyone yet
    assert [e.p_best for e in est] == [None, None, None]
    two = PolicyParams(active=(True, True, False))  # the third arm disabled: compare the first two
    est = arm_estimates(n, s, s, two, rng())
    assert est[1].p_best is not None and est[1].p_best > 0.95
    assert (est[0].p_best or 0) + est[1].p_best == pytest.approx(1.0)
    mini = arm_estimates(n, s, s, dataclasses.replace(two, direction="minimize"), rng())
    assert mini[0].p_best is not None and mini[0].p_best > 0.95


def test_arm_estimates_continuous() -> None:
    g = rng(3)
    x = g.normal(10.0, 2.0, size=(400, 2))
    est = arm_estimates([400, 1], [x[:, 0].sum(), 7.0], [(x[:, 0] ** 2).sum(), 49.0],
                        PolicyParams(reward="continuous"), rng())  # fmt: skip
    e = est[0]
    assert e.mean is not None and e.ci_low is not None and e.ci_high is not None
    assert e.ci_low < 10.0 < e.ci_high
    assert e.ci_high - e.ci_low == pytest.approx(2 * 1.966 * 2.0 / 20, rel=0.15)
    assert est[1].mean == 7.0 and est[1].ci_low is None  # one observation: no interval
    assert est[0].p_best is not None and est[1].p_best is not None
    assert est[0].p_best + est[1].p_best == pytest.approx(1.0)
