"""Segments (issue 12): reusable clauses plus included and excluded unit ids, shared by flags' rules.

Every write bumps the config revision (the SDKs get segments with ``/v1/config``) and writes its audit
entry in the same transaction. A delete checks, in that transaction, that no flag's rule names the
segment; a flag write that names segments checks they exist in its own (:func:`require_segments`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from banditflags_server.records import entity_tag, require_etag
from banditflags_server.storage import audit as audit_mod
from banditflags_server.storage import schema as db
from banditflags_server.storage.audit import AuditEntry
from banditflags_server.storage.meta import bump_revision
from banditflags_server.storage.rows import to_json
from banditflags_server.storage.schema import flags, segments

MAX_SEGMENTS = 10_000


@dataclass
class Segment:
    """A segment as stored."""

    key: str
    description: str = ""
    clauses: list[dict[str, Any]] = field(default_factory=list)
    included: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0

    def config_json(self) -> dict[str, Any]:
        """What ``/v1/config`` serves of it."""
        return {
            "key": self.key,
            "clauses": self.clauses,
            "included": self.included,
            "excluded": self.excluded,
        }

    def audited(self) -> dict[str, Any]:
        """The fields the audit log records."""
        return {**self.config_json(), "description": self.description}

    @property
    def etag(self) -> str:
        """The segment's entity tag: a hash of what operators set (the fields the audit log records),
        so an ``If-Match`` of it fails once anyone changed the segment since it was read."""
        return entity_tag(self.audited())


def _lock(conn: Connection, key: str, if_match: str | None) -> None:
    """Inside a write transaction: lock the segment's row and raise
    :class:`~banditflags_server.records.Stale` unless ``if_match`` (an ``If-Match`` header; None: no
    precondition) names its ETag. No row: nothing to check."""
    m = conn.execute(sa.select(segments).where(segments.c.key == key).with_for_update()).mappings().first()
    if m is not None:
        require_etag(if_match, _from_row(m).etag)


class SegmentExists(Exception):
    """A segment with this key exists already (or the store holds the maximum number)."""


class SegmentInUse(Exception):
    """Flags name the segment: ``flags`` lists their keys."""

    def __init__(self, flags: list[str]) -> None:
        super().__init__(", ".join(flags))
        self.flags = flags


def _from_row(m: Any) -> Segment:
    return Segment(
        m["key"], m["description"], json.loads(m["clauses"]), json.loads(m["included"]),
        json.loads(m["excluded"]), float(m["created_at"]), float(m["updated_at"]),
    )  # fmt: skip


def _values(s: Segment) -> dict[str, Any]:
    return {
        "key": s.key,
        "description": s.description,
        "clauses": to_json(s.clauses),
        "included": to_json(s.included),
        "excluded": to_json(s.excluded),
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


def segment_refs(rules: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """``(field, segment key)`` of every segment the rules name, e.g. ``("rules[0].clauses[1].values[0]",
    "beta")``."""
    return [
        (f"rules[{i}].clauses[{j}].values[{k}]", key)
        for i, rule in enumerate(rules)
        for j, clause in enumerate(rule.get("clauses", []))
        if clause.get("op") == "in_segment"
        for k, key in enumerate(clause.get("values", []))
    ]


def _users(conn: Connection, key: str) -> list[str]:
    # Rules are JSON text: a LIKE narrows the flags down, the parsed rules decide.
    rows = conn.execute(
        sa.select(flags.c.key, flags.c.rules)
        .where(flags.c.rules.like(f"%{json.dumps(key)}%"))
        .order_by(flags.c.key)
    )
    return [m[0] for m in rows if any(k == key for _, k in segment_refs(json.loads(m[1])))]


class SegmentsMissing(Exception):
    """A flag's rules name segments that do not exist: ``(field, key)`` of each."""

    def __init__(self, refs: list[tuple[str, str]]) -> None:
        super().__init__(", ".join(k for _, k in refs))
        self.refs = refs


def require_segments(conn: Connection, rules: list[dict[str, Any]]) -> None:
    """Inside a flag's write transaction: raise :class:`SegmentsMissing` unless every segment the rules
    name exists. The rows are locked for share, so a concurrent delete (which locks the row for update
    before it looks for users) waits for this write and then sees it."""
    refs = segment_refs(rules)
    if not refs:
        return
    keys = sorted({k for _, k in refs})
    stmt = sa.select(segments.c.key).where(segments.c.key.in_(keys)).with_for_update(read=True)
    found = {r[0] for r in conn.execute(stmt)}
    missing = [(where, key) for where, key in refs if key not in found]
    if missing:
        raise SegmentsMissing(missing)


class SegmentsMixin:
    """The part of :class:`~banditflags_server.storage.store.Store` that keeps segments."""

    engine: Engine

    def list_segments(self) -> list[Segment]:
        """Every segment, by key."""
        with db.read_tx(self.engine) as conn:
            rows = conn.execute(sa.select(segments).order_by(segments.c.key)).mappings().all()
        return [_from_row(m) for m in rows]

    def get_segment(self, key: str) -> Segment | None:
        """The segment, or None."""
        with db.read_tx(self.engine) as conn:
            m = conn.execute(sa.select(segments).where(segments.c.key == key)).mappings().first()
        return None if m is None else _from_row(m)

    def segment_users(self, key: str) -> list[str]:
        """The flags whose rules name the segment."""
        with db.read_tx(self.engine) as conn:
            return _users(conn, key)

    def create_segment(self, seg: Segment, audit: AuditEntry) -> None:
        """Insert a segment with its audit entry; raises :class:`SegmentExists`."""
        try:
            with db.write_tx(self.engine) as conn:
                count = conn.execute(sa.select(sa.func.count()).select_from(segments)).scalar_one()
                if count >= MAX_SEGMENTS:
                    raise SegmentExists(seg.key)
                conn.execute(sa.insert(segments).values(**_values(seg)))
                audit_mod.insert(conn, audit)
                bump_revision(conn)
        except IntegrityError:
            raise SegmentExists(seg.key) from None

    def update_segment(self, seg: Segment, audit: AuditEntry | None, if_match: str | None = None) -> bool:
        """Write the segment's fields (and ``audit``); False if it no longer exists; ``Stale`` (nothing
        written) if ``if_match`` no longer names its ETag."""
        values = _values(seg)
        del values["key"], values["created_at"]
        with db.write_tx(self.engine) as conn:
            _lock(conn, seg.key, if_match)
            done = conn.execute(
                sa.update(segments).where(segments.c.key == seg.key).values(**values)
            ).rowcount
            if done:
                if audit is not None:
                    audit_mod.insert(conn, audit)
                bump_revision(conn)
        return bool(done)

    def delete_segment(self, key: str, audit: AuditEntry, if_match: str | None = None) -> bool:
        """Delete a segment no flag names; raises :class:`SegmentInUse`, or ``Stale`` if ``if_match``
        no longer names its ETag; False if there was none."""
        with db.write_tx(self.engine) as conn:
            _lock(conn, key, if_match)
            users = _users(conn, key)
            if users:
                raise SegmentInUse(users)
            gone = conn.execute(sa.delete(segments).where(segments.c.key == key)).rowcount
            if gone:
                audit_mod.insert(conn, audit)
                bump_revision(conn)
        return bool(gone)
