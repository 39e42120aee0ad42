"""The ``meta`` table: the config revision, which every write that changes what ``/v1/config`` shows
bumps in its own transaction, and the schema version.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

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
