"""From weights to tables: a new flag's first allocation, operator changes, and the bandit's recompute.

Every path ends the same way: bandit weights -> served weights (exploration throttle toward the baseline)
-> target counts -> a new allocation version only if the counts change, built with ``rebalance`` from the
current table (minimal movement). Writes compare-and-set on the flag row, so a concurrent writer (another
process or replica) wins cleanly: a recompute that loses is skipped, an operator change is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from banditflags_server import allocation as alloc_mod
from banditflags_server import metrics
from banditflags_server.audit import entry_for_patch
from banditflags_server.bandit import PolicyParams, arm_estimates, compute_weights, guardrail_harm, winner
from banditflags_server.store import Allocation, Flag, Periods, RecomputeWrite, Store
from banditflags_server.validation import FlagPatch, NewFlag

#: Metric sums of a flag's guardrails: metric -> (sum, sum of squares) per arm, pooled over versions.
Metrics = dict[str, tuple[np.ndarray, np.ndarray]]

log = logging.getLogger("banditflags_server.recompute")

#: Flags recomputed per database round trip by the loop (bounds memory with many flags).
CHUNK = 500
#: Event batch ids are remembered this long for idempotency (SDK retries are far shorter).
BATCH_RETENTION = 7 * 86400.0


class FlagNotFound(Exception):
    """No flag with this key."""


class NotRunning(Exception):
    """The flag is frozen or killed, so it is not recomputed."""


class Conflict(Exception):
    """The flag kept changing under us (another writer); the caller may retry later."""


@dataclass(frozen=True)
class RecomputeResult:
    """The outcome of one flag's recompute."""

    key: str
    written: bool  # False: skipped because the flag changed meanwhile
    version: int  # the current version after the recompute
    new_version: bool
    moved: int
    bandit_weights: list[float]


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
    k = len(spec.variants)
    params = PolicyParams.from_dict(spec.policy, spec.objective, k)
    z = _no_data(k)
    bandit = [float(w) for w in compute_weights(z, z, z, params, rng)]
    served = alloc_mod.served_weights(bandit, spec.exploration, spec.control)
    counts = alloc_mod.target_counts(served)
    table = alloc_mod.initial_table(counts)
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
    )
    first = Allocation(
        1, now, [c / alloc_mod.TABLE_SIZE for c in counts], bandit, alloc_mod.encode_rle(table), "created", 0
    )
    return flag, first


def apply_patch(
    store: Store,
    key: str,
    patch: FlagPatch,
    rng: np.random.Generator,
    *,
    actor: str | None = None,
    reason: str = "",
) -> Flag:
    """Apply an operator change; recompute the served weights at once if it touches them.

    A new policy recomputes the bandit weights from all stats (without the max_step limit: the operator
    asked for it); exploration and baseline changes reuse the current bandit weights. ``state`` never
    touches the table. Retries when a concurrent writer changed the flag meanwhile. With an ``actor``
    (a key name) the change is written to the audit log in the same transaction.
    """
    for _ in range(10):
        flag = store.get_flag(key)
        if flag is None or flag.allocation is None:
            raise FlagNotFound(key)
        changes = dict(patch.changes)
        alloc = None
        now = time.time()
        if "disabled" in changes:
            changes["arm_state"] = operator_arm_state(flag, changes.pop("disabled"), now)
        if patch.touches_table:
            trial = dataclasses.replace(flag, **{n: v for n, v in changes.items() if hasattr(flag, n)})
            periods = store.load_periods({key: flag.k})[key]
            bandit = list(flag.bandit_weights)
            arms_changed = trial.active != flag.active
            if "policy" in changes or arms_changed:
                params = dataclasses.replace(
                    params_for(trial),
                    period_ages=period_ages(periods.created_at, now),
                    active=None if all(trial.active) else trial.active,
                )
                bandit = [float(w) for w in compute_weights(periods.n, periods.s, periods.ss, params, rng)]
                changes["bandit_weights"] = bandit
            why = next(
                (r for r in ("policy", "exploration", "baseline") if r in changes),
                "arms",  # the disabled list changed (or was given unchanged)
            )
            alloc = plan(trial, flag.allocation, bandit, baseline_index(trial, periods), why, now)
        entry = None
        if actor is not None:
            entry = entry_for_patch(key, actor, _audited(flag), changes, reason, now=now)
            if entry is not None and alloc is not None and entry.before is not None and entry.after:
                entry.before.update(weights=flag.allocation.weights, version=flag.version)
                entry.after.update(weights=alloc.weights, version=alloc.version)
        if store.update_flag(flag, changes, alloc, now=now, audit=entry):
            got = store.get_flag(key)
            if got is None:
                raise FlagNotFound(key)
            return got
    raise Conflict(key)


