"""Config changes pushed between replicas with PostgreSQL ``LISTEN`` / ``NOTIFY``.

Every write that bumps the config revision also sends ``NOTIFY banditflags_revision`` in its own
transaction (:func:`~banditflags_server.storage.meta.bump_revision`), which PostgreSQL delivers to every
listening session when, and only if, the transaction commits. Each replica holds one extra connection
that listens (:class:`RevisionListener`, a daemon thread) and calls back on every notification, so a
kill switch flipped through one replica reaches the SDKs streaming from every other replica without
waiting for a poll. Polling the revision stays as the fallback: while the listener is down (the database
restarting, a network cut) :attr:`RevisionListener.healthy` is False and the replica polls at the fast
interval again; when it reconnects it calls back once, since notifications sent meanwhile are lost.
SQLite has no such mechanism: there the revision is polled, as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

CHANNEL = "banditflags_revision"
RECONNECT_MIN, RECONNECT_MAX = 0.5, 10.0

log = logging.getLogger("banditflags_server.notify")


def libpq_conninfo(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq connection string for psycopg.

    >>> libpq_conninfo("postgresql+psycopg://bf@db.local:5433/flags")
    'postgresql://bf@db.local:5433/flags'
    """
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class RevisionListener:
    """A thread that ``LISTEN``s on :data:`CHANNEL` and calls ``on_change`` for every notification
    (and once after each reconnection). ``healthy`` is True while it listens."""

    def __init__(self, url: str, on_change: Callable[[], Any]) -> None:
        self.conninfo = libpq_conninfo(url)
        self.on_change = on_change
        self.healthy = False
        self.notifications = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="banditflags-listen", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        import psycopg

        delay = RECONNECT_MIN
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.healthy = True
                    delay = RECONNECT_MIN
                    self._call()  # whatever changed while we were not listening
                    while not self._stop.is_set():
                        # A bounded wait, so stop() is noticed; the generator ends after the timeout.
                        for _ in conn.notifies(timeout=1.0):
                            self.notifications += 1
                            self._call()
            except Exception as exc:
                if self.healthy:
                    log.warning("revision listener lost its connection (%s); polling", type(exc).__name__)
                self.healthy = False
                self._stop.wait(delay)
                delay = min(RECONNECT_MAX, delay * 2)
        self.healthy = False

    def _call(self) -> None:
        try:
            self.on_change()
        except Exception:  # the event loop may be closing
            log.debug("revision listener callback failed", exc_info=True)
