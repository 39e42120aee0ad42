"""The ingest path: an SDK's event batch counted exactly once, and the batch ids that make it so.

A batch is checked against its flags, added up per ``(flag, rule, version, arm)`` (rule "" is the flag's
default allocation, in ``arm_stats``; a rule id or "target" goes to ``rule_stats``; and per guardrail
metric, of the default allocation only)
and written together with its id in one transaction: a retried batch finds its id and counts nothing
(``duplicate``), and the API acknowledges a batch only after that commit. Batches of different ids add
onto the same rows with upserts that lock them in one order. The recompute loop forgets ids after the
SDK's retry window (:meth:`EventsMixin.prune_batches`).

Conversions of a binary objective may come with their decision ids (``ids``): each ``(flag, arm, id)``
is credited once per credit window (:func:`dedup`), whichever batch, row or process repeats it; a repeat
is taken out of its row's count, sum and sum of squares and counted in ``duplicates``. The ids live in
the ``conversions`` table until their window ends (:meth:`EventsMixin.prune_conversions`); a repeat that
arrives after that counts again. Two batches racing for one id on PostgreSQL both insert it: the second
fails on the primary key, and its transaction is retried, then finds the id.

:func:`count_batch` does the work inside a transaction it is given; :meth:`EventsMixin.ingest` gives it
one per batch and retries on a conflict.
"""

from __future__ import annotations

import dataclasses
import functools
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
from banditflags_server.storage.schema import (
    allocations,
    arm_stats,
    batches,
    conversions,
    flags,
    metric_stats,
    rule_allocations,
    rule_stats,
)

#: (flag, rule, version, arm) -> [exposures, rewards, sum, sum of squares]; rule "": the default allocation
ArmTotals = dict[tuple[str, str, int, int], list[float]]
#: (flag, version, arm, metric) -> [rewards, sum, sum of squares]
MetricTotals = dict[tuple[str, int, int, str], list[float]]
#: Decision ids looked up per statement (bind parameters stay far below SQLite's limit).
ID_CHUNK = 500
#: The largest version a row can name that the database's integer columns hold (a larger one is unknown).
MAX_VERSION = 2**31 - 1
#: Expired conversions deleted per transaction by the prune (the write lock is let go in between).
PRUNE_CHUNK = 20_000
#: Attempts of a batch's transaction before a conflict is reported (as a 500: the SDK retries).
ATTEMPTS = 8


class _Raced(Exception):
    """A concurrent batch renewed the same expired conversion first: retry, and find it."""


@dataclass
class Claim:
    """The decision ids of one accepted reward row (``where``) of a binary objective."""

    where: str
    flag: str
    rule: str
    version: int
    arm: int
    ids: list[str]


class EventsMixin:
    """The part of :class:`~banditflags_server.storage.store.Store` that ingests event batches."""

    engine: Engine

    def ingest(self, batch: EventBatch, *, now: float | None = None) -> IngestResult:
        """Count a batch once: validate it against the flags, add it up and record its id atomically.

        Raises :class:`ValidationError` (nothing written) for rows that do not fit their flag.
        """
        for attempt in range(ATTEMPTS):
            try:
                with db.write_tx(self.engine) as conn:
                    return count_batch(conn, batch, time.time() if now is None else now)
            except (IntegrityError, OperationalError, _Raced):
                # A concurrent writer of the same batch id or decision id, or a flag deleted under us: try
                # again, and the next attempt sees the duplicate or ignores the rows.
                if attempt == ATTEMPTS - 1:
                    raise
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    def prune_batches(self, older_than: float) -> int:
        """Forget batch ids received before ``older_than`` (epoch seconds); returns how many."""
        with db.write_tx(self.engine) as conn:
            return int(conn.execute(sa.delete(batches).where(batches.c.received_at < older_than)).rowcount)

    def prune_conversions(self, now: float) -> int:
        """Forget the decision ids whose credit window ended before ``now``; returns how many.

        In chunks of :data:`PRUNE_CHUNK` rows, one transaction each, so that ingest waits at most for one.
        """
        gone = 0
        while True:
            with db.write_tx(self.engine) as conn:
                # The expiry of the chunk's last row: it and everything before it go (ties add a few).
                edge = conn.execute(
                    sa.select(conversions.c.expires_at)
                    .where(conversions.c.expires_at < now)
                    .order_by(conversions.c.expires_at)
                    .offset(PRUNE_CHUNK - 1)
                    .limit(1)
                ).scalar()
                expired = conversions.c.expires_at < now if edge is None else conversions.c.expires_at <= edge
                gone += int(conn.execute(sa.delete(conversions).where(expired)).rowcount)
            if edge is None:
                return gone