def _audited(flag: Flag) -> dict[str, Any]:
    """The fields of a flag an operator can change, as the audit log compares them."""
    return {
        "state": flag.state,
        "exploration": flag.exploration,
        "baseline": flag.baseline,
        "policy": flag.policy,
        "description": flag.description,
        "recompute_interval": flag.recompute_interval,
        "guardrails": flag.guardrails,
        "arm_state": flag.arm_state,
    }


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


def _compute(
    flag: Flag,
    current: Allocation,
    periods: Periods,
    rng: np.random.Generator,
    now: float,
    metrics: Metrics | None = None,
) -> RecomputeWrite:
    changes: dict[str, Any] = {}
    reason = "recompute"
    newly = guardrail_disables(flag, periods, metrics or {}, now)
    if newly:
        state = {**flag.arm_state, "disabled": {**flag.disabled, **newly}}
        changes["arm_state"] = state
        flag = dataclasses.replace(flag, arm_state=state)
        reason = "guardrail"
    params = with_context(params_for(flag), flag, periods, now)
    bandit = [float(w) for w in compute_weights(periods.n, periods.s, periods.ss, params, rng)]
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
    return RecomputeWrite(flag.key, flag.row_version, bandit, now, new, changes)


def _result(flag: Flag, w: RecomputeWrite, ok: bool) -> RecomputeResult:
    a = w.allocation if ok else None
    return RecomputeResult(
        flag.key, ok, a.version if a else flag.version, a is not None, a.moved if a else 0, w.bandit_weights
    )


def recompute_flag(
    store: Store, key: str, rng: np.random.Generator, *, force: bool = False
) -> RecomputeResult:
    """Recompute one flag now.

    ``force`` (the API's ``POST .../recompute``): raise :class:`NotRunning` for a frozen or killed flag
    and retry if a concurrent writer got there first. Without it such flags are skipped (``written`` False).
    """
    for _ in range(5 if force else 1):
        flag = store.get_flag(key)
        if flag is None or flag.allocation is None:
            raise FlagNotFound(key)
        if flag.state != "running":
            if force:
                raise NotRunning(key)
            return RecomputeResult(key, False, flag.version, False, 0, flag.bandit_weights)
        periods = store.load_periods({key: flag.k})[key]
        metrics = store.load_metrics({key: flag.k})[key] if flag.guardrails else None
        w = _compute(flag, flag.allocation, periods, rng, time.time(), metrics)
        (ok,) = store.apply_recomputes([w])
        if ok or not force:
            return _result(flag, w, ok)
    raise Conflict(key)


def recompute_due(store: Store, rng: np.random.Generator, now: float | None = None) -> list[RecomputeResult]:
    """Recompute every running flag whose interval has passed: a few queries per chunk of flags."""
    now = time.time() if now is None else now
    due = store.due_flags(now)
    results: list[RecomputeResult] = []
    for start in range(0, len(due), CHUNK):
        chunk = due[start : start + CHUNK]
        tables = store.tables(f.key for f in chunk)
        periods = store.load_periods({f.key: f.k for f in chunk})
        metrics = store.load_metrics({f.key: f.k for f in chunk if f.guardrails})
        todo: list[tuple[Flag, RecomputeWrite]] = []
        for f in chunk:
            if f.key not in tables:
                continue  # deleted meanwhile
            try:
                todo.append((f, _compute(f, tables[f.key], periods[f.key], rng, now, metrics.get(f.key))))
            except Exception:  # one bad flag must not stop the others
                log.exception("recompute of flag %s failed", f.key)
        oks = store.apply_recomputes([w for _, w in todo])
        results.extend(_result(f, w, ok) for (f, w), ok in zip(todo, oks, strict=True))
    return results


async def recompute_loop(store: Store, tick: float, stop: asyncio.Event, seed: Any = None) -> None:
    """Every ``tick`` seconds, recompute the due flags in a worker thread, until ``stop`` is set."""
    rng = np.random.default_rng(seed)
    last_prune = 0.0
    while not stop.is_set():
        try:
            t0 = time.perf_counter()
            results = await asyncio.to_thread(recompute_due, store, rng)
            metrics.record_recompute(results, time.perf_counter() - t0)
            if time.time() - last_prune > 3600:
                last_prune = time.time()
                await asyncio.to_thread(store.prune_batches, last_prune - BATCH_RETENTION)
        except Exception:
            # The database may be briefly unavailable; keep serving and try again next tick.
            log.exception("recompute cycle failed")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=tick)
