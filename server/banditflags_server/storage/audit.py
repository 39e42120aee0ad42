"""The audit log: every operator change of a flag or its controls, with who, when, before, after, why.

An entry names the acting key by its *name* (``env-admin``, ``admin-initial``, ...), never the key or
its hash. Entries are written in the same transaction as the change they describe (the store's
``create_flag``, ``update_flag`` and ``delete_flag`` take one), so the log never claims a change that
did not happen and never misses one that did.

>>> e = entry_for_patch(
...     "checkout-button", "env-admin", {"state": "running", "exploration": 1.0},
...     {"state": "killed"}, "pager: conversion dropped", now=0.0)
>>> e.action, e.before, e.after
('kill', {'state': 'running'}, {'state': 'killed'})
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from banditflags_server.storage import schema as db
from banditflags_server.storage.schema import audit_log

MAX_REASON = 500
#: Fields of a flag that the log shows for a creation or a deletion.
SUMMARY_FIELDS = (
    "state",
    "exploration",
    "baseline",
    "policy",
    "variants",
    "control",
    "objective",
    "description",
    "recompute_interval",
)


@dataclass(frozen=True)
class AuditEntry:
    """One change: ``action`` is ``create``, ``delete``, ``kill``, ``unkill``, ``freeze``, ``resume``,
    ``throttle``, ``policy`` or ``update``; ``before``/``after`` hold the changed fields only.

    >>> AuditEntry("f", 0.0, "env-admin", "throttle", {"exploration": 1.0}, {"exploration": 0.2}, "").action
    'throttle'
    """

    flag: str
    at: float
    actor: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str
    id: int | None = None
    kind: str = "flag"  # what ``flag`` names: a flag, or a segment (issue 12)

    def to_json(self, iso: Any) -> dict[str, Any]:
        """The API's shape; ``iso`` formats the timestamp."""
        return {
            "id": self.id,
            "flag": self.flag,
            "at": iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "before": self.before,
            "after": self.after,
            "reason": self.reason,
        }


def action_for(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The verb of a change, from the most to the least consequential field it touches.

    >>> action_for({"state": "killed"}, {"state": "running"})
    'unkill'
    >>> action_for({"state": "frozen"}, {"state": "running"})
    'resume'
    >>> action_for({"policy": {}}, {"policy": {"floor": 0.1}})
    'policy'
    """
    if "state" in after:
        old, new = before.get("state"), after["state"]
        if new == "killed":
            return "kill"
        if old == "killed":
            return "unkill"
        if new == "frozen":
            return "freeze"
        if old == "frozen" and new == "running":
            return "resume"
    if "exploration" in after:
        return "throttle"
    if "policy" in after:
        return "policy"
    return "update"


def entry_for_patch(
    flag: str,
    actor: str,
    current: dict[str, Any],
    changes: dict[str, Any],
    reason: str,
    *,
    now: float,
) -> AuditEntry | None:
    """The entry for applying ``changes`` to a flag whose fields are ``current``; None if nothing
    actually changes (a PATCH that repeats the current values is not a change)."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for name, value in changes.items():
        if name in ("bandit_weights", "rule_allocations"):
            continue  # derived, not an operator's input
        if current.get(name) != value:
            before[name] = current.get(name)
            after[name] = value
    if not after:
        return None
    return AuditEntry(flag, now, actor, action_for(before, after), before, after, reason)


def insert(conn: Connection, entry: AuditEntry) -> None:
    """Write ``entry`` inside the caller's transaction."""
    conn.execute(
        sa.insert(audit_log).values(
            flag=entry.flag,
            at=entry.at,
            actor=entry.actor[:64],
            action=entry.action,
            before=None if entry.before is None else _dumps(entry.before),
            after=None if entry.after is None else _dumps(entry.after),
            reason=entry.reason[:MAX_REASON],
            kind=entry.kind,
        )
    )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, sort_keys=True)


def entries(
    engine: sa.engine.Engine, flag: str, *, limit: int = 100, before_id: int | None = None, kind: str = "flag"
) -> list[AuditEntry]:
    """A flag's (or a segment's) entries, newest first; ``before_id`` pages further back."""
    stmt = sa.select(audit_log).where(audit_log.c.flag == flag, audit_log.c.kind == kind)
    if before_id is not None:
        stmt = stmt.where(audit_log.c.id < before_id)
    stmt = stmt.order_by(audit_log.c.id.desc()).limit(limit)
    with db.read_tx(engine) as conn:
        rows = conn.execute(stmt).mappings().all()
    return [
        AuditEntry(
            flag=m["flag"],
            at=float(m["at"]),
            actor=m["actor"],
            action=m["action"],
            before=None if m["before"] is None else json.loads(m["before"]),
            after=None if m["after"] is None else json.loads(m["after"]),
            reason=m["reason"],
            id=int(m["id"]),
            kind=m["kind"],
        )
        for m in rows
    ]


def validate_reason(value: Any) -> str | None:
    """The problem with a ``reason`` value, or None if it is acceptable (a string of ≤ 500 chars without
    NUL, which PostgreSQL cannot store in text).

    >>> validate_reason("rollback"), validate_reason(3), validate_reason("a" + chr(0))
    (None, 'must be a string', 'must not contain NUL characters')
    """
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > MAX_REASON:
        return f"must be at most {MAX_REASON} characters"
    if "\x00" in value:
        return "must not contain NUL characters"
    return None
