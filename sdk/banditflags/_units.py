"""Decision ids, the memory of recent unit decisions, and the once-per-decision conversion check.

Memory is kept only where a decision needs it (issue 13): for ``user``-unit flags (an exposure counts
once per unit, arm and credit window), for flags tracked by ``track(flag, unit_id)`` (the reward goes to
the decision the unit was served), and for ``decide()`` (so that a Decision tracked by unit later is
recognised). A plain ``variant()`` on a ``decision``-unit flag that is never tracked by unit remembers
nothing.

The unit memory and the conversions are each two generations of plain dicts: a new generation starts
when the current one holds half the cap, and the one before is dropped (a rotation is two stores, no
copy). An insert is one dict store, with no per-entry object and no LRU bookkeeping. Writers race only
benignly (the GIL makes each dict operation atomic): at worst a rotation forgets an entry early. **What
leaving the memory means**: an exposure of a ``user``-unit flag is then counted again;
``track(flag, unit)`` then credits the arm the unit buckets into now; a conversion whose decision id has
left :class:`Conversions` is counted again locally, but its id still goes to the server, which
de-duplicates it within the credit window (docs/protocol.md, "Conversions count once").

Decision ids (``did``, 16 lower-case hex digits, as the server wants them):

- ``decision`` unit: a per-process random 64-bit base plus a per-client sequence number (unique within
  the process, colliding across processes with probability ~N/2^64);
- ``user`` unit: a hash of the flag's salt and the unit id (the same in every process), so that one
  unit on one arm is one conversion within the credit window wherever it is tracked.

>>> unit_did("salt", "alice") == unit_did("salt", "alice"), len(unit_did("salt", "alice"))
(True, 16)
>>> c = Conversions(100)
>>> c.first(("btn", 1, "00000000000000aa"), 60.0, 0.0), c.first(("btn", 1, "00000000000000aa"), 60.0, 1.0)
(True, False)
>>> c.first(("btn", 1, "00000000000000aa"), 60.0, 61.0)  # the credit window is over: counts again
True
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import mmh3

__all__ = ["Conversions", "UnitMemory", "did_hex", "new_did", "reseed_decision_ids", "unit_did"]

_MASK = (1 << 64) - 1
_BASE = int.from_bytes(os.urandom(8), "big")
_seq = itertools.count(1)  # next() is atomic under the GIL: no lock on the decision path


def reseed_decision_ids() -> None:
    """Draw a new random base: a forked child must not draw its parent's (or a sibling's) ids.

    Runs by ``os.register_at_fork`` after ``os.fork()``, and from ``Client.after_fork()`` for servers
    that fork from C without Python's hooks (uWSGI without ``py-call-osafterfork``): without it two
    workers mint the same ids, and one's conversion is taken for the other's duplicate.
    """
    global _BASE
    _BASE = int.from_bytes(os.urandom(8), "big")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reseed_decision_ids)


def new_did() -> int:
    """A new ``decision``-unit decision id, as an int (formatted only when needed: :func:`did_hex`)."""
    return (_BASE + next(_seq)) & _MASK


def did_hex(did: int | str) -> str:
    """``did`` as the 16 lower-case hex digits of the wire format (a str is formatted already)."""
    if isinstance(did, str):
        return did
    return "%016x" % did  # noqa: UP031  # printf-style: half the cost of f"{did:016x}" (int.__format__)


def unit_did(salt: str, unit_id: str) -> str:
    """The decision id of a ``user``-unit flag's unit: the same in every process that has the config."""
    return "%016x" % mmh3.hash64(salt + ":" + unit_id, signed=False)[0]  # noqa: UP031  # printf-style: half of int.__format__'s cost


# A remembered decision: (version, arm, at, did, rule); did is an int or its 16 hex digits (decision
# unit: decide() keeps the str it made, variant() the int it drew) or None (user unit).
Entry = tuple[int, int, float, "int | str | None", "str | None"]


