"""The bandit and allocation maths: arm statistics in, weights and bucket tables out.

Pure numpy and the standard library, no I/O, importable without the web stack or a database
(DESIGN.md §6). ``banditflags_server.bandit`` re-exports the public names for DESIGN.md's contract.

==================  ======================================================================================
``weights``         :func:`compute_weights`, the entry point: burn-in, policy, guards, floor, step limit
``params``          :class:`PolicyParams` and its validation (:class:`ParamError`)
``pooling``         the (P, K) stats pooled per arm: discount, window, stratification by period
``posteriors``      posterior sampling (Beta, Gaussian / Student t) and the share of draws each arm wins
``policies``        thompson, top-two Thompson, UCB1, epsilon-greedy, fixed
``guards``          the stability and balance guards (anytime-valid tests of "the arms are equal")
``estimates``       per-arm means, intervals, P(best) and expected loss for the API
``stattests``       the SRM check, the winner signal and the guardrail test
``allocation``      the minimal-movement bucket tables
``planning``        a flag's next allocation version, from its records and stats
``segment_pooling`` segment bandits' empirical-Bayes priors from the flag's other rules (:func:`rule_priors`)
==================  ======================================================================================
"""

from banditflags_server.engine.estimates import ArmEstimate, arm_estimates
from banditflags_server.engine.params import DIRECTIONS, POLICIES, POOLING, REWARDS, ParamError, PolicyParams
from banditflags_server.engine.segment_pooling import GroupStats, Prior, rule_priors
from banditflags_server.engine.stattests import SrmResult, chi2_sf, guardrail_harm, srm_check, winner
from banditflags_server.engine.weights import compute_weights

__all__ = [
    "DIRECTIONS",
    "POLICIES",
    "POOLING",
    "REWARDS",
    "ArmEstimate",
    "GroupStats",
    "ParamError",
    "PolicyParams",
    "Prior",
    "SrmResult",
    "arm_estimates",
    "chi2_sf",
    "compute_weights",
    "guardrail_harm",
    "rule_priors",
    "srm_check",
    "winner",
]
