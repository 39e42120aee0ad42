"""The issue-3 engine: stratification, window, stability guard, SRM, winner, guardrails, simulator."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from bf_strategies import active_arms, arm_stats
from hypothesis import given, settings
from hypothesis import strategies as st

from banditflags_server.cli.simulate import make_scenario, parse_policies, run_once, simulate
from banditflags_server.engine import (
    POLICIES,
    ArmEstimate,
    ParamError,
    PolicyParams,
    arm_estimates,
    chi2_sf,
    compute_weights,
    guardrail_harm,
    srm_check,
    winner,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@st.composite
def engine_case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, PolicyParams]:
    """Random (P, K) stats and parameters, including the non-stationary and guard settings."""
    k = draw(st.integers(2, 6))
    p = draw(st.integers(1, 5))
    n, s, ss, reward = arm_stats(draw, k, p, 3000)
    active = active_arms(draw, k)
    params = PolicyParams(
        name=draw(st.sampled_from([x for x in POLICIES if x != "fixed"])),
        reward=reward,
        direction=draw(st.sampled_from(["maximize", "minimize"])),
        floor=draw(st.floats(0, 1 / k)),
        burn_in=draw(st.sampled_from([0, 10, 100])),
        half_life=draw(st.none() | st.floats(100, 1e6)),
        window=draw(st.none() | st.floats(100, 1e5)),
        stratify=draw(st.booleans()),
        stability=draw(st.sampled_from([0.0, 0.5, 0.85, 1.0])),
        balance=draw(st.sampled_from([None, 0.1, 0.59, 1.0])),
        draws=draw(st.sampled_from([100, 1000])),
        active=active,
        period_ages=tuple(float(x) for x in np.arange(p, 0, -1) * 3600.0),
    )
    return n, s, ss, params


@settings(max_examples=300, deadline=None)
@given(engine_case())
def test_weights_are_a_distribution_respecting_floor_and_inactive(
    case: tuple[np.ndarray, np.ndarray, np.ndarray, PolicyParams],
) -> None:
    n, s, ss, params = case
    w = compute_weights(n, s, ss, params, rng())
    active = np.array(params.active)
    assert w.shape == (n.shape[1],)
    assert np.all(np.isfinite(w)) and np.all(w >= 0)
    assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-9)
    assert np.all(w[~active] == 0.0)
    assert np.all(w[active] >= min(params.floor, 1 / active.sum()) - 1e-12)
    if np.any(n.sum(axis=0)[active] < params.burn_in):
        assert np.allclose(w[active], 1 / active.sum())
    assert np.array_equal(w, compute_weights(n, s, ss, params, rng()))  # deterministic given the rng


@settings(max_examples=150, deadline=None)
@given(engine_case(), st.floats(0.01, 0.5))
def test_max_step_respected(
    case: tuple[np.ndarray, np.ndarray, np.ndarray, PolicyParams], step: float
) -> None:
    n, s, ss, params = case
    active = np.array(params.active)
    prev = np.where(active, 1.0, 0.0)
    prev[int(np.flatnonzero(active)[0])] += 3.0
    prev = prev / prev.sum()
    params = dataclasses.replace(params, max_step=step, previous=tuple(prev))
    w = compute_weights(n, s, ss, params, rng())
    assert np.max(np.abs(w - prev)) <= step + 1e-9


@settings(max_examples=100, deadline=None)
@given(engine_case())
def test_guard_caps_tied_arms(case: tuple[np.ndarray, np.ndarray, np.ndarray, PolicyParams]) -> None:
    """Identical arms: whatever their (equal) data, nobody gets more than the cap of the stability guard."""
    n, s, ss, params = case
    k = n.shape[1]
    same = (np.repeat(n[:, :1], k, 1), np.repeat(s[:, :1], k, 1), np.repeat(ss[:, :1], k, 1))
    params = dataclasses.replace(params, stability=0.85, floor=0.0, active=None, name="thompson")
    w = compute_weights(*same, params, rng())
    assert w.max() <= 1 / k + (1 - 1 / k) * 0.15 + 1e-9


@settings(max_examples=100, deadline=None)
@given(engine_case(), st.floats(0.2, 0.9))
def test_balance_caps_equal_arms(
    case: tuple[np.ndarray, np.ndarray, np.ndarray, PolicyParams], cap: float
) -> None:
    """Identical arms: whatever their (equal) data, no served share exceeds the balance cap (or 1/K)."""
    n, s, ss, params = case
    k = n.shape[1]
    same = (np.repeat(n[:, :1], k, 1), np.repeat(s[:, :1], k, 1), np.repeat(ss[:, :1], k, 1))
    params = dataclasses.replace(params, balance=cap, stability=0.0, active=None, max_step=None)
    w = compute_weights(*same, params, rng())
    assert w.max() <= max(cap, 1 / k) + 1e-9


def test_balance_holds_until_the_arms_differ() -> None:
    p = PolicyParams(balance=0.59, burn_in=0)
    # Noise: 3 arms at 5% with a chance lead (z ~ 1.5 for the top pair) that Thompson follows.
    n = [3000.0, 3000.0, 3000.0]
    noisy = [140.0, 150.0, 175.0]
    plain = compute_weights(n, noisy, noisy, dataclasses.replace(p, balance=None), rng())
    assert plain.max() > 0.75
    capped = compute_weights(n, noisy, noisy, p, rng())
    assert capped.max() <= 0.59 + 1e-12 and int(capped.argmax()) == 2
    # A real difference (4% / 5% / 6%): the cap is lifted, the weights are Thompson's.
    clear = [120.0, 150.0, 180.0]
    assert np.array_equal(
        compute_weights(n, clear, clear, p, rng()),
        compute_weights(n, clear, clear, dataclasses.replace(p, balance=None), rng()),
    )
    # Continuous rewards of any scale: the same decision.
    for scale in (1e-3, 1.0, 1e4):
        pc = dataclasses.replace(p, reward="continuous")
        x = np.array(noisy) * scale
        assert compute_weights(n, x, x * scale, pc, rng()).max() <= 0.59 + 1e-12


def test_balance_keeps_an_aa_simulation_balanced() -> None:
    sc = make_scenario("aa", steps=30)
    spec = {"name": "thompson", "balance": 0.59}
    worst = [run_once(sc, spec, [7, r], draws=2000).shares.max() for r in range(6)]
    assert max(worst) < 0.6
    plain = [run_once(sc, {"name": "thompson"}, [7, r], draws=2000).shares.max() for r in range(6)]
    assert max(plain) > 0.8  # without the guard, Thompson does drive an identical arm up


def test_stratification_removes_a_moving_base_rate() -> None:
    # Simpson's paradox: arm 1 is better by 1 point in every period, but got most of its traffic in the
    # period with the low base rate; pooled, it looks worse.
    n = np.array([[9000.0, 1000.0], [1000.0, 9000.0]])
    s = np.array([[0.10 * 9000, 0.11 * 1000], [0.02 * 1000, 0.03 * 9000]])
    pooled = PolicyParams(stratify=False, stability=0.0, burn_in=0, floor=0.0)
    assert compute_weights(n, s, s, pooled, rng())[0] > 0.99
    strat = dataclasses.replace(pooled, stratify=True)
    assert compute_weights(n, s, s, strat, rng())[1] > 0.99
    est = arm_estimates(n, s, s, strat, rng())
    assert est[1].p_best is not None and est[1].p_best > 0.99
    assert est[0].expected_loss is not None and est[0].expected_loss == pytest.approx(0.01, rel=0.05)
    assert est[1].expected_loss is not None and est[1].expected_loss < 1e-4


def test_stratified_equals_pooled_for_a_balanced_design() -> None:
    n = np.array([[1000.0, 1000.0, 1000.0], [500.0, 500.0, 500.0]])
    s = np.array([[50.0, 60.0, 70.0], [40.0, 20.0, 30.0]])
    a = PolicyParams(burn_in=0, stability=0.0)
    w1 = compute_weights(n, s, s, a, rng(3))
    w2 = compute_weights(n, s, s, dataclasses.replace(a, stratify=False), rng(3))
    assert np.allclose(w1, w2, atol=1e-12)


def test_window_forgets_old_periods() -> None:
    n = np.array([[20_000.0, 20_000.0], [2_000.0, 2_000.0]])
    s = np.array([[3_000.0, 2_000.0], [150.0, 250.0]])
    base = PolicyParams(floor=0.0, burn_in=0, stability=0.0, period_ages=(30 * 86_400.0, 3_600.0))
    assert compute_weights(n, s, s, base, rng())[0] > 0.99
    assert compute_weights(n, s, s, dataclasses.replace(base, window=7 * 86_400.0), rng())[1] > 0.99
    with pytest.raises(ValueError, match="period_ages"):
        compute_weights(n, s, s, dataclasses.replace(base, window=60.0, period_ages=None), rng())


def test_new_parameters_are_validated() -> None:
    for policy, field in [
        ({"window": 0}, "policy.window"),
        ({"stability": 1.5}, "policy.stability"),
        ({"balance": 0}, "policy.balance"),
        ({"balance": 1.5}, "policy.balance"),
        ({"stratify": "yes"}, "policy.stratify"),
        ({"winner_p": 0.2}, "policy.winner_p"),
        ({"winner_min_n": -1}, "policy.winner_min_n"),
        ({"auto_promote": 1}, "policy.auto_promote"),
    ]:
        with pytest.raises(ParamError) as exc:
            PolicyParams.from_dict(policy, None, 3)
        assert exc.value.field == field
    p = PolicyParams.from_dict({"window": 3600, "stability": 0, "stratify": False}, None, 3)
    assert (p.window, p.stability, p.stratify) == (3600.0, 0.0, False)


# --- SRM, winner, guardrails ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 500), st.floats(0, 500), st.integers(1, 50))
def test_chi2_sf_is_a_decreasing_probability(x: float, y: float, df: int) -> None:
    lo, hi = sorted((x, y))
    a, b = chi2_sf(lo, df), chi2_sf(hi, df)
    assert 0.0 <= b <= a <= 1.0


def test_chi2_sf_known_values() -> None:
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, abs=1e-9)
    assert chi2_sf(18.307038053275146, 10) == pytest.approx(0.05, abs=1e-9)
    assert chi2_sf(2.0, 2) == pytest.approx(math.exp(-1.0), abs=1e-12)
    assert chi2_sf(100.0, 3) < 1e-20


def test_srm_detects_a_biased_split_and_passes_a_fair_one() -> None:
    g = rng(7)
    weights = np.array([[0.5, 0.5], [0.2, 0.8], [0.1, 0.9]])
    fair = np.array([g.multinomial(20_000, w) for w in weights])
    assert not srm_check(fair, weights).mismatch
    biased = fair.copy()
    biased[1] = g.multinomial(20_000, [0.22, 0.78])  # 2 points off in one period
    result = srm_check(biased, weights)
    assert result.mismatch and result.p_value is not None and result.p_value < 1e-6
    assert result.df == 3 and len(result.periods) == 3
    # Exposures on an arm that was not served at all are a mismatch outright.
    assert srm_check([[100, 5]], [[1.0, 0.0]]).mismatch
    # Nothing to test: no exposures.
    assert srm_check([[0, 0]], [[0.5, 0.5]]).p_value is None


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000))
def test_srm_false_alarms_are_rare(seed: int) -> None:
    g = rng(seed)
    w = g.dirichlet(np.ones(3), size=4)
    obs = np.array([g.multinomial(5000, x) for x in w])
    # p < 0.001 by chance: a seed that trips this would be one in a thousand; hypothesis tries 50.
    assert srm_check(obs, w, threshold=1e-6).mismatch is False


def test_winner_needs_probability_and_data() -> None:
    e = [ArmEstimate(5000, 0, 0.1, 0, 0, 0.03), ArmEstimate(5000, 0, 0.2, 0, 0, 0.97)]
    assert winner(e, 0.95, 1000) == 1
    assert winner(e, 0.98, 1000) is None
    assert winner(e, 0.95, 6000) is None
    assert winner(e[:1], 0.5, 0) is None


def test_guardrail_harm() -> None:
    n = [10_000, 10_000, 10_000, 0]
    errors = [100, 105, 200, 0]
    harm = guardrail_harm(
        n, errors, errors, 0, binary=True, direction="minimize", tolerance=0.1, relative=True
    )
    assert harm[0] is None and harm[3] is None
    assert harm[1] is not None and harm[1] < 0.5
    assert harm[2] is not None and harm[2] > 0.999
    # Latency (continuous): arm 1 is 30 ms slower with an absolute tolerance of 10 ms.
    g = rng(1)
    lat = [g.normal(100 + d, 20, 2000) for d in (0, 30)]
    harm = guardrail_harm([2000, 2000], [x.sum() for x in lat], [(x * x).sum() for x in lat], 0,
                          binary=False, direction="minimize", tolerance=10.0, relative=False)  # fmt: skip
    assert harm[1] is not None and harm[1] > 0.999
    up = guardrail_harm([2000, 2000], [x.sum() for x in lat], [(x * x).sum() for x in lat], 0,
                        binary=False, direction="maximize", tolerance=10.0, relative=False)  # fmt: skip
    assert up[1] is not None and up[1] < 1e-6


# --- statistical behaviour through the simulator (fixed seeds) --------------------------------------------


def test_clear_winner_gets_the_traffic() -> None:
    sc = make_scenario("bernoulli", arms=[0.04, 0.05, 0.08], steps=30)
    for policy in ({"name": "thompson"}, {"name": "thompson", "half_life": 86_400.0}):
        r = run_once(sc, policy, 11, draws=2000)
        assert r.shares[-5:, 2].min() > 0.8
        assert r.regret.sum() < 0.3 * sc.batch * sc.steps * (0.08 - np.mean([0.04, 0.05, 0.08]))


def test_drift_setting_recovers_after_a_switch() -> None:
    sc = make_scenario("switch", steps=80)  # arm 0 best for 40 updates (hours), then arm 2
    ns = [run_once(sc, {"name": "thompson", "half_life": 6 * 3600.0}, seed, draws=2000) for seed in (1, 2)]
    plain = [run_once(sc, {"name": "thompson", "stratify": False, "stability": 0}, seed, draws=2000)
             for seed in (1, 2)]  # fmt: skip
    for r, p in zip(ns, plain, strict=True):
        assert r.shares[-10:, 2].mean() > 0.8  # found the new best arm
        assert p.shares[-10:, 2].mean() < 0.7  # pooled history still holds plain Thompson back
    assert np.mean([r.regret.sum() for r in ns]) < 0.5 * np.mean([r.regret.sum() for r in plain])


def test_aa_guard_keeps_identical_arms_balanced() -> None:
    sc = make_scenario("aa", steps=30)
    guarded, plain = simulate(sc, parse_policies("banditflags-stable,thompson"), 20, seed=3, draws=2000)
    # Target: below 0.6 in 95% of runs (docs/bandit.md measures it over 200 runs); a seeded sample of 20.
    assert (guarded.max_share < 0.6).sum() >= 17
    assert (plain.max_share < 0.6).sum() <= 10