def count_batch(conn: Connection, batch: EventBatch, now: float) -> IngestResult:
    """Count ``batch`` in the caller's write transaction, unless its id is recorded already.

    Raises :class:`ValidationError` for rows that do not fit their flag, before writing anything.
    """
    prepared = prepare_batch(conn, batch, now)
    write_totals(conn, prepared.totals, prepared.metric_totals)
    return prepared.result


@dataclass
class Prepared:
    """A batch checked, its id and decision ids recorded, its sums not yet written."""

    result: IngestResult
    totals: ArmTotals
    metric_totals: MetricTotals


def prepare_batch(conn: Connection, batch: EventBatch, now: float) -> Prepared:
    """Everything of :func:`count_batch` but writing the sums: check the id and the rows, record the batch
    id and the new decision ids. The sums of several batches can then be written at once
    (:func:`count_group`)."""
    result = IngestResult(batch_id=batch.batch_id, duplicate=False)
    rows = [*batch.exposures, *batch.rewards]
    seen = conn.execute(sa.select(batches.c.batch_id).where(batches.c.batch_id == batch.batch_id)).first()
    if seen:
        result.duplicate = True
        return Prepared(result, {}, {})
    targets = _targets(conn, rows)
    totals, mtotals, claims = _tally(rows, targets, result)
    conn.execute(sa.insert(batches).values(batch_id=batch.batch_id, received_at=now))
    if claims:
        dedup(conn, claims, targets.windows, now, totals, result)
    return Prepared(result, totals, mtotals)


class Retry(Exception):
    """A batch of a group met a concurrent writer (another replica): count it again in the next group."""


def count_group(
    conn: Connection, group: Sequence[EventBatch], now: float, cache: TargetsCache | None = None
) -> list[IngestResult | Exception]:
    """Count several batches in the caller's one write transaction (group commit).

    A few statements for the whole group, not per batch: one lookup of the flags and versions the rows
    name, one ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` of the batch ids (an id it does not return
    was counted before, by this replica or another: a duplicate, which counts nothing), and one upsert
    per stats table with the sums coalesced per ``(flag, rule, version, arm)`` (a group of a hundred
    batches on one flag touches each stats row once). A batch that does not fit its flags gets its
    ValidationError and leaves nothing (unless it was counted before: then it is a duplicate, as a
    retry of an accepted batch must be); a batch with decision ids is recorded in a savepoint of its
    own, so that one that races another replica for a decision id (:class:`Retry`) is rolled back alone
    and counted again in a later group. Batch ids are inserted in sorted order, so that two replicas
    writing groups that share ids lock them in one order (no deadlock on PostgreSQL). Results are in the
    order of ``group``.
    """
    out: list[IngestResult | Exception] = []
    rows = [r for b in group for r in (*b.exposures, *b.rewards)]
    targets = cache.targets(conn, rows) if cache is not None else _targets(conn, rows)
    plain: dict[str, tuple[IngestResult, ArmTotals, MetricTotals]] = {}
    claimed: dict[str, tuple[IngestResult, ArmTotals, MetricTotals, list[Claim]]] = {}
    invalid: dict[str, int] = {}  # batch id -> its place in ``out``
    for batch in group:
        result = IngestResult(batch_id=batch.batch_id, duplicate=False)
        out.append(result)
        if batch.batch_id in plain or batch.batch_id in claimed:  # sent twice in one group
            result.duplicate = True
            continue
        try:
            t, m, claims = _tally([*batch.exposures, *batch.rewards], targets, result)
        except ValidationError as exc:
            out[-1] = exc
            invalid.setdefault(batch.batch_id, len(out) - 1)
            continue
        if claims:
            claimed[batch.batch_id] = (result, t, m, claims)
        else:
            plain[batch.batch_id] = (result, t, m)
    if invalid:  # rare: a retry of a batch counted before its flag changed is still a duplicate
        _counted_before(conn, invalid, out)
    totals: ArmTotals = {}
    mtotals: MetricTotals = {}
    for batch_id in sorted(claimed):
        result, t, m, claims = claimed[batch_id]
        savepoint = conn.begin_nested()
        try:
            if not _insert_new_ids(conn, [batch_id], now):
                result.duplicate = True
                savepoint.commit()
                continue
            dedup(conn, claims, targets.windows, now, t, result)
        except (IntegrityError, _Raced):
            savepoint.rollback()
            out[next(i for i, r in enumerate(out) if r is result)] = Retry(batch_id)
            continue
        savepoint.commit()
        _merge(totals, mtotals, t, m)
    if plain:
        new = _insert_new_ids(conn, sorted(plain), now)
        for batch_id, (result, t, m) in plain.items():
            if batch_id in new:
                _merge(totals, mtotals, t, m)
            else:
                result.duplicate = True
    write_totals(conn, totals, mtotals)
    return out


