"""Database outages: which errors mean "the database is unavailable", and saying so once per outage.

A database that is down, full, read-only or unreachable makes every request, recompute tick and
group commit fail the same way; logging a traceback for each would bury the one line an operator
needs. :class:`OutageLog` says once that a part of the server lost the database (with the error's
class and first line) and once that it answers again (with how long it was gone).

>>> is_unavailable(OperationalError("INSERT ...", {}, Exception("database or disk is full")))
True
>>> is_unavailable(ValueError("a bug"))
False
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

__all__ = ["UNAVAILABLE", "OutageLog", "is_unavailable", "reason"]

#: What a database that is down, full, read-only or unreachable raises through SQLAlchemy (SQLite's
#: "database or disk is full" and "attempt to write a readonly database", PostgreSQL's refused and
#: terminated connections) and a pool that cannot hand out a connection in time.
UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot be used right now (as opposed to a bug)."""
    return isinstance(exc, UNAVAILABLE)


def reason(exc: BaseException) -> str:
    """The error's class and the first line of its driver message, without the SQL statement."""
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first[:200]}" if first else type(orig).__name__


class OutageLog:
    """One warning when ``what`` loses the database, one info line when it is back. Thread-safe."""

    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what
        self.logger = logger
        self.down_since: float | None = None
        self.failures = 0  # every failure seen, for tests and metrics
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        self.logger.warning(
            "%s: the database is unavailable (%s); retrying, and saying so once until it answers",
            self.what,
            reason(exc),
        )

    def ok(self) -> None:
        if self.down_since is None:  # the common case: one attribute read, no lock
            return
        with self._lock:
            since, self.down_since = self.down_since, None
        if since is not None:
            gone = time.monotonic() - since
            self.logger.info("%s: the database answers again after %.1f s", self.what, gone)
