"""Config lifecycle notifications for listeners (``Client.add_listener``): ready, changed, stale.

Everything here runs on the config-sync thread (or inside ``Client.refresh()``), never on the decision
hot path. A listener that raises is logged once and otherwise ignored: a broken listener must not
stop the client from syncing.

>>> import logging
>>> got = []
>>> n = Notifier(logging.getLogger("doctest"))
>>> n.add(got.append)
>>> n.published({}, {"btn": 1}, revision=1)          # the first good config
>>> n.published({"btn": 1}, {"btn": 2}, revision=2)  # then a change
>>> n.fetch_failed(stale=True)
>>> n.confirmed()                                      # the server answers again
>>> [(e.kind, e.revision, e.flags_changed) for e in got]
[('ready', 1, ('btn',)), ('changed', 2, ('btn',)), ('stale', 2, ()), ('ready', 2, ())]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["ConfigEvent", "Listener", "Notifier"]

EventKind = Literal["ready", "changed", "stale"]


@dataclass(frozen=True, slots=True)
class ConfigEvent:
    """What a listener added with ``Client.add_listener`` receives.

    ``kind`` is ``ready`` (the first configuration from the server, or the server answered again after
    ``stale``), ``changed`` (a new configuration revision replaced the previous one; ``flags_changed``
    names the flags that were added, removed or changed) or ``stale`` (fetching failed and the last
    good configuration is older than ``stale_after``).

    >>> ConfigEvent("changed", 4, ("checkout-button",)).flags_changed
    ('checkout-button',)
    """

    kind: EventKind
    revision: int | None
    flags_changed: tuple[str, ...] = ()


Listener = Callable[[ConfigEvent], None]


class Notifier:
    """Keeps the listeners and the state needed to say *what* happened (first config, stale, ...)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()
        self._had_config = False  # a server answer was seen (bootstrap does not count)
        self._stale = False
        self._revision: int | None = None
        self._logged_failure = False

    def after_fork_in_child(self) -> None:
        """A fresh lock: the parent's may have been held by a thread that does not exist here."""
        self._lock = threading.Lock()

    def add(self, listener: Listener) -> None:
        """Register ``listener`` (called on the sync thread; keep it short)."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove(self, listener: Listener) -> None:
        """Forget ``listener``; a no-op if it was not registered."""
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

    def published(self, old: Mapping[str, object], new: Mapping[str, object], revision: int) -> None:
        """A new valid configuration replaced ``old``."""
        self._revision = revision
        first, was_stale = not self._had_config, self._stale
        self._had_config, self._stale = True, False
        if not self._listeners:
            return
        changed = tuple(sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)))
        if first:
            self._emit(ConfigEvent("ready", revision, changed))
            return
        if was_stale:
            self._emit(ConfigEvent("ready", revision))
        if changed:
            self._emit(ConfigEvent("changed", revision, changed))

    def confirmed(self) -> None:
        """The server confirmed the configuration we have (HTTP 304)."""
        first, was_stale = not self._had_config, self._stale
        self._had_config, self._stale = True, False
        if first or was_stale:
            self._emit(ConfigEvent("ready", self._revision))

    def fetch_failed(self, stale: bool) -> None:
        """A fetch failed; ``stale`` says whether the last good configuration is now too old."""
        if stale and not self._stale:
            self._stale = True
            self._emit(ConfigEvent("stale", self._revision))

    def _emit(self, event: ConfigEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception as exc:
                if not self._logged_failure:
                    self._logged_failure = True
                    self._logger.warning(
                        "banditflags: a config listener raised %s: %s", type(exc).__name__, exc
                    )
