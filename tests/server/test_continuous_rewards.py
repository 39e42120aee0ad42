"""Several rewards for one decision of a continuous objective add up to that decision's value, and
``sum_sq`` must square the value, not its parts (docs/protocol.md "Several rewards for one decision").

Measured against the simulator's revenue scenario: the per-decision values it draws are split into 1..3
rewards each (several purchases after one decision); the engine's 95% interval covers the true mean as it
should when ``sum_sq`` squares each decision's value, and far less often when it squares the parts (the
Gaussian model's variance comes out too small).
"""

from __future__ import annotations

import numpy as np

from banditflags_server.cli.sim_runner import _draw_rewards
from banditflags_server.cli.sim_scenarios import make_scenario
from banditflags_server.engine import PolicyParams, arm_estimates

USERS = 2000
RUNS = 400


def _coverage(rng: np.random.Generator) -> tuple[float, float]:
    sc = make_scenario("revenue", arms=[2.0], steps=1, batch=USERS)
    params = PolicyParams.from_dict({"name": "thompson", "draws": 100}, sc.objective, 1)
    truth = float(sc.means[0, 0])
    covered = {"value": 0, "parts": 0}
    for _ in range(RUNS):
        ((_, values),) = _draw_rewards(sc, np.array([USERS]), sc.means[0], rng)
        parts = [
            v * rng.dirichlet(np.ones(m))
            for v, m in zip(values, rng.integers(2, 6, len(values)), strict=True)
        ]
        s = float(values.sum())
        for name, ss in (
            ("value", float((values**2).sum())),
            ("parts", float(sum((p**2).sum() for p in parts))),
        ):
            (est,) = arm_estimates(np.array([USERS]), np.array([s]), np.array([ss]), params, rng)
            assert est.ci_low is not None and est.ci_high is not None
            covered[name] += est.ci_low <= truth <= est.ci_high
    return covered["value"] / RUNS, covered["parts"] / RUNS


def test_sum_sq_of_each_decisions_value_keeps_the_interval_honest() -> None:
    by_value, by_parts = _coverage(np.random.default_rng(11))
    # Seeds 1..5 gave 0.90..0.93 (95% nominal; the log-normal tail costs a little) against 0.76..0.82.
    assert 0.89 <= by_value <= 0.98, by_value
    assert by_parts <= 0.85, by_parts  # squared parts: the variance, and the interval, too small
