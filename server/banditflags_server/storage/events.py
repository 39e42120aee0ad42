"""The ingest path: an SDK's event batch counted exactly once, and the batch ids that make it so.

A batch is checked against its flags, added up per ``(flag, version, arm)`` (and per guardrail metric)
and written together with its id in one transaction: a retried batch finds its id and counts nothing
(``duplicate``), and the API acknowledges a batch only after that commit. Batches of different ids add
onto the same rows with upserts that lock them in one order. The recompute loop forgets ids after the
SDK's retry window (:meth:`EventsMixin.prune_batches`).

:func:`count_batch` does the work inside a transaction it is given; :meth:`EventsMixin.ingest` gives it
one per batch and retries on a conflict.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from banditflags_server.errors import ValidationError
from banditflags_server.records import EventBatch, EventRow, IngestResult
from banditflags_server.storage import schema as db
from banditflags_server.storage.schema import allocations, arm_stats, batches, flags, metric_stats

#: (flag, version, arm) -> [exposures, rewards, sum, sum of squares]
ArmTotals = dict[tuple[str, int, int], list[float]]
#: (flag, version, arm, metric) -> [rewards, sum, sum of squares]
MetricTotals = dict[tuple[str, int, int, str], list[float]]


class EventsMixin:
    """The part of :class:`~banditflags_server.storage.store.Store` that ingests event batches."""

    engine: Engine

    def ingest(self, batch: EventBatch, *, now: float | None = None) -> IngestResult:
        """Count a batch once: validate it against the flags, add it up and record its id atomically.

        Raises :class:`ValidationError` (nothing written) for rows that do not fit their flag.
        """
        for attempt in range(5):
            try:
                with db.write_tx(self.engine) as conn:
                    return count_batch(conn, batch, time.time() if now is None else now)
            except (IntegrityError, OperationalError):
                # A concurrent writer of the same batch id, or a flag deleted under us: try again, and
                # the next attempt sees the duplicate or ignores the rows.
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def prune_batches(self, older_than: float) -> int:
        """Forget batch ids received before ``older_than`` (epoch seconds); returns how many."""
        with db.write_tx(self.engine) as conn:
            return int(conn.execute(sa.delete(batches).where(batches.c.received_at < older_than)).rowcount)


def count_batch(conn: Connection, batch: EventBatch, now: float) -> IngestResult:
    """Count ``batch`` in the caller's write transaction, unless its id is recorded already.

    Raises :class:`ValidationError` for rows that do not fit their flag, before writing anything.
    """
    result = IngestResult(batch_id=batch.batch_id, duplicate=False)
    rows = [*batch.exposures, *batch.rewards]
    seen = conn.execute(sa.select(batches.c.batch_id).where(batches.c.batch_id == batch.batch_id)).first()
    if seen:
        result.duplicate = True
        return result
    totals, mtotals = _tally(rows, _targets(conn, rows), result)
    conn.execute(sa.insert(batches).values(batch_id=batch.batch_id, received_at=now))
    # Sorted, so concurrent batches lock rows in one order (no deadlock on PostgreSQL).
    if totals:
        _add_up(
            conn,
            arm_stats,
            ("flag", "version", "arm"),
            ("n", "r", "s", "ss"),
            [
                {"flag": f, "version": v, "arm": a, "n": int(t[0]), "r": int(t[1]), "s": t[2], "ss": t[3]}
                for (f, v, a), t in sorted(totals.items())
            ],
        )
    if mtotals:
        _add_up(
            conn,
            metric_stats,
            ("flag", "version", "arm", "metric"),
            ("r", "s", "ss"),
            [
                {"flag": f, "version": v, "arm": a, "metric": m, "r": int(t[0]), "s": t[1], "ss": t[2]}
                for (f, v, a, m), t in sorted(mtotals.items())
            ],
        )
    return result


@dataclass
class _Targets:
    """What the rows of a batch are checked against (only the flags the batch names)."""

    info: dict[str, tuple[int, str]]  # flag -> (number of arms, the objective's reward type)
    guard_metrics: dict[str, dict[str, str]]  # flag -> metric -> reward type
    known: set[tuple[str, int]]  # the (flag, version) pairs of the batch that exist


def _targets(conn: Connection, rows: Sequence[EventRow]) -> _Targets:
    keys = sorted({r.flag for r in rows})
    info: dict[str, tuple[int, str]] = {}
    guard_metrics: dict[str, dict[str, str]] = {}
    known: set[tuple[str, int]] = set()
    if keys:
        for key, variants, objective, guardrails in conn.execute(
            sa.select(flags.c.key, flags.c.variants, flags.c.objective, flags.c.guardrails).where(
                flags.c.key.in_(keys)
            )
        ):
            info[key] = (len(json.loads(variants)), json.loads(objective).get("reward", "binary"))
            guard_metrics[key] = {
                g["metric"]: g.get("reward", "binary") for g in json.loads(guardrails or "[]")
            }
        wanted_versions = sorted({r.version for r in rows if r.flag in info})
        if wanted_versions:
            known = {
                (f, int(v))
                for f, v in conn.execute(
                    sa.select(allocations.c.flag, allocations.c.version).where(
                        allocations.c.flag.in_(list(info)),
                        allocations.c.version.in_(wanted_versions),
                    )
                )
            }
    return _Targets(info, guard_metrics, known)


def _tally(rows: Sequence[EventRow], t: _Targets, result: IngestResult) -> tuple[ArmTotals, MetricTotals]:
    """Add the rows up; count them in ``result`` or note there why a row is ignored.

    Raises :class:`ValidationError` naming every row that does not fit its flag.
    """
    errors: list[tuple[str | None, str]] = []
    totals: ArmTotals = {}
    mtotals: MetricTotals = {}
    for row in rows:
        if row.flag not in t.info:
            result.ignored.append({"field": row.where, "reason": "unknown flag"})
            continue
        k, reward = t.info[row.flag]
        if row.arm >= k:
            errors.append((f"{row.where}.arm", f"out of range: flag has {k} variants"))
            continue
        if row.metric is not None:
            # Guardrail metrics: the SDK cannot know their type, so a bad row is ignored, not a 422
            # that would drop the objective's rows of the same batch.
            kind = t.guard_metrics[row.flag].get(row.metric)
            if kind is None:
                result.ignored.append({"field": row.where, "reason": "unknown metric"})
            elif kind == "binary" and not 0 <= row.sum <= row.count:
                result.ignored.append({"field": row.where, "reason": "binary metric sum out of range"})
            elif (row.flag, row.version) not in t.known:
                result.ignored.append({"field": row.where, "reason": "unknown version"})
            else:
                acc = mtotals.setdefault((row.flag, row.version, row.arm, row.metric), [0, 0.0, 0.0])
                acc[0] += row.count
                acc[1] += row.sum
                acc[2] += row.sum_sq
                result.rewards += 1
            continue
        if row.is_reward and reward == "binary" and not 0 <= row.sum <= row.count:
            errors.append((f"{row.where}.sum", "binary reward sum must be within 0..count"))
            continue
        if (row.flag, row.version) not in t.known:
            result.ignored.append({"field": row.where, "reason": "unknown version"})
            continue
        acc = totals.setdefault((row.flag, row.version, row.arm), [0, 0, 0.0, 0.0])
        if row.is_reward:
            acc[1] += row.count
            acc[2] += row.sum
            acc[3] += row.sum_sq
            result.rewards += 1
        else:
            acc[0] += row.count
            result.exposures += 1
    if errors:
        raise ValidationError(errors)
    return totals, mtotals


def _add_up(
    conn: Connection, table: sa.Table, keys: Sequence[str], sums: Sequence[str], values: list[dict[str, Any]]
) -> None:
    """Insert ``values`` into ``table``, or add their ``sums`` onto the row with the same ``keys``."""
    insert = (pg_dialect.insert if conn.dialect.name == "postgresql" else sqlite_dialect.insert)(table)
    stmt = insert.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={c: table.c[c] + insert.excluded[c] for c in sums},
    )
    conn.execute(stmt, values)
