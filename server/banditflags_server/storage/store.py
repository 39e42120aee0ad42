"""Persistence: flags, allocation versions, arm stats, event batches, API keys, the config revision.

All methods are blocking (call them from a thread in async code). Every write that changes what
``/v1/config`` shows bumps the revision in the same transaction. Writers of a flag compare-and-set on
``flags.row_version`` and new allocation versions go under the ``(flag, version)`` primary key, so a
concurrent writer (another thread, process or replica) loses cleanly instead of forking the history.

:class:`Store` is put together from one part per job, each in a module of its own:

=================  =====================================================================================
``meta``           the config revision and the schema version (:class:`MetaMixin`)
``keys``           API keys (:class:`KeysMixin`, :func:`hash_key`)
``flags``          flags and their allocation history (:class:`FlagsMixin`, :class:`FlagExists`,
                   :class:`FlagLimit`, :data:`MAX_FLAGS`)
``stats``          arm stats and guardrail metrics for the engine (:class:`StatsMixin`)
``events``         the ingest path: batches counted once, conversions credited once per decision id,
                   old batch ids and expired decision ids pruned (:class:`EventsMixin`)
``recompute``      what the recompute cycle reads and writes (:class:`RecomputeMixin`)
``segments``       segments, and the check that a flag's rules name existing ones (:class:`SegmentsMixin`)
``lease``          which replica runs the recompute cycle, with fencing (:class:`LeaseMixin`)
``rows``           rows <-> records, shared by the others
=================  =====================================================================================
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from banditflags_server.records import Flag
from banditflags_server.storage import schema as db
from banditflags_server.storage.events import EventsMixin
from banditflags_server.storage.flags import MAX_FLAGS, FlagExists, FlagLimit, FlagsMixin
from banditflags_server.storage.keys import KeysMixin, hash_key
from banditflags_server.storage.lease import LeaseMixin
from banditflags_server.storage.meta import MetaMixin
from banditflags_server.storage.recompute import RecomputeMixin
from banditflags_server.storage.segments import SegmentsMixin
from banditflags_server.storage.stats import StatsMixin

__all__ = ["MAX_FLAGS", "FlagExists", "FlagLimit", "Store", "hash_key"]


class Store(
    MetaMixin, KeysMixin, FlagsMixin, SegmentsMixin, StatsMixin, EventsMixin, RecomputeMixin, LeaseMixin
):
    """The server's database; thread-safe (one SQLAlchemy engine with a connection pool)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to ``url`` (a SQLAlchemy URL) and create or migrate the schema."""
        engine = db.create_engine(url)
        try:
            db.migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def config_snapshot(self) -> tuple[int, list[Flag]]:
        """The revision and every flag with its current table (segments: :meth:`list_segments`, read after).

        The revision is read first: the flags are then at least as new as the revision says, so a client
        holding that ETag never misses a change.
        """
        revision = self.revision()
        return revision, self.list_flags()