def _insert_new_ids(conn: Connection, batch_ids: list[str], now: float) -> set[str]:
    """Record ``batch_ids`` (sorted by the caller); returns those that were not recorded already."""
    new: set[str] = set()
    stmt = _insert_ids(conn.dialect.name)
    for start in range(0, len(batch_ids), ID_CHUNK):
        values = [{"batch_id": b, "received_at": now} for b in batch_ids[start : start + ID_CHUNK]]
        new.update(r[0] for r in conn.execute(stmt, values))
    return new


@functools.lru_cache(maxsize=4)
def _insert_ids(dialect: str) -> Any:
    # Executed with a list of rows: SQLAlchemy sends them as one multi-row INSERT ("insertmanyvalues").
    insert = (pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert)(batches)
    return insert.on_conflict_do_nothing(index_elements=[batches.c.batch_id]).returning(batches.c.batch_id)


def _counted_before(conn: Connection, invalid: dict[str, int], out: list[IngestResult | Exception]) -> None:
    """Turn the ValidationErrors of batches whose ids are on record into duplicate results."""
    ids = sorted(invalid)
    for start in range(0, len(ids), ID_CHUNK):
        stmt = sa.select(batches.c.batch_id).where(batches.c.batch_id.in_(ids[start : start + ID_CHUNK]))
        for (batch_id,) in conn.execute(stmt):
            out[invalid[batch_id]] = IngestResult(batch_id=batch_id, duplicate=True)


def _merge(totals: ArmTotals, mtotals: MetricTotals, t: ArmTotals, m: MetricTotals) -> None:
    for key, row in t.items():
        acc = totals.setdefault(key, [0, 0, 0.0, 0.0])
        for i in range(4):
            acc[i] += row[i]
    for mkey, mrow in m.items():
        macc = mtotals.setdefault(mkey, [0, 0.0, 0.0])
        for i in range(3):
            macc[i] += mrow[i]


def write_totals(conn: Connection, totals: ArmTotals, mtotals: MetricTotals) -> None:
    """Add the sums onto the stats rows (sorted, so concurrent writers lock rows in one order: no
    deadlock on PostgreSQL)."""
    if totals:
        ordered = sorted(totals.items())
        default = [
            {"flag": f, "version": v, "arm": a, "n": int(t[0]), "r": int(t[1]), "s": t[2], "ss": t[3]}
            for (f, rule, v, a), t in ordered
            if not rule
        ]
        if default:
            _add_up(conn, arm_stats, ("flag", "version", "arm"), ("n", "r", "s", "ss"), default)
        ruled = [
            {"flag": f, "rule": rule, "version": v, "arm": a, "n": int(t[0]), "r": int(t[1]), "s": t[2],
             "ss": t[3]}
            for (f, rule, v, a), t in ordered
            if rule
        ]  # fmt: skip
        if ruled:
            _add_up(conn, rule_stats, ("flag", "rule", "version", "arm"), ("n", "r", "s", "ss"), ruled)
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


