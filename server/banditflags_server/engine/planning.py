"""Planning a flag's next allocation: pure functions from records and arm stats to a new table.

Every path ends the same way: bandit weights -> served weights (exploration throttle toward the baseline)
-> target counts -> a new allocation version only if the counts change, built with ``rebalance`` from the
current table (minimal movement). No I/O: :mod:`banditflags_server.service.recompute` loads the inputs
from the store, calls :func:`next_write` and writes the result.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from banditflags_server.engine import allocation as alloc_mod
from banditflags_server.engine.estimates import arm_estimates
from banditflags_server.engine.params import PolicyParams
from banditflags_server.engine.segment_pooling import DEFAULT, GroupStats, Prior, rule_priors
from banditflags_server.engine.stattests import guardrail_harm, winner
from banditflags_server.engine.weights import compute_weights
from banditflags_server.records import Allocation, Flag, NewFlag, Periods, RecomputeWrite

#: Metric sums of a flag's guardrails: metric -> (sum, sum of squares) per arm, pooled over versions.
Metrics = dict[str, tuple[np.ndarray, np.ndarray]]

log = logging.getLogger("banditflags_server.recompute")


def params_for(flag: Flag) -> PolicyParams:
    """The flag's policy parameters (validated when stored)."""
    return _params(
        json.dumps(flag.policy, sort_keys=True), json.dumps(flag.objective, sort_keys=True), flag.k
    )


@functools.lru_cache(maxsize=4096)
def _params(policy: str, objective: str, k: int) -> PolicyParams:
    # Validating the same policy for every flag on every cycle cost ~0.1 s per 1,000 flags.
    return PolicyParams.from_dict(json.loads(policy), json.loads(objective), k)


def period_ages(created_at: Sequence[float], now: float) -> tuple[float, ...]:
    """Age in seconds of each period (allocation version): from the middle of its span to ``now``."""
    if not created_at:
        return ()
    starts = np.asarray(created_at, dtype=float)
    ends = np.append(starts[1:], now)
    return tuple(float(a) for a in np.maximum(0.0, now - (starts + ends) / 2.0))


def with_context(params: PolicyParams, flag: Flag, periods: Periods, now: float) -> PolicyParams:
    """Add the per-call context: previous weights (for max_step), period ages, disabled arms."""
    active = flag.active
    return dataclasses.replace(
        params,
        previous=tuple(float(w) for w in flag.bandit_weights),
        period_ages=period_ages(periods.created_at, now),
        active=None if all(active) else active,
    )


def baseline_index(flag: Flag, periods: Periods | None) -> int:
    """The arm the throttle sends traffic to: the control, or the leader by observed mean."""
    if flag.baseline != "leader" or periods is None or periods.n.size == 0:
        return flag.control
    n = periods.n.sum(axis=0)
    if not n.any():
        return flag.control
    means = np.where(n > 0, periods.s.sum(axis=0) / np.maximum(n, 1), np.nan)
    if flag.objective.get("direction") == "minimize":
        means = -means
    means = np.where(flag.active, means, np.nan)  # a disabled arm is never the baseline
    best = float(np.nanmax(means))
    # On a tie the control stays the baseline, so the table does not churn between equals.
    if not np.isnan(means[flag.control]) and means[flag.control] >= best:
        return flag.control
    return int(np.nanargmax(means))


def plan(
    flag: Flag,
    current: Allocation,
    bandit_weights: Sequence[float],
    baseline: int,
    reason: str,
    now: float,
    *,
    exploration: float | None = None,
) -> Allocation | None:
    """The next allocation version, or None when the target counts equal the current table's."""
    k = flag.k
    e = flag.exploration if exploration is None else exploration
    served = alloc_mod.served_weights(list(bandit_weights), e, baseline)
    counts = alloc_mod.target_counts(served)
    old = alloc_mod.decode_rle(current.table_rle, k)
    if counts == alloc_mod.table_counts(old, k):
        return None
    new = alloc_mod.rebalance(old, counts)
    return Allocation(
        version=current.version + 1,
        created_at=now,
        weights=[c / alloc_mod.TABLE_SIZE for c in counts],
        bandit_weights=[float(w) for w in bandit_weights],
        table_rle=alloc_mod.encode_rle(new),
        reason=reason,
        moved=alloc_mod.moved_buckets(old, new),
    )


def _no_data(k: int) -> np.ndarray:
    return np.zeros(k, dtype=float)


