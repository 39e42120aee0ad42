"""Flags and their allocation history: create, read, compare-and-set update, delete.

Writers of a flag compare-and-set on ``flags.row_version``, and new allocation versions go under the
``(flag, version)`` primary key, so a concurrent writer (another thread, process or replica) loses cleanly
instead of forking the history. An audit entry passed to a write goes in the same transaction.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from banditflags_server.records import Allocation, Flag, require_etag
from banditflags_server.storage import audit as audit_mod
from banditflags_server.storage import schema as db
from banditflags_server.storage.audit import AuditEntry
from banditflags_server.storage.meta import bump_revision
from banditflags_server.storage.rows import (
    ALLOC_COLS,
    FLAG_COLS,
    alloc_from_row,
    alloc_values,
    encode_changes,
    flag_from_row,
    flag_values,
    rule_alloc_values,
)
from banditflags_server.storage.schema import (
    allocations,
    arm_stats,
    conversions,
    flags,
    metric_stats,
    rule_allocations,
    rule_stats,
)
from banditflags_server.storage.segments import require_segments

MAX_FLAGS = 10_000


class FlagExists(Exception):
    """A flag with this key exists already."""


class FlagLimit(Exception):
    """The store holds the maximum number of flags."""


class FlagsMixin:
    """The part of :class:`~banditflags_server.storage.store.Store` that keeps flags and allocations."""

    engine: Engine

    def create_flag(
        self, flag: Flag, alloc: Allocation, max_flags: int = MAX_FLAGS, *, audit: AuditEntry | None = None
    ) -> None:
        """Insert a flag with its first allocation (and ``audit``, in the same transaction); raises
        :class:`FlagExists` or :class:`FlagLimit`."""
        try:
            with db.write_tx(self.engine) as conn:
                if conn.execute(sa.select(flags.c.key).where(flags.c.key == flag.key)).first():
                    raise FlagExists(flag.key)
                count = conn.execute(sa.select(sa.func.count()).select_from(flags)).scalar_one()
                if count >= max_flags:
                    raise FlagLimit()
                require_segments(conn, flag.rules)
                conn.execute(sa.insert(flags).values(**flag_values(flag)))
                conn.execute(sa.insert(allocations).values(**alloc_values(flag.key, alloc)))
                _rule_history(conn, flag, {}, flag.rule_allocations)
                if audit is not None:
                    audit_mod.insert(conn, audit)
                bump_revision(conn)
        except IntegrityError:
            raise FlagExists(flag.key) from None  # lost a race with a concurrent create

    def get_flag(self, key: str) -> Flag | None:
        """The flag with its current allocation, or None."""
        found = self._flags(key)
        return found[0] if found else None

    def list_flags(self) -> list[Flag]:
        """Every flag with its current allocation, by key."""
        return self._flags(None)

    def _flags(self, key: str | None) -> list[Flag]:
        # Column names clash (created_at, bandit_weights): the allocation's come under labels.
        stmt = (
            sa.select(*FLAG_COLS, *[c.label("a_" + c.name) for c in ALLOC_COLS])
            .select_from(
                flags.outerjoin(
                    allocations,
                    sa.and_(allocations.c.flag == flags.c.key, allocations.c.version == flags.c.version),
                )
            )
            .order_by(flags.c.key)
        )
        if key is not None:
            stmt = stmt.where(flags.c.key == key)
        with db.read_tx(self.engine) as conn:
            rows = conn.execute(stmt).mappings().all()
        out = []
        for m in rows:
            f = flag_from_row(m)
            if m["a_weights"] is not None:
                f.allocation = alloc_from_row(f.version, {c.name: m["a_" + c.name] for c in ALLOC_COLS})
            out.append(f)
        return out

    def delete_flag(self, key: str, *, audit: AuditEntry | None = None, if_match: str | None = None) -> bool:
        """Delete a flag, its allocations and stats (recording ``audit``); False if it did not exist;
        :class:`~banditflags_server.records.Stale` (nothing deleted) if ``if_match`` no longer names its
        ETag (checked on the locked row, in the delete's transaction)."""
        with db.write_tx(self.engine) as conn:
            if if_match is not None:
                locked = sa.select(flags).where(flags.c.key == key).with_for_update()
                m = conn.execute(locked).mappings().first()
                if m is not None:
                    require_etag(if_match, flag_from_row(m).etag)
            conn.execute(sa.delete(arm_stats).where(arm_stats.c.flag == key))
            conn.execute(sa.delete(rule_stats).where(rule_stats.c.flag == key))
            conn.execute(sa.delete(rule_allocations).where(rule_allocations.c.flag == key))
            conn.execute(sa.delete(metric_stats).where(metric_stats.c.flag == key))
            conn.execute(sa.delete(conversions).where(conversions.c.flag == key))
            conn.execute(sa.delete(allocations).where(allocations.c.flag == key))
            gone = conn.execute(sa.delete(flags).where(flags.c.key == key)).rowcount
            if gone:
                if audit is not None:
                    audit_mod.insert(conn, audit)
                bump_revision(conn)
        return bool(gone)

    def update_flag(
        self,
        flag: Flag,
        changes: dict[str, Any],
        alloc: Allocation | None,
        *,
        now: float,
        audit: AuditEntry | None = None,
    ) -> bool:
        """Write ``changes`` (column -> Python value), maybe a new allocation version, and ``audit``.

        Compare-and-set on ``flag.row_version``: returns False (nothing written) if the row changed since
        ``flag`` was read, so the caller re-reads and retries.
        """
        values = encode_changes(changes)
        values["row_version"] = flag.row_version + 1
        values["updated_at"] = now
        if alloc is not None:
            values["version"] = alloc.version
        try:
            with db.write_tx(self.engine) as conn:
                done = conn.execute(
                    sa.update(flags)
                    .where(flags.c.key == flag.key, flags.c.row_version == flag.row_version)
                    .values(**values)
                ).rowcount
                if not done:
                    return False
                if "rules" in changes:
                    require_segments(conn, changes["rules"])
                if alloc is not None:
                    conn.execute(sa.insert(allocations).values(**alloc_values(flag.key, alloc)))
                if "rule_allocations" in changes:
                    _rule_history(conn, flag, flag.rule_allocations, changes["rule_allocations"])
                if audit is not None:
                    audit_mod.insert(conn, audit)
                bump_revision(conn)
        except IntegrityError:
            return False
        return True

    def rule_history(self, key: str) -> dict[str, list[Allocation]]:
        """Every allocation version of each bandit rule of a flag, oldest first."""
        stmt = (
            sa.select(rule_allocations.c.rule, rule_allocations.c.version, *_RULE_ALLOC_COLS)
            .where(rule_allocations.c.flag == key)
            .order_by(rule_allocations.c.rule, rule_allocations.c.version)
        )
        out: dict[str, list[Allocation]] = {}
        with db.read_tx(self.engine) as conn:
            for m in conn.execute(stmt).mappings():
                out.setdefault(m["rule"], []).append(alloc_from_row(int(m["version"]), m))
        return out

    def history(self, key: str) -> list[Allocation]:
        """Every allocation version of a flag, oldest first."""
        stmt = (
            sa.select(allocations.c.version, *ALLOC_COLS)
            .where(allocations.c.flag == key)
            .order_by(allocations.c.version)
        )
        with db.read_tx(self.engine) as conn:
            return [alloc_from_row(int(m["version"]), m) for m in conn.execute(stmt).mappings()]


_RULE_ALLOC_COLS = [rule_allocations.c[c.name] for c in ALLOC_COLS]


def _rule_history(
    conn: sa.Connection, flag: Flag, before: dict[str, Allocation], after: dict[str, Allocation]
) -> None:
    """Insert the rule allocation versions ``after`` has and ``before`` has not (a concurrent writer of
    the same version loses on the primary key)."""
    for rule, a in after.items():
        old = before.get(rule)
        if old is None or old.version != a.version:
            conn.execute(sa.insert(rule_allocations).values(**rule_alloc_values(flag.key, rule, a)))