@dataclass
class _Targets:
    """What the rows of a batch are checked against (only the flags the batch names)."""

    info: dict[str, tuple[int, str]]  # flag -> (number of arms, the objective's reward type)
    guard_metrics: dict[str, dict[str, str]]  # flag -> metric -> reward type
    known: set[tuple[str, int]]  # the (flag, version) pairs of the batch that exist
    windows: dict[str, float]  # flag -> the objective's credit window (seconds)
    # Rows with a rule: the flags' bandit rules, and the (flag, rule, version) of theirs that exist.
    bandit_rules: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    rule_known: set[tuple[str, str, int]] = dataclasses.field(default_factory=set)


# Built once, with expanding IN parameters: constructing and compiling them per group cost more than
# running them. The flags and the versions named come back in one round trip (an outer join).
_FLAGS_AND_VERSIONS = (
    sa.select(flags.c.key, flags.c.variants, flags.c.objective, flags.c.guardrails, allocations.c.version)
    .select_from(
        flags.outerjoin(
            allocations,
            sa.and_(
                allocations.c.flag == flags.c.key,
                allocations.c.version.in_(sa.bindparam("versions", expanding=True)),
            ),
        )
    )
    .where(flags.c.key.in_(sa.bindparam("keys", expanding=True)))
)
_RULES = sa.select(flags.c.key, flags.c.rules).where(flags.c.key.in_(sa.bindparam("keys", expanding=True)))
_RULE_VERSIONS = sa.select(
    rule_allocations.c.flag, rule_allocations.c.rule, rule_allocations.c.version
).where(
    rule_allocations.c.flag.in_(sa.bindparam("keys", expanding=True)),
    rule_allocations.c.version.in_(sa.bindparam("versions", expanding=True)),
)


def _targets(conn: Connection, rows: Sequence[EventRow]) -> _Targets:
    keys = sorted({r.flag for r in rows})
    info: dict[str, tuple[int, str]] = {}
    guard_metrics: dict[str, dict[str, str]] = {}
    known: set[tuple[str, int]] = set()
    windows: dict[str, float] = {}
    ruled = sorted({r.flag for r in rows if r.rule})
    bandit_rules: dict[str, set[str]] = {}
    rule_known: set[tuple[str, str, int]] = set()
    if ruled:
        for key, rules in conn.execute(_RULES, {"keys": ruled}):
            bandit_rules[key] = {r["id"] for r in json.loads(rules) if r["serve"].get("bandit") is True}
        rule_versions = sorted({r.version for r in rows if r.rule and r.version <= MAX_VERSION}) or [0]
        rule_known = {
            (f, rule, int(v))
            for f, rule, v in conn.execute(_RULE_VERSIONS, {"keys": ruled, "versions": rule_versions})
        }
    if keys:
        versions = sorted({r.version for r in rows if r.version <= MAX_VERSION}) or [0]
        for key, variants, objective, guardrails, version in conn.execute(
            _FLAGS_AND_VERSIONS, {"keys": keys, "versions": versions}
        ):
            if version is not None:
                known.add((key, int(version)))
            if key in info:
                continue
            obj = json.loads(objective)
            info[key] = (len(json.loads(variants)), obj.get("reward", "binary"))
            windows[key] = float(obj.get("credit_window", 86400))
            guard_metrics[key] = {
                g["metric"]: g.get("reward", "binary") for g in json.loads(guardrails or "[]")
            }
    return _Targets(info, guard_metrics, known, windows, bandit_rules, rule_known)


