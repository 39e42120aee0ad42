"""Hypothesis strategies shared by the engine's test modules (on the pytest path via ``pythonpath``)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


def arm_stats(draw: st.DrawFn, k: int, p: int, max_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Consistent ``(P, K)`` exposures, reward sums and sums of squares, and their reward kind.

    Binary: whole conversions no more than the exposures. Continuous: sums whose implied variance is
    never negative, at scales from 1e-3 to 1e4 (so the engine's conditioning is exercised too).
    """
    reward = draw(st.sampled_from(["binary", "continuous"]))
    n = np.array(draw(st.lists(st.integers(0, max_n), min_size=p * k, max_size=p * k)), float).reshape(p, k)
    frac = np.array(draw(st.lists(st.floats(0, 1), min_size=p * k, max_size=p * k))).reshape(p, k)
    if reward == "binary":
        s = np.floor(n * frac)
        ss = s.copy()
    else:
        scale = draw(st.sampled_from([1e-3, 1.0, 1e4]))
        s = (frac - 0.3) * n * scale
        ss = (frac - 0.3) ** 2 * n * scale**2 + n * scale**2 * draw(st.sampled_from([0.0, 0.5]))
    return n, s, ss, reward


def active_arms(draw: st.DrawFn, k: int) -> tuple[bool, ...]:
    """Which of k arms are active: any pattern with at least one."""
    active = tuple(draw(st.lists(st.booleans(), min_size=k, max_size=k)))
    return active if any(active) else (True, *active[1:])