def new_flag(spec: NewFlag, rng: np.random.Generator, now: float) -> tuple[Flag, Allocation]:
    """A flag row and its version 1: the policy's weights with no data, throttled, as a fresh table."""
    first = fresh_allocation(spec.policy, spec.objective, len(spec.variants), spec.exploration, spec.control,
                             rng, now)  # fmt: skip
    bandit = first.bandit_weights
    flag = Flag(
        key=spec.key,
        description=spec.description,
        salt=secrets.token_hex(8),
        variants=spec.variants,
        control=spec.control,
        objective=spec.objective,
        policy=spec.policy,
        state=spec.state,
        exploration=spec.exploration,
        baseline=spec.baseline,
        recompute_interval=spec.recompute_interval,
        bandit_weights=bandit,
        version=1,
        row_version=1,
        created_at=now,
        updated_at=now,
        recomputed_at=None,
        guardrails=spec.guardrails,
        targets=spec.targets,
        rules=spec.rules,
    )
    flag.rule_allocations = rule_allocations(flag, rng, now)
    return flag, first


def fresh_allocation(
    policy: dict[str, Any],
    objective: dict[str, Any],
    k: int,
    exploration: float,
    baseline: int,
    rng: np.random.Generator,
    now: float,
) -> Allocation:
    """Version 1 of an allocation: the policy's weights with no data, throttled, as a fresh table."""
    params = PolicyParams.from_dict(policy, objective, k)
    z = _no_data(k)
    bandit = [float(w) for w in compute_weights(z, z, z, params, rng)]
    counts = alloc_mod.target_counts(alloc_mod.served_weights(bandit, exploration, baseline))
    table = alloc_mod.initial_table(counts)
    return Allocation(
        1, now, [c / alloc_mod.TABLE_SIZE for c in counts], bandit, alloc_mod.encode_rle(table), "created", 0
    )


def rule_allocations(flag: Flag, rng: np.random.Generator, now: float) -> dict[str, Allocation]:
    """The flag's rule allocations with a version 1 for each bandit rule that has none yet (issue 12);
    those of rules removed since are kept, so a rule that comes back resumes its table and versions."""
    out = dict(flag.rule_allocations)
    for rule in flag.bandit_rules:
        if rule not in out:
            out[rule] = fresh_allocation(
                flag.policy, flag.objective, flag.k, flag.exploration, flag.control, rng, now
            )
    return out


def operator_arm_state(flag: Flag, disabled: list[str], now: float) -> dict[str, Any]:
    """The arm state after the operator set the disabled list: arms left out are re-enabled and exempt
    from automatic guardrail disabling from then on (the operator overrode it); new ones are recorded."""
    before = flag.disabled
    exempt = set(flag.arm_state.get("exempt", []))
    exempt |= {key for key in before if key not in disabled}
    exempt -= set(disabled)
    state = {
        "disabled": {
            key: before.get(key) or {"reason": "disabled by the operator", "by": "operator", "at": now}
            for key in disabled
        },
        "exempt": sorted(exempt),
    }
    return state


def guardrail_disables(flag: Flag, periods: Periods, metrics: Metrics, now: float) -> dict[str, Any]:
    """Arms (variant key -> record) that a guardrail disables now: worse than the control beyond the
    tolerance with probability >= the guardrail's confidence, with enough exposures on both arms."""
    if not flag.guardrails or periods.n.size == 0:
        return {}
    n = periods.n.sum(axis=0)
    min_n = max(params_for(flag).burn_in, 100)
    if n[flag.control] < min_n:
        return {}
    skip = set(flag.disabled) | set(flag.arm_state.get("exempt", []))
    zero = np.zeros(flag.k)
    out: dict[str, Any] = {}
    for g in flag.guardrails:
        s, ss = metrics.get(g["metric"], (zero, zero))
        harm = guardrail_harm(
            n, s, ss, flag.control,
            binary=g["reward"] == "binary", direction=g["direction"],
            tolerance=float(g["tolerance"]), relative=bool(g["relative"]),
        )  # fmt: skip
        for i, h in enumerate(harm):
            key = flag.variants[i]["key"]
            if h is None or key in skip or key in out or n[i] < min_n or h < g["confidence"]:
                continue
            out[key] = {
                "reason": f"guardrail {g['metric']!r}: worse than the control beyond the tolerance "
                f"with probability {h:.4f}",
                "by": "guardrail",
                "metric": g["metric"],
                "probability": round(h, 6),
                "at": now,
            }
    return out


def rule_weights(
    flag: Flag,
    current: Allocation,
    periods: Periods,
    rng: np.random.Generator,
    now: float,
    prior: Prior | None = None,
) -> list[float]:
    """A bandit rule's bandit weights from its own stats only, with the flag's policy, objective and
    disabled arms (``max_step`` toward the rule's own previous weights).

    ``prior``: the rule's empirical-Bayes prior from segment pooling (``segment_priors(...)[rule_id]``),
    added to its stats by ``compute_weights``; this is the one place a rule's prior enters."""
    params = dataclasses.replace(
        with_context(params_for(flag), flag, periods, now), previous=tuple(current.bandit_weights)
    )
    return [float(w) for w in compute_weights(periods.n, periods.s, periods.ss, params, rng, prior)]


