"""Process-wide hooks: restart after ``fork()`` and close at interpreter exit.

The one piece of module state in the SDK: a set of *weak* references to live clients, so a client
that the application drops is collected normally. One ``os.register_at_fork`` hook and one
``atexit`` hook serve them all (hooks cannot be unregistered; per-client hooks would pile up).

>>> class Thing:
...     def _after_fork_in_child(self) -> None: ...
...     def close(self, timeout: float = 5.0) -> None: ...
>>> t = Thing(); register(t); t in _LIVE
True
>>> unregister(t); t in _LIVE
False
"""

from __future__ import annotations

import atexit
import contextlib
import os
import weakref
from typing import Protocol

__all__ = ["ATEXIT_TIMEOUT", "register", "unregister"]

ATEXIT_TIMEOUT = 2.0


class _Hooked(Protocol):
    def _after_fork_in_child(self) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...


_LIVE: weakref.WeakSet[_Hooked] = weakref.WeakSet()


def register(obj: _Hooked) -> None:
    """Call ``obj._after_fork_in_child()`` in forked children and ``obj.close()`` at exit."""
    _LIVE.add(obj)


def unregister(obj: _Hooked) -> None:
    """Forget ``obj`` (after it was closed)."""
    _LIVE.discard(obj)


def _after_fork_in_child() -> None:
    for obj in list(_LIVE):
        with contextlib.suppress(Exception):  # never break the application's fork
            obj._after_fork_in_child()


def _close_all_at_exit() -> None:
    for obj in list(_LIVE):
        with contextlib.suppress(Exception):
            obj.close(timeout=ATEXIT_TIMEOUT)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)