class TargetsCache:
    """The flags and versions event rows were last checked against, kept by the group-commit writer for
    :data:`fresh_for` seconds: under load every group names the same few flags, and their lookup was the
    group's most expensive statement (the first of its transaction, ~1 ms of a loaded writer's CPU).

    Only what can be trusted for a second is kept: a flag's arm count, reward type, credit window and
    guardrail metrics, and the (flag, version) pairs that exist (versions are only ever added). A row
    naming a flag or version not in the cache, or a rule, looks them up as before. A flag deleted less
    than ``fresh_for`` ago still passes the check here, and its rows then fail the stats tables' foreign
    keys: that group fails whole (503, the SDKs retry with the same batch ids: nothing counted twice) and
    the writer clears the cache (:meth:`clear`), so the retry finds the flag gone. An objective edited
    less than ``fresh_for`` ago is checked as it was (SDKs holding the old config send such rows anyway).

    >>> TargetsCache().fresh_for
    1.0
    """

    def __init__(self, fresh_for: float = 1.0) -> None:
        self.fresh_for = fresh_for
        self._flags: dict[str, tuple[float, tuple[int, str], float, dict[str, str]]] = {}
        self._known: set[tuple[str, int]] = set()

    def clear(self) -> None:
        """Forget everything (after a failed group)."""
        self._flags = {}
        self._known = set()

    def targets(self, conn: Connection, rows: Sequence[EventRow]) -> _Targets:
        """The :class:`_Targets` of ``rows``: from the cache when it holds all of them, else looked up."""
        now = time.monotonic()  # not the batch's wall-clock time: a clock step must not keep it fresh
        flags_ = self._flags
        known = self._known
        hit = True
        for r in rows:
            cached = flags_.get(r.flag)
            if (
                cached is None
                or r.rule
                or now - cached[0] > self.fresh_for
                or (r.flag, r.version) not in known
            ):
                hit = False
                break
        if hit:
            info = {k: flags_[k][1] for k in {r.flag for r in rows}}
            return _Targets(
                info,
                {k: flags_[k][3] for k in info},
                {(r.flag, r.version) for r in rows},
                {k: flags_[k][2] for k in info},
            )
        t = _targets(conn, rows)
        if len(flags_) > 10_000:  # a bound, far above any config's flag count
            self.clear()
        for key, inf in t.info.items():
            self._flags[key] = (now, inf, t.windows[key], t.guard_metrics[key])
        self._known |= t.known
        return t


def _version_known(row: EventRow, t: _Targets) -> bool:
    """A bandit rule's row names one of the rule's versions, the default allocation's one of the flag's;
    other rules' rows (fixed rules, targets, a rule deleted since) only feed reporting: any version."""
    if not row.rule:
        return (row.flag, row.version) in t.known
    if row.rule in t.bandit_rules.get(row.flag, ()):
        return (row.flag, row.rule, row.version) in t.rule_known
    return True


def _tally(
    rows: Sequence[EventRow], t: _Targets, result: IngestResult
) -> tuple[ArmTotals, MetricTotals, list[Claim]]:
    """Add the rows up; count them in ``result`` or note there why a row is ignored; collect the
    decision ids of the accepted conversions (de-duplicated afterwards, by :func:`dedup`).

    Raises :class:`ValidationError` naming every row that does not fit its flag.
    """
    errors: list[tuple[str | None, str]] = []
    totals: ArmTotals = {}
    mtotals: MetricTotals = {}
    claims: list[Claim] = []
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
            if row.rule:  # guardrails compare the default allocation's arms only (issue 12)
                result.ignored.append({"field": row.where, "reason": "guardrail metric of a rule"})
            elif kind is None:
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
        if row.ids is not None and reward != "binary":
            # Several rewards of one decision add up to its value (docs/protocol.md): nothing to drop.
            errors.append((f"{row.where}.ids", "decision ids are only for binary objectives"))
            continue
        if not _version_known(row, t):
            result.ignored.append({"field": row.where, "reason": "unknown version"})
            continue
        acc = totals.setdefault((row.flag, row.rule, row.version, row.arm), [0, 0, 0.0, 0.0])
        if row.is_reward:
            acc[1] += row.count
            acc[2] += row.sum
            acc[3] += row.sum_sq
            result.rewards += 1
            if row.ids:
                claims.append(Claim(row.where, row.flag, row.rule, row.version, row.arm, row.ids))
        else:
            acc[0] += row.count
            result.exposures += 1
    if errors:
        raise ValidationError(errors)
    return totals, mtotals, claims


