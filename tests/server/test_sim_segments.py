"""The simulator's segment scenarios (cli.sim_segments): shapes, regret bookkeeping, and pooling's effect."""

from __future__ import annotations

import numpy as np
import pytest

from banditflags_server.cli.sim_segments import (
    SEGMENT_SCENARIOS,
    make_segment_scenario,
    run_segments_once,
    simulate_segments,
)


@pytest.mark.parametrize("name", SEGMENT_SCENARIOS)
def test_scenarios_are_well_formed(name: str) -> None:
    sc = make_segment_scenario(name, steps=7, batch=500)
    assert sc.steps == 7 and sc.batch == 500 and sc.means.shape == (9, 3)
    assert np.isclose(sc.shares.sum(), 1.0) and np.all((sc.means > 0) & (sc.means < 1))
    aligned = int(sc.aligned.sum())
    assert aligned == {"segments": 7, "segments-alike": 9}.get(name, aligned)
    if name == "segments-differ":
        assert len(set(sc.means.argmax(axis=1).tolist())) == 3
    with pytest.raises(ValueError):
        make_segment_scenario("nope")


def test_a_run_adds_up_and_is_deterministic() -> None:
    sc = make_segment_scenario("segments", steps=5, batch=600)
    for policy in ("global", "independent", "pooled"):
        run = run_segments_once(sc, policy, [3, 1], draws=200)
        assert run.regret.shape == (5,) and np.all(run.regret >= 0)
        assert np.isclose(run.regret.sum(), run.by_segment.sum())
        assert np.all((run.best_share >= 0) & (run.best_share <= 1 + 1e-9))
        again = run_segments_once(sc, policy, [3, 1], draws=200)
        assert np.array_equal(run.regret, again.regret)
    with pytest.raises(ValueError):
        run_segments_once(sc, "contextual", 0)


def test_summaries_split_regret_by_alignment() -> None:
    sc = make_segment_scenario("segments", steps=4, batch=400)
    [res] = simulate_segments(sc, ["independent"], 2, seed=1, draws=200)
    assert res.summary.regret.shape == (2,)
    assert np.allclose(res.aligned + res.odd, res.summary.regret)


def test_pooling_beats_global_on_the_odd_segments_and_independent_on_the_rest() -> None:
    """A short, bounded version of docs/bandit.md's run: pooled per-segment bandits lose less than one
    global bandit in the segments whose best arm differs, and less than independent bandits in the
    segments that share the population's best arm (summed over the same seeds)."""
    sc = make_segment_scenario("segments", steps=40, batch=2000)
    glob, indep, pooled = simulate_segments(sc, ["global", "independent", "pooled"], 3, seed=7, draws=300)
    assert pooled.odd.sum() < glob.odd.sum()
    assert pooled.aligned.sum() < indep.aligned.sum()
