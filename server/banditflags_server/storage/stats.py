"""What the bandit learns from: arm stats per allocation version (periods) and guardrail metric sums,
read as numpy arrays for the engine (:mod:`banditflags_server.engine`).

The counts are written by the ingest path (:mod:`banditflags_server.storage.events`). A binary
objective's sums are clamped here, where every reader (the recompute, the API's estimates, the console)
gets them: more conversions than exposures in a (version, arm) cannot be true (repeats sent without
decision ids), so ``s`` and ``ss`` are cut to ``n`` per cell and the excess is kept in
:attr:`Periods.clamped` for the warnings. Rewards may arrive before their exposures (in another batch),
so this happens when the stats are read, never as a refusal at ingest.
"""

from __future__ import annotations

import json

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from banditflags_server.records import Periods
from banditflags_server.storage import schema as db
from banditflags_server.storage.schema import (
    allocations,
    arm_stats,
    flags,
    metric_stats,
    rule_allocations,
    rule_stats,
)


class StatsMixin:
    """The part of :class:`~banditflags_server.storage.store.Store` that reads the stats."""

    engine: Engine

    def load_periods(self, arms: dict[str, int]) -> dict[str, Periods]:
        """Arm stats of the given flags (key -> number of arms) as ``(P, K)`` arrays, one query each.

        Every allocation version is a period, also those without any counts (zeros), so period ages line
        up with the versions. Binary objectives come clamped (``s``, ``ss`` <= ``n`` per cell).
        """
        out: dict[str, Periods] = {}
        if not arms:
            return out
        keys = list(arms)
        with db.read_tx(self.engine) as conn:
            vrows = conn.execute(
                sa.select(allocations.c.flag, allocations.c.version, allocations.c.created_at)
                .where(allocations.c.flag.in_(keys))
                .order_by(allocations.c.flag, allocations.c.version)
            ).all()
            srows = conn.execute(
                sa.select(
                    arm_stats.c.flag,
                    arm_stats.c.version,
                    arm_stats.c.arm,
                    arm_stats.c.n,
                    arm_stats.c.r,
                    arm_stats.c.s,
                    arm_stats.c.ss,
                ).where(arm_stats.c.flag.in_(keys))
            ).all()
            binary = _binary(conn, keys)
        versions: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
        for flag, version, created in vrows:
            versions[flag].append((int(version), float(created)))
        index: dict[str, dict[int, int]] = {}
        for key in keys:
            vs = versions[key]
            k = arms[key]
            shape = (len(vs), k)
            out[key] = Periods(
                versions=[v for v, _ in vs],
                created_at=[c for _, c in vs],
                n=np.zeros(shape),
                r=np.zeros(shape),
                s=np.zeros(shape),
                ss=np.zeros(shape),
            )
            index[key] = {v: i for i, (v, _) in enumerate(vs)}
        for flag, version, arm, n, r, s, ss in srows:
            p = out[flag]
            row = index[flag].get(int(version))
            if row is None or not 0 <= arm < p.n.shape[1]:
                continue
            p.n[row, arm] = n
            p.r[row, arm] = r
            p.s[row, arm] = s
            p.ss[row, arm] = ss
        for key in binary:
            _clamp(out[key])
        return out

    def load_rule_periods(self, arms: dict[str, int]) -> dict[str, dict[str, Periods]]:
        """The stats of the rows served by rules and targets (issue 12), per flag and rule id, as
        :meth:`load_periods` gives the default allocation's. A bandit rule's periods are its own
        allocation versions (those without counts included); other rules' (fixed ones, targets, rules
        deleted since) are the flag's versions they have counts in, dated like the flag's."""
        out: dict[str, dict[str, Periods]] = {key: {} for key in arms}
        if not arms:
            return out
        keys = list(arms)
        with db.read_tx(self.engine) as conn:
            ra = rule_allocations.c
            own = conn.execute(
                sa.select(ra.flag, ra.rule, ra.version, ra.created_at).where(ra.flag.in_(keys))
            )
            versions: dict[tuple[str, str], dict[int, float]] = {}
            for flag, rule, version, created in own:
                versions.setdefault((flag, rule), {})[int(version)] = float(created)
            rs = rule_stats.c
            srows = conn.execute(
                sa.select(rs.flag, rs.rule, rs.version, rs.arm, rs.n, rs.r, rs.s, rs.ss).where(
                    rs.flag.in_(keys)
                )
            ).all()
            dated = {
                (f, int(v)): float(c)
                for f, v, c in conn.execute(
                    sa.select(allocations.c.flag, allocations.c.version, allocations.c.created_at).where(
                        allocations.c.flag.in_(sorted({r[0] for r in srows}))
                    )
                )
            }
            binary = _binary(conn, keys)
        for flag, rule, version, *_ in srows:
            v = int(version)
            versions.setdefault((flag, rule), {}).setdefault(v, dated.get((flag, v), 0.0))
        for (flag, rule), vs in versions.items():
            ordered = sorted(vs.items())
            shape = (len(ordered), arms[flag])
            out[flag][rule] = Periods(
                versions=[v for v, _ in ordered],
                created_at=[c for _, c in ordered],
                n=np.zeros(shape), r=np.zeros(shape), s=np.zeros(shape), ss=np.zeros(shape),
            )  # fmt: skip
        for flag, rule, version, arm, n, r, s, ss in srows:
            p = out[flag][rule]
            row = p.versions.index(int(version))
            if 0 <= arm < p.n.shape[1]:
                p.n[row, arm], p.r[row, arm], p.s[row, arm], p.ss[row, arm] = n, r, s, ss
        for flag in binary:
            for p in out[flag].values():
                _clamp(p)
        return out

    def load_metrics(self, arms: dict[str, int]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """Guardrail metric sums per flag (key -> number of arms): metric -> (s, ss), pooled over versions."""
        out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {key: {} for key in arms}
        if not arms:
            return out
        stmt = (
            sa.select(
                metric_stats.c.flag,
                metric_stats.c.metric,
                metric_stats.c.arm,
                sa.func.sum(metric_stats.c.s),
                sa.func.sum(metric_stats.c.ss),
            )
            .where(metric_stats.c.flag.in_(list(arms)))
            .group_by(metric_stats.c.flag, metric_stats.c.metric, metric_stats.c.arm)
        )
        with db.read_tx(self.engine) as conn:
            for flag, metric, arm, s, ss in conn.execute(stmt):
                k = arms[flag]
                if not 0 <= arm < k:
                    continue
                if metric not in out[flag]:
                    out[flag][metric] = (np.zeros(k), np.zeros(k))
                out[flag][metric][0][arm] = float(s)
                out[flag][metric][1][arm] = float(ss)
        return out


def _binary(conn: Connection, keys: list[str]) -> set[str]:
    """The flags among ``keys`` whose objective is binary (their sums are clamped)."""
    stmt = sa.select(flags.c.key, flags.c.objective).where(flags.c.key.in_(keys))
    return {
        key
        for key, objective in conn.execute(stmt)
        if json.loads(objective).get("reward", "binary") == "binary"
    }


def _clamp(p: Periods) -> None:
    """Cut a binary objective's ``s`` and ``ss`` to ``n`` per cell; the excess goes to ``p.clamped``."""
    p.clamped = np.maximum(p.s - p.n, 0.0)
    np.minimum(p.s, p.n, out=p.s)
    np.minimum(p.ss, p.n, out=p.ss)
