"""The recompute lease: which one of several replicas sharing a database runs the recompute cycle.

Every replica serves config, stream and events; only the lease holder recomputes, so replicas do not
race each other for the same flags (each cycle would be computed once per replica and all but one
written version skipped). The lease is three rows of the ``meta`` table (no schema change):

``lease_holder``   a random 62-bit id of the holding process (0: nobody)
``lease_epoch``    increases by one on every change of holder: the fencing token
``lease_until_ms`` when the lease runs out unless renewed (Unix time, milliseconds)

A process takes the lease when it has run out, renews it while it holds it, and writes its recompute
outcomes only in a transaction that first checks, under the write lock (``BEGIN IMMEDIATE`` on SQLite,
``SELECT ... FOR UPDATE`` on PostgreSQL), that it still holds the lease with the same epoch and that it
has not run out (:func:`check_fence`). So a holder that was paused past its lease (a stopped process, a
long GC pause, a partitioned host) cannot publish after another replica took over: its epoch is stale.
The clock is the writers' wall clock: replicas are assumed NTP-synchronised to well within the lease.

>>> Fence(holder=7, epoch=3).holder
7
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from banditflags_server.storage import schema as db
from banditflags_server.storage.schema import meta

_KEYS = ("lease_holder", "lease_epoch", "lease_until_ms")


@dataclass(frozen=True)
class Fence:
    """Proof of holding the lease: the holder id and the epoch it was granted with."""

    holder: int
    epoch: int


class LeaseLost(Exception):
    """The lease ran out or another process took it: the write is refused."""


def new_holder_id() -> int:
    """A random id for one process (or one app in it)."""
    return secrets.randbits(62) | 1  # never 0, which means "nobody"


def _read(conn: Connection, lock: bool) -> dict[str, int]:
    stmt = sa.select(meta.c.key, meta.c.value).where(meta.c.key.in_(_KEYS))
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    got = {k: int(v) for k, v in conn.execute(stmt)}
    missing = [k for k in _KEYS if k not in got]
    if missing:
        # First use on this database: create the rows (another replica may race us: ignore a conflict).
        insert = db.dialect_insert(conn)(meta).on_conflict_do_nothing(index_elements=[meta.c.key])
        conn.execute(insert, [{"key": k, "value": 0} for k in missing])
        got = {k: int(v) for k, v in conn.execute(stmt)}
    return got


def _set(conn: Connection, **values: int) -> None:
    for key, value in values.items():
        conn.execute(sa.update(meta).where(meta.c.key == key).values(value=value))


def check_fence(conn: Connection, fence: Fence, now: float | None = None) -> None:
    """Inside a write transaction: raise :class:`LeaseLost` unless ``fence`` still holds the lease."""
    now_ms = int((time.time() if now is None else now) * 1000)
    got = _read(conn, lock=True)
    if (
        got["lease_holder"] != fence.holder
        or got["lease_epoch"] != fence.epoch
        or got["lease_until_ms"] <= now_ms
    ):
        raise LeaseLost(f"lease epoch {fence.epoch} is no longer ours")


class LeaseMixin:
    """The part of :class:`~banditflags_server.storage.store.Store` that holds the recompute lease."""

    engine: Engine

    def acquire_lease(self, holder: int, ttl: float, now: float | None = None) -> Fence | None:
        """Take the lease if it is free or has run out, renew it if ``holder`` has it; None if another
        process holds it. One short write transaction."""
        now = time.time() if now is None else now
        now_ms = int(now * 1000)
        until = int((now + ttl) * 1000)
        with db.write_tx(self.engine) as conn:
            got = _read(conn, lock=True)
            if got["lease_holder"] == holder and got["lease_until_ms"] > now_ms:
                _set(conn, lease_until_ms=until)
                return Fence(holder, got["lease_epoch"])
            if got["lease_holder"] != 0 and got["lease_until_ms"] > now_ms:
                return None
            epoch = got["lease_epoch"] + 1
            _set(conn, lease_holder=holder, lease_epoch=epoch, lease_until_ms=until)
            return Fence(holder, epoch)

    def release_lease(self, fence: Fence) -> None:
        """Give the lease up at shutdown, so another replica takes over at once instead of after the ttl."""
        with db.write_tx(self.engine) as conn:
            got = _read(conn, lock=True)
            if got["lease_holder"] == fence.holder and got["lease_epoch"] == fence.epoch:
                _set(conn, lease_holder=0, lease_until_ms=0)

    def lease_state(self) -> tuple[int, int, float]:
        """(holder, epoch, until in Unix seconds): for the health page and tests."""
        with db.write_tx(self.engine) as conn:
            got = _read(conn, lock=False)
        return got["lease_holder"], got["lease_epoch"], got["lease_until_ms"] / 1000.0
