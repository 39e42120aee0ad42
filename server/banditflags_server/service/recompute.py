"""The recompute cycle: load a flag's stats, plan its next allocation, write it; and operator changes.

Writes compare-and-set on the flag row, so a concurrent writer (another process or replica) wins cleanly:
a recompute that loses is skipped, an operator change is retried. The planning itself is pure and lives
in :mod:`banditflags_server.engine.planning`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from banditflags_server.engine import compute_weights
from banditflags_server.engine.planning import (
    baseline_index,
    next_write,
    operator_arm_state,
    params_for,
    period_ages,
    plan,
    rule_allocations,
)
from banditflags_server.records import Flag, FlagPatch, RecomputeWrite, require_etag
from banditflags_server.service import metrics
from banditflags_server.service.metrics import record_clamped
from banditflags_server.storage.audit import entry_for_patch
from banditflags_server.storage.lease import Fence, LeaseLost, new_holder_id
from banditflags_server.storage.outage import OutageLog, is_unavailable
from banditflags_server.storage.store import Store

log = logging.getLogger("banditflags_server.recompute")

#: Flags recomputed per database round trip by the loop (bounds memory with many flags).
CHUNK = 500
#: Event batch ids are remembered this long for idempotency (SDK retries are far shorter).
BATCH_RETENTION = 7 * 86400.0
#: Seconds between prunes of old batch ids and expired decision ids.
PRUNE_EVERY = 3600.0


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


def apply_patch(
    store: Store,
    key: str,
    patch: FlagPatch,
    rng: np.random.Generator,
    *,
    actor: str | None = None,
    reason: str = "",
    if_match: str | None = None,
) -> Flag:
    """Apply an operator change; recompute the served weights at once if it touches them.

    A new policy recomputes the bandit weights from all stats (without the max_step limit: the operator
    asked for it); exploration and baseline changes reuse the current bandit weights. ``state`` never
    touches the table. Retries when a concurrent writer changed the flag meanwhile. With an ``actor``
    (a key name) the change is written to the audit log in the same transaction. With ``if_match``
    (an ``If-Match`` header) nothing is written unless the flag's ETag still matches it: checked on
    every read of the loop, and the write is a compare-and-set on that read, so a change made between
    the check and the write is seen on the next turn (:class:`~banditflags_server.records.Stale`).
    """
    for _ in range(10):
        flag = store.get_flag(key)
        if flag is None or flag.allocation is None:
            raise FlagNotFound(key)
        require_etag(if_match, flag.etag)
        changes = dict(patch.changes)
        alloc = None
        now = time.time()
        if "disabled" in changes:
            changes["arm_state"] = operator_arm_state(flag, changes.pop("disabled"), now)
        if "rules" in changes:  # a new bandit rule starts with a version 1 of its own
            trial = dataclasses.replace(flag, rules=changes["rules"])
            rule_allocs = rule_allocations(trial, rng, now)
            if rule_allocs != flag.rule_allocations:
                changes["rule_allocations"] = rule_allocs
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
            # The throttle, the baseline and disabled arms apply to every bandit rule's table too.
            rule_allocs = changes.get("rule_allocations", flag.rule_allocations)
            replanned = {
                r: plan(trial, a, _active_only(a.bandit_weights, trial.active), trial.control, why, now) or a
                for r, a in rule_allocs.items()
            }
            if replanned != flag.rule_allocations:
                changes["rule_allocations"] = replanned
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


def _active_only(weights: list[float], active: tuple[bool, ...]) -> list[float]:
    """A rule's bandit weights with the disabled arms' shares taken out (the next recompute computes
    them afresh); uniform over the active arms if nothing is left."""
    kept = [w if on else 0.0 for w, on in zip(weights, active, strict=True)]
    total = sum(kept)
    if total <= 0:
        return [1.0 / sum(active) if on else 0.0 for on in active]
    return [w / total for w in kept]


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
        "targets": flag.targets,
        "rules": flag.rules,
    }


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
        record_clamped(key, float(periods.clamped_per_arm().sum()))
        metrics = store.load_metrics({key: flag.k})[key] if flag.guardrails else None
        rules = store.load_rule_periods({key: flag.k})[key] if flag.bandit_rules else None
        w = next_write(flag, flag.allocation, periods, rng, time.time(), metrics, rules)
        (ok,) = store.apply_recomputes([w])
        if ok or not force:
            return _result(flag, w, ok)
    raise Conflict(key)


def recompute_due(
    store: Store, rng: np.random.Generator, now: float | None = None, fence: Fence | None = None
) -> list[RecomputeResult]:
    """Recompute every running flag whose interval has passed: a few queries per chunk of flags.

    With a ``fence`` every write checks the recompute lease first; :class:`LeaseLost` ends the cycle.
    """
    now = time.time() if now is None else now
    due = store.due_flags(now)
    results: list[RecomputeResult] = []
    for start in range(0, len(due), CHUNK):
        chunk = due[start : start + CHUNK]
        tables = store.tables(f.key for f in chunk)
        periods = store.load_periods({f.key: f.k for f in chunk})
        metrics = store.load_metrics({f.key: f.k for f in chunk if f.guardrails})
        rules = store.load_rule_periods({f.key: f.k for f in chunk if f.bandit_rules})
        todo: list[tuple[Flag, RecomputeWrite]] = []
        for f in chunk:
            if f.key not in tables:
                continue  # deleted meanwhile
            record_clamped(f.key, float(periods[f.key].clamped_per_arm().sum()))
            try:
                w = next_write(
                    f, tables[f.key], periods[f.key], rng, now, metrics.get(f.key), rules.get(f.key)
                )
                todo.append((f, w))
            except Exception:  # one bad flag must not stop the others
                log.exception("recompute of flag %s failed", f.key)
        oks = store.apply_recomputes([w for _, w in todo], fence)
        results.extend(_result(f, w, ok) for (f, w), ok in zip(todo, oks, strict=True))
    return results


async def recompute_loop(
    store: Store,
    tick: float,
    stop: asyncio.Event,
    seed: Any = None,
    *,
    lease: float = 10.0,
    holder: int | None = None,
) -> None:
    """Every ``tick`` seconds, until ``stop``: take or renew the recompute lease, and while this process
    holds it, recompute the due flags in a worker thread (fenced: a write after the lease was lost is
    refused) and prune old batch ids and expired decision ids. Replicas that do not hold the lease only
    keep trying to take it, so exactly one recomputes and another takes over within ``lease + tick`` when
    it dies. The lease is given up at shutdown, so a rolling restart hands over at once."""
    rng = np.random.default_rng(seed)
    me = new_holder_id() if holder is None else holder
    outage = OutageLog("recompute", log)
    fence: Fence | None = None
    last_prune = 0.0
    try:
        while not stop.is_set():
            was = fence is not None
            try:
                fence = await asyncio.to_thread(store.acquire_lease, me, lease)
                if fence is not None:
                    t0 = time.perf_counter()
                    results = await asyncio.to_thread(recompute_due, store, rng, None, fence)
                    metrics.record_recompute(results, time.perf_counter() - t0)
                    if time.time() - last_prune > PRUNE_EVERY:
                        last_prune = time.time()
                        await asyncio.to_thread(store.prune_batches, last_prune - BATCH_RETENTION)
                        # Decision ids past their credit window: a repeat of one of them counts again.
                        await asyncio.to_thread(store.prune_conversions, last_prune)
            except LeaseLost:
                log.warning("recompute lease lost during a cycle (paused past it?); its writes were refused")
                fence = None
            except Exception as exc:
                # The database may be unavailable for a while: keep serving, try again next tick, and
                # say so once (a bug, though, gets its traceback every time).
                if is_unavailable(exc):
                    outage.failed(exc)
                else:
                    log.exception("recompute cycle failed")
            else:
                outage.ok()
            metrics.record_leadership(was, fence is not None)
            if fence is not None and not was:
                log.info("this process now runs the recompute cycle (lease epoch %d)", fence.epoch)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick)
    finally:
        if fence is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(store.release_lease, fence)
            metrics.record_leadership(True, False)
