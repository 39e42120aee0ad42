"""The ``meta`` table: the config revision, which every write that changes what ``/v1/config`` shows
bumps in its own transaction, and the schema version.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from banditflags_server.storage import schema as db
from banditflags_server.storage.notify import CHANNEL
from banditflags_server.storage.schema import meta


def bump_revision(conn: Connection) -> None:
    """Increase the config revision, inside the caller's write transaction; on PostgreSQL also notify
    the other replicas (delivered at commit, :mod:`.notify`)."""
    conn.execute(sa.update(meta).where(meta.c.key == "revision").values(value=meta.c.value + 1))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"NOTIFY {CHANNEL}"))


def _value(conn: Connection, key: str) -> int:
    return int(conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar_one())


class MetaMixin:
    """The part of :class:`~banditflags_server.storage.store.Store` that reads ``meta``."""

    engine: Engine

    def revision(self) -> int:
        """The config revision: increases on every change of any flag, control or table."""
        with db.read_tx(self.engine) as conn:
            return _value(conn, "revision")

    def schema_version(self) -> int:
        """The schema version recorded in ``meta``."""
        with db.read_tx(self.engine) as conn:
            return _value(conn, "schema_version")

    def ping(self) -> int:
        """Check the database answers; returns the revision."""
        return self.revision()

    def probe_write(self, thorough: bool = False) -> int:
        """Check the database takes a write (a full disk or a read-only file fails here, not on a
        read), and return the revision. Rewrites the schema version's row with its own value: a real
        page write, in a transaction of its own, that changes nothing.

        SQLite writes into its write-ahead log, whose file keeps its size between checkpoints: on a
        full disk a small write can still fit there while a batch that must grow the files fails.
        ``thorough`` (asked while event batches are failing) first checkpoints the log into the
        database and truncates it, so that the probe's write needs new space, as batches do."""
        if thorough and self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
                if busy is not None and busy[0]:
                    raise OperationalError("PRAGMA wal_checkpoint", {}, Exception("checkpoint busy"))
        with db.write_tx(self.engine) as conn:
            conn.execute(sa.update(meta).where(meta.c.key == "schema_version").values(value=meta.c.value))
            return _value(conn, "revision")