def next_rule_allocations(
    flag: Flag,
    rule_periods: dict[str, Periods],
    rng: np.random.Generator,
    now: float,
    priors: Mapping[str, Prior] | None = None,
) -> tuple[dict[str, Allocation], dict[str, Allocation]]:
    """Each bandit rule's next allocation (issue 12): its weights from its own periods
    (:func:`rule_weights`), throttled like the flag's, and a new version of its table only when the
    target counts change (minimal movement inside the rule's own table). Returns every rule's current
    allocation and the new versions among them."""
    out = dict(flag.rule_allocations)
    new_versions: dict[str, Allocation] = {}
    for rule in flag.bandit_rules:
        current = out.get(rule)
        if current is None:
            continue
        periods = rule_periods.get(rule) or _empty_periods(flag.k)
        bandit = rule_weights(flag, current, periods, rng, now, (priors or {}).get(rule))
        new = plan(flag, current, bandit, baseline_index(flag, periods), "recompute", now)
        if new is not None:
            out[rule] = new_versions[rule] = new
        elif bandit != current.bandit_weights:  # same table: only the weights max_step starts from
            out[rule] = dataclasses.replace(current, bandit_weights=bandit)
    return out, new_versions


def _empty_periods(k: int) -> Periods:
    z = np.zeros((0, k))
    return Periods([], [], z, z, z, z)


def next_write(
    flag: Flag,
    current: Allocation,
    periods: Periods,
    rng: np.random.Generator,
    now: float,
    metrics: Metrics | None = None,
    rule_periods: dict[str, Periods] | None = None,
) -> RecomputeWrite:
    """The write that recomputes ``flag`` now: guardrail disables, bandit weights, promotion, new table;
    and each bandit rule's, from ``rule_periods`` (its own stats by rule id).

    With bandit rules, the default allocation and every rule start from their segment-pooling priors
    (:func:`segment_priors`, ``pooling: "auto"``)."""
    changes: dict[str, Any] = {}
    reason = "recompute"
    newly = guardrail_disables(flag, periods, metrics or {}, now)
    if newly:
        state = {**flag.arm_state, "disabled": {**flag.disabled, **newly}}
        changes["arm_state"] = state
        flag = dataclasses.replace(flag, arm_state=state)
        reason = "guardrail"
    priors: dict[str, Prior] = {}
    if flag.bandit_rules:
        own = rule_periods or {}
        priors = segment_priors(flag, periods, {r: own.get(r) for r in flag.bandit_rules}, now)
    params = with_context(params_for(flag), flag, periods, now)
    prior = priors.get(DEFAULT)
    bandit = [float(w) for w in compute_weights(periods.n, periods.s, periods.ss, params, rng, prior)]
    if params.auto_promote and params.name != "fixed" and periods.n.size:
        est = arm_estimates(periods.n, periods.s, periods.ss, params, rng)
        best = winner(est, params.winner_p, params.winner_min_n)
        if best is not None:
            # A 100% rollout of the winner: a fixed policy, and no throttle toward the control.
            bandit = [1.0 if i == best else 0.0 for i in range(flag.k)]
            policy = {**flag.policy, "name": "fixed", "weights": bandit, "auto_promote": False}
            changes.update(policy=policy, exploration=1.0)
            flag = dataclasses.replace(flag, policy=policy, exploration=1.0)
            reason = "promoted"
            log.info("flag %s: promoted variant %s (P(best) >= %s)", flag.key, best, params.winner_p)
    new = plan(flag, current, bandit, baseline_index(flag, periods), reason, now)
    rule_versions: dict[str, Allocation] = {}
    if flag.bandit_rules:
        allocs, rule_versions = next_rule_allocations(flag, rule_periods or {}, rng, now, priors=priors)
        if allocs != flag.rule_allocations:
            changes["rule_allocations"] = allocs
    return RecomputeWrite(flag.key, flag.row_version, bandit, now, new, changes, rule_versions)


def _group(flag: Flag, periods: Periods | None, now: float) -> GroupStats:
    if periods is None or periods.n.size == 0:
        z = _no_data(flag.k)
        return GroupStats(z, z, z)
    return GroupStats(periods.n, periods.s, periods.ss, period_ages(periods.created_at, now))


def segment_priors(
    flag: Flag, default: Periods | None, rules: Mapping[str, Periods | None], now: float
) -> dict[str, Prior]:
    """The segment bandits' empirical-Bayes priors for this recompute (docs/bandit.md, "Segment bandits").

    ``default``: the default allocation's stats (rule ""), ``rules``: each *bandit* rule's own stats by
    rule id (its allocation versions; None: none yet). Returns a :class:`Prior` per rule id and ``""``
    for the default allocation, which :func:`next_write` passes to ``compute_weights(..., prior=)``
    (:func:`rule_weights` for the rules); all :meth:`Prior.none` with ``pooling: "off"``.
    """
    params = params_for(flag)
    active = flag.active
    params = dataclasses.replace(params, active=None if all(active) else tuple(active))
    groups = {rule: _group(flag, p, now) for rule, p in rules.items()}
    return rule_priors(_group(flag, default, now), groups, params)