def dedup(
    conn: Connection,
    claims: Sequence[Claim],
    windows: dict[str, float],
    now: float,
    totals: ArmTotals,
    result: IngestResult,
) -> None:
    """Credit each ``(flag, arm, decision id)`` once per credit window: take the repeats (of an earlier
    batch, or within this one) out of ``totals`` and record the new ids, in the caller's transaction.

    Each conversion added 1 to its row's count, sum and sum of squares, so a repeat takes 1 off each.
    Raises IntegrityError (a concurrent batch inserted one of the ids first) or :class:`_Raced`: the
    caller retries the whole batch, which then finds the id.
    """
    wanted: dict[str, set[str]] = {}
    for c in claims:
        wanted.setdefault(c.flag, set()).update(c.ids)
    live: dict[tuple[str, int, str], float] = {}  # ids on record: their expiry
    for flag, dids in sorted(wanted.items()):
        ordered = sorted(dids)
        for start in range(0, len(ordered), ID_CHUNK):
            stmt = sa.select(conversions.c.did, conversions.c.arm, conversions.c.expires_at).where(
                conversions.c.flag == flag, conversions.c.did.in_(ordered[start : start + ID_CHUNK])
            )
            for did, arm, expires in conn.execute(stmt):
                live[(flag, int(arm), did)] = float(expires)
    fresh: list[dict[str, Any]] = []
    renewed: list[tuple[str, int, str, float]] = []
    credited: set[tuple[str, int, str]] = set()
    for c in claims:
        repeats = 0
        until = now + windows[c.flag]
        for did in c.ids:
            key = (c.flag, c.arm, did)
            expires = live.get(key)
            if key in credited or (expires is not None and expires > now):
                repeats += 1
                continue
            credited.add(key)
            if expires is None:
                fresh.append({"flag": c.flag, "arm": c.arm, "did": did, "expires_at": until})
            else:  # on record, but its window ended (not pruned yet): a new conversion
                renewed.append((c.flag, c.arm, did, until))
        if repeats:
            acc = totals[(c.flag, c.rule, c.version, c.arm)]
            acc[1] -= repeats
            acc[2] -= repeats
            acc[3] -= repeats
            result.duplicates += repeats
            result.duplicate_flags[c.flag] = result.duplicate_flags.get(c.flag, 0) + repeats
            result.removed[c.where] = repeats
    # Sorted, so that concurrent batches take the key locks in one order (no deadlock on PostgreSQL).
    if fresh:
        conn.execute(sa.insert(conversions), sorted(fresh, key=lambda v: (v["flag"], v["did"], v["arm"])))
    for flag, arm, did, until in sorted(renewed, key=lambda r: (r[0], r[2], r[1])):
        renew = (
            sa.update(conversions)
            .where(
                conversions.c.flag == flag,
                conversions.c.arm == arm,
                conversions.c.did == did,
                conversions.c.expires_at <= now,
            )
            .values(expires_at=until)
        )
        if conn.execute(renew).rowcount != 1:
            raise _Raced()


def _add_up(
    conn: Connection, table: sa.Table, keys: Sequence[str], sums: Sequence[str], values: list[dict[str, Any]]
) -> None:
    """Insert ``values`` into ``table``, or add their ``sums`` onto the row with the same ``keys``."""
    conn.execute(_upsert(conn.dialect.name, table, tuple(keys), tuple(sums)), values)


@functools.lru_cache(maxsize=16)
def _upsert(dialect: str, table: sa.Table, keys: tuple[str, ...], sums: tuple[str, ...]) -> sa.Insert:
    # Made once: building it (``excluded`` makes an alias of the table) cost ~0.7 ms of every batch.
    insert = (pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert)(table)
    return insert.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={c: table.c[c] + insert.excluded[c] for c in sums},
    )
