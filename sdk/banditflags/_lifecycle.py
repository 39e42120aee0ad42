"""Process-wide hooks: restart after ``fork()`` and close at interpreter exit.

The one piece of module state in the SDK: a set of *weak* references to live clients, so a client
that the application drops is collected normally. One ``os.register_at_fork`` hook and one
``atexit`` hook serve them all (hooks cannot be unregistered; per-client hooks would pile up).
Children of ``multiprocessing`` and billiard (celery) pools skip ``atexit``: clients are closed
there by a pool finalizer instead (see ``_hook_pool_exit``).

>>> class Thing:
...     def _after_fork_in_child(self) -> None: ...
...     def close(self, timeout: float = 5.0) -> object: ...
>>> t = Thing(); register(t); t in _LIVE
True
>>> unregister(t); t in _LIVE
False
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import sys
import weakref
from typing import Any, Protocol

__all__ = ["ATEXIT_TIMEOUT", "register", "unregister"]

ATEXIT_TIMEOUT = 2.0


class _Hooked(Protocol):
    def _after_fork_in_child(self) -> None: ...

    def close(self, timeout: float = 5.0) -> object: ...


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
    if _LIVE:
        with contextlib.suppress(Exception):
            _hook_pool_exit()


# multiprocessing's and billiard's (celery's) pool children leave through os._exit(), which skips
# atexit; they run their own finalizers first. A finalizer must be registered *in* the child, after
# the child's bootstrap cleared the inherited ones: that is what their after-fork callbacks are for.
_POOL_UTILS = ("multiprocessing.util", "billiard.util")
_HOOKED: set[str] = set()  # inherited by grandchildren, so the callback is registered once per module


class _Anchor:  # register_after_fork keeps only a weak reference to its object
    pass


_ANCHOR = _Anchor()


def _hook_pool_exit() -> None:
    for name in _POOL_UTILS:
        util = sys.modules.get(name)
        if util is not None and name not in _HOOKED:
            _HOOKED.add(name)
            util.register_after_fork(_ANCHOR, functools.partial(_close_in_pool_child, util))


def _close_in_pool_child(util: Any, _anchor: object) -> None:
    util.Finalize(None, _close_all_at_exit, exitpriority=100)


def _close_all_at_exit() -> None:
    for obj in list(_LIVE):
        with contextlib.suppress(Exception):
            obj.close(timeout=ATEXIT_TIMEOUT)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)