def keyed_dict() -> dict[Any, Any]:
    """An empty dict that keeps each entry's hash beside its key, as CPython does once a dict has held
    a key that is not a str (it never goes back). A dict of str keys only reads the hash off the key
    object instead: one more cache miss per probe. The memories below hold up to 100,000 keys each, so
    their lookups are mostly cache misses: a miss in 50,000 entries went from 215 to 160 ns on the
    benchmark machine (docs/performance.md). CPython 3.10 keeps hashes in every dict: no change there."""
    d: dict[Any, Any] = {0: None}
    del d[0]
    return d


class UnitMemory:
    """Recent decisions of one flag's units (``unit_id -> Entry``), at most ``cap`` of them.

    ``on`` says whether decisions of this flag are remembered at all: always for ``user``-unit flags,
    for a ``decision``-unit flag from its first ``track(flag, unit_id)`` on. Shared by the successive
    snapshots of one flag key (the client hands it over when a new config arrives).
    """

    __slots__ = ("cap", "cur", "old", "on")

    def __init__(self, on: bool, cap: int = 100_000) -> None:
        self.on = on
        self.cap = cap
        self.cur: dict[str, Entry] = keyed_dict()
        self.old: dict[str, Entry] = keyed_dict()

    def get(self, unit_id: str) -> Entry | None:
        e = self.cur.get(unit_id)
        return self.old.get(unit_id) if e is None else e

    def put(self, unit_id: str, entry: Entry) -> None:
        cur = self.cur
        cur[unit_id] = entry
        if len(cur) * 2 > self.cap:
            self.old = cur
            self.cur = keyed_dict()

    def __len__(self) -> int:
        return len(self.cur) + len(self.old)


class Conversions:
    """Conversions already credited, ``key -> time of the first credit``, in two generations like
    :class:`UnitMemory`: ``cur`` takes new keys; when it holds ``half`` (``cap // 2``) it becomes
    ``old`` and a new ``cur`` starts (the ``old`` before is dropped), so between ``cap // 2`` and
    ``cap`` of the latest credits are remembered (a repeat is not a credit: it takes no room). A
    rotation is two stores, with no copy: a first conversion costs one ``dict.setdefault`` in ``cur``
    and one ``get`` in ``old``. :meth:`first` is the check ``track()`` makes for a binary objective;
    its fast path inlines the same steps."""

    __slots__ = ("_rotating", "cap", "cur", "half", "old")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.half = max(1, cap // 2)
        self.cur: dict[Any, float] = keyed_dict()
        self.old: dict[Any, float] = keyed_dict()
        self._rotating: dict[int, object] = {}  # id(dict being rotated out) -> its rotator's mark

    def rotate(self, full: dict[Any, float]) -> None:
        """``full`` (``cur`` when the caller looked) becomes ``old``, and a new ``cur`` starts. Called
        by every thread that sees ``full`` hold ``half`` and carried out by exactly one
        (``dict.setdefault`` is atomic): no lock. An entry another thread adds to ``full`` meanwhile
        lands in ``old``, where it is still found."""
        mark = object()
        rotating = self._rotating
        if rotating.setdefault(id(full), mark) is not mark:
            return  # another thread rotates it
        try:
            if self.cur is full:  # else rotated already: a late call
                self.old = full
                self.cur = keyed_dict()
        finally:
            del rotating[id(full)]  # full is alive until we return: its id cannot have been reused

    def first(self, key: Any, window: float, now: float) -> bool:
        """True (and remembered) if ``key`` was not credited within ``window`` seconds before ``now``."""
        cur = self.cur
        stamp = now + 0.0  # a fresh float object: identity tells this call's insert from a racing one
        t = cur.setdefault(key, stamp)
        if t is stamp:  # new to this generation
            before = self.old.get(key)
            if before is not None and before is not stamp and now - before <= window:
                # Credited in the generation before: a repeat. It stays there, with the time of its
                # credit (taken back out of this one, so repeats never push credits out early).
                cur.pop(key, None)
                return False
            if len(cur) >= self.half:  # a credit that fills this generation: a new one starts
                self.rotate(cur)
            return True
        if now - t <= window:
            return False  # credited before, or by another thread just now
        cur[key] = stamp  # its window is over: it counts again
        return True

    def __len__(self) -> int:
        return len(self.cur) + len(self.old)
