"""Pre-aggregation of exposures and rewards into the rows of ``POST /v1/events`` (docs/protocol.md).

**Exposures are counted in place** (issue 13): every :class:`~banditflags._config.FlagSnapshot` holds
one ``itertools.count`` per arm and a decision calls ``next()`` on its arm's counter (one C call, atomic
under the GIL, no lock, no allocation, no queue: nothing to drop). The event worker reads the counters as
deltas: reading is itself a ``next()``, so a counter's exposures are ``value - reads``. The counts are
exact across a config swap because the old snapshot's counters stay watched after the swap
(``RETIRE_GRACE`` seconds and until they stop moving) and a decision that still holds the old snapshot
counts on the old (flag, rule, version, arm), which is what it served.

**Conversions are counted in place too**: a binary objective's conversion with a decision id appends
its id to a list (one ``list.append``, atomic under the GIL; no queue, no lock, no per-conversion work
on the worker). A conversion of the current snapshot's default allocation (the common ``track()`` of
a Decision, a token or a flag and unit) appends to its arm's list on the snapshot
(``FlagSnapshot.conversions``, read like the exposure counters); any other (an older version, a
rule) to its (flag, rule, version, arm) list in :attr:`Aggregator.conversions`. At each collect the
worker swaps every non-empty list for a fresh one, takes what the old one holds (and deletes it from
it) and keeps reading it while it may still grow (a ``track()`` that looked the list up just before
the swap appends to the old one: ``RETIRE_GRACE`` seconds and until it stops growing), so every id
is taken exactly once. The ids go into their row as they are: ``track()`` let each decision convert once
already, and an id that left the SDK's memory and came back is taken out by the server
(docs/protocol.md, "Conversions count once").

**Other rewards** arrive from ``track()`` through the event queue, already resolved to (flag, rule,
version, arm, decision id) and already checked against double counting (``_units``), and add up here per
(flag, rule, version, arm): ``count``, ``sum`` and ``sum_sq`` (a binary objective's conversions with ids
are counted in place, above). Several rewards of one decision add up to that decision's value: ``sum_sq``
is the sum of squared per-decision totals, as long as the decision's running total is remembered
(``memory_size`` most recent decisions; older ones start again from 0, so their parts are squared apart).

Row keys are ``(flag, rule, version, arm)``; a row carries ``"rule"`` only when the rule is not None.

>>> import itertools
>>> from banditflags._config import parse_config
>>> snap = parse_config({"schema": 1, "revision": 1, "flags": [{"key": "btn", "salt": "s", "state": "running",
...     "exploration": 1.0, "version": 2, "variants": [{"key": "a", "value": 1}, {"key": "b", "value": 2}],
...     "control": "a", "weights": [0.5, 0.5], "table": [[0, 5000], [1, 5000]], "objective": {}}]})
>>> agg = Aggregator(1000)
>>> agg.watch(snap.flags)
>>> for _ in range(3): _ = next(snap.flags["btn"].counters[1])
>>> agg.collect(0.0)
{('btn', 'b'): 3}
>>> agg.exposures
{('btn', None, 2, 1): 3}
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ._config import FlagSnapshot

__all__ = ["RETIRE_GRACE", "Aggregator", "Ids", "Key", "ids_text", "row"]

RETIRE_GRACE = 5.0  # seconds an old snapshot's counters stay watched after a swap (and until still)

Key = tuple[str, "str | None", int, int]  # (flag, rule, version, arm)
MetricKey = tuple[str, "str | None", int, int, str]


def row(key: Key, **fields: Any) -> dict[str, Any]:
    """An events row for ``key``: ``rule`` only when there is one (older servers ignore it)."""
    flag, rule, version, arm = key
    out: dict[str, Any] = {"flag": flag, "version": version, "arm": arm}
    if rule is not None:
        out["rule"] = rule
    out.update(fields)
    return out


_HEX = b"0123456789abcdef"


class Ids(list[str]):
    """One row's decision ids (at most ``max_ids``, in the order taken) and ``text``: their JSON text
    (``'","'.join``, ASCII) as :func:`ids_text` checked it, or None (not joined yet, or an id failed).
    The worker takes a conversion list in chunks of ``max_ids`` and joins each at once, while its ids
    are in the CPU's cache: reading an id that track() appended a while ago is most of the worker's
    cost (~40 ns an id for 10,000 of them, cache misses), so each is read once, not again by a split
    and by the body's encoding a whole cut later. Whoever changes the ids sets ``text`` again
    (``encode_body`` replaces a row's ids instead)."""

    __slots__ = ("text",)

    def __init__(self, ids: Iterable[str] = (), text: bytes | None = None) -> None:
        super().__init__(ids)
        self.text = text


def ids_text(ids: list[str]) -> bytes | None:
    """``'","'.join(ids)`` as ASCII bytes when every id is 16 lower-case hex digits, else None. One
    pass over the text checks them all: deleting the hex digits leaves exactly the separators when no
    id has any other character; then the n-1 commas are the separators' and, at every 19th place
    from the 18th, say that each id has 16 (one id of 15 and one of 17 fail it; ~0.5 ns an id).

    >>> ids_text(["00000000000000aa", "0123456789abcdef"])
    b'00000000000000aa","0123456789abcdef'
    >>> bad = ["00000000000000AA"], ["000000000000000", "00000000000000000"], ['00000000000a","b'], [1]
    >>> [ids_text(x) for x in bad]
    [None, None, None, None]
    """
    try:
        text = '","'.join(ids).encode("ascii")
    except (TypeError, UnicodeEncodeError):
        return None
    n = len(ids)
    if (
        len(text) == 19 * n - 3
        and text.translate(None, _HEX) == b'","' * (n - 1)
        and text[17::19] == b"," * (n - 1)
    ):
        return text
    return None


def snapshots_of(flags: Mapping[str, FlagSnapshot]) -> Iterator[FlagSnapshot]:
    """Every snapshot whose counters a decision may tick: each flag's, and its rules' (``rule_snapshots``,
    when targeting builds them)."""
    for f in flags.values():
        yield f
        yield from getattr(f, "rule_snapshots", ())


class _Watch:
    __slots__ = ("counter", "key", "last", "reads", "retired_at", "variant")

    def __init__(self, counter: Any, key: Key, variant: str) -> None:
        self.counter = counter
        self.key = key
        self.variant = variant
        self.reads = 0  # next() calls made by the worker itself
        self.last = 0  # exposures already taken
        self.retired_at: float | None = None


class Aggregator:
    """The worker's aggregates (not thread-safe: the worker, or ``flush()`` under the processor's lock,
    owns it; only :meth:`watch` may be called from any thread)."""

    def __init__(self, memory_size: int, max_ids: int = 10_000) -> None:
        self.memory_size = memory_size
        self.max_ids = max_ids  # ids per row at most (the batch limit): the size of the chunks in ids
        self._incoming: collections.deque[Mapping[str, FlagSnapshot]] = collections.deque()
        self._watched: dict[int, _Watch] = {}
        #: Conversion ids appended by ``track()`` (any thread), per key; the worker swaps the lists.
        self.conversions: dict[Key, list[str]] = {}
        #: Every list taken out of ``conversions`` and still read: id -> [list, key, last growth]. The
        #: worker deletes what it takes from such a list, so it holds only ids appended since.
        self._conv_lists: dict[int, list[Any]] = {}
        #: Every snapshot's per-arm conversion lists: id -> [lists, (flag, rule, version), retired at]
        self._conv_watched: dict[int, list[Any]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the unsent aggregates (a forked child: the parent sends them)."""
        self.exposures: dict[Key, int] = {}
        self.rewards: dict[Key, list[float]] = {}
        #: Conversion ids per key, in chunks: every one but the last holds ``max_ids`` (a row each).
        self.ids: dict[Key, list[Ids]] = {}
        self.metric_rewards: dict[MetricKey, list[float]] = {}
        self._totals: dict[tuple[str, int, str], float] = {}
        self._old_totals: dict[tuple[str, int, str], float] = {}

    # -- exposures ------------------------------------------------------------------------------

    def watch(self, flags: Mapping[str, FlagSnapshot]) -> None:
        """A config snapshot was published (any thread): its counters are read from the next collect on."""
        self._incoming.append(flags)

    def _absorb(self, now: float) -> None:
        watched = self._watched
        while self._incoming:
            flags = self._incoming.popleft()
            current: set[int] = set()
            conv = self._conv_watched
            for f in snapshots_of(flags):
                for arm, c in enumerate(f.counters):
                    current.add(id(c))
                    if id(c) not in watched:
                        watched[id(c)] = _Watch(c, (f.key, f.rule, f.version, arm), f.keys[arm])
                lists = f.conversions
                current.add(id(lists))
                if id(lists) not in conv:
                    conv[id(lists)] = [lists, (f.key, f.rule, f.version), None]
            for cid, w in watched.items():
                if cid not in current and w.retired_at is None:
                    w.retired_at = now
            for lid, entry in conv.items():
                if lid not in current and entry[2] is None:
                    entry[2] = now

    def collect(self, now: float) -> dict[tuple[str, str], int]:
        """Add the exposures and conversions counted since the last call; return the exposures by (flag,
        variant) for metrics."""
        self._absorb(now)
        self._take_conversions(now)
        watched = self._watched
        out: dict[tuple[str, str], int] = {}
        exposures = self.exposures
        gone: list[int] = []
        for cid, w in watched.items():
            total = next(w.counter) - w.reads
            w.reads += 1
            n = total - w.last
            if n:
                w.last = total
                exposures[w.key] = exposures.get(w.key, 0) + n
                mk = (w.key[0], w.variant)
                out[mk] = out.get(mk, 0) + n
            elif w.retired_at is not None and now - w.retired_at > RETIRE_GRACE:
                gone.append(cid)
        for cid in gone:
            del watched[cid]
        return out

    def rebase(self) -> None:
        """In a forked child: what the counters and conversion lists hold so far was counted by the
        parent."""
        self._absorb(0.0)
        for w in self._watched.values():
            w.last = next(w.counter) - w.reads
            w.reads += 1
        self.conversions.clear()  # the child's track() calls start new lists
        self._conv_lists.clear()
        for lists, _, _ in self._conv_watched.values():
            for arm in range(len(lists)):
                lists[arm] = []

    # -- conversions counted in place ---------------------------------------------------------

    def _take_conversions(self, now: float) -> None:
        lists = self._conv_lists
        idle: list[int] = []
        for wid, (arms, (flag, rule, version), retired_at) in self._conv_watched.items():
            moved = False
            for arm, ids in enumerate(arms):  # index stores only: the list never changes size
                if ids:
                    # A fresh list for the next ids; the old one is read below until it stays still.
                    arms[arm] = []
                    lists[id(ids)] = [ids, (flag, rule, version, arm), now]
                    moved = True
            if not moved and retired_at is not None and now - retired_at > RETIRE_GRACE:
                idle.append(wid)
        for wid in idle:
            del self._conv_watched[wid]
        conversions = self.conversions
        for key, ids in list(conversions.items()):  # list(): one C call, safe against inserts
            if ids:
                # A fresh list for the next ids; the old one is read below until it stays still.
                conversions[key] = []
                lists[id(ids)] = [ids, key, now]
            elif conversions.get(key) is ids:
                del conversions[key]  # an idle key (an old version): looked up again if used
                lists[id(ids)] = [ids, key, now]
        gone: list[int] = []
        for lid, entry in lists.items():
            ids, key, last = entry
            n = len(ids)
            if n:
                self._add_conversions(key, ids, n)
                entry[2] = now
            elif now - last > RETIRE_GRACE:
                gone.append(lid)
        for lid in gone:
            del lists[lid]

    def _add_conversions(self, key: Key, source: list[str], n: int) -> None:
        # Takes source[:n] in chunks of max_ids (the last chunk first filled up: the rows split as one
        # list would), each copied, joined and checked while its ids are in the cache, then deleted
        # from the source: its references dropped while hot too, and what stays is only what a late
        # track() appended (an append after the len() above lands past n: never taken twice). From the
        # tail, so that a delete moves only those late ids. No check for repeats: track() counted each
        # once (see the module's docstring).
        added = n
        max_ids = self.max_ids
        chunks = self.ids.get(key)
        if chunks is None:
            chunks = self.ids[key] = []
        head = min(n, max_ids - len(chunks[-1])) if chunks else 0
        taken: list[Ids] = []
        for a in reversed(range(head, n, max_ids)):
            b = min(a + max_ids, n)
            part = Ids(source[a:b])
            del source[a:b]
            part.text = ids_text(part)
            taken.append(part)
        if head:
            last, fill = chunks[-1], source[:head]
            del source[:head]
            text = ids_text(fill)
            last.text = last.text + b'","' + text if last.text is not None and text is not None else None
            last += fill
        taken.reverse()
        chunks += taken
        r = self.rewards.get(key)
        if r is None:
            r = self.rewards[key] = [0, 0.0, 0.0]
        r[0] += added
        r[1] += added
        r[2] += added

    # -- rewards --------------------------------------------------------------------------------

    def reward(self, key: Key, did: str | None, reward: float, conversion: bool) -> None:
        """One accepted reward. ``conversion``: a binary objective's 1, sent with its decision id."""
        r = self.rewards.get(key)
        if r is None:
            r = self.rewards[key] = [0, 0.0, 0.0]
        if conversion and did is not None:
            chunks = self.ids.get(key)
            if chunks is None:
                chunks = self.ids[key] = []
            if not chunks or len(chunks[-1]) >= self.max_ids:
                chunks.append(Ids())
            last = chunks[-1]
            last.append(did)  # a repeat is taken out by the server, as for the ids counted in place
            last.text = None  # joined at take_rows
        r[0] += 1
        r[1] += reward
        if did is None or conversion or reward == 0.0:
            r[2] += reward * reward
            return
        # Continuous: the decision's value is the sum of its rewards; (t + r)^2 - t^2 = 2tr + r^2.
        tk = (key[0], key[3], did)
        t = self._totals.get(tk)
        if t is None:
            t = self._old_totals.get(tk, 0.0)
        r[2] += 2.0 * t * reward + reward * reward
        self._totals[tk] = t + reward
        if len(self._totals) * 2 > self.memory_size:
            self._old_totals = self._totals
            self._totals = {}

    def metric(self, key: MetricKey, value: float) -> None:
        """A guardrail metric's value: each one its own observation."""
        r = self.metric_rewards.get(key)
        if r is None:
            r = self.metric_rewards[key] = [0, 0.0, 0.0]
        r[0] += 1
        r[1] += value
        r[2] += value * value

    def empty(self) -> bool:
        return not self.exposures and not self.rewards and not self.metric_rewards

    def take_rows(self) -> list[tuple[str, dict[str, Any], int]]:
        """The rows to send, as (kind, row, number of ids), and forget them. A binary row with more
        than ``max_ids`` ids is split into rows of at most that many, one per chunk (a conversion is 1
        in count, sum and sum_sq, so the parts add up to the whole)."""
        rows: list[tuple[str, dict[str, Any], int]] = [
            ("exposures", row(k, count=n), 0) for k, n in self.exposures.items()
        ]
        for k, (n, s, ss) in self.rewards.items():
            chunks = self.ids.get(k)
            if not chunks:
                rows.append(("rewards", row(k, count=int(n), sum=s, sum_sq=ss), 0))
                continue
            last = len(chunks) - 1
            for i, part in enumerate(chunks):
                p = len(part)
                if part.text is None:  # filled by reward() (or an id failed: encode_body sees to it)
                    part.text = ids_text(part)
                if i < last:
                    rows.append(("rewards", row(k, count=p, sum=float(p), sum_sq=float(p), ids=part), p))
                    n, s, ss = n - p, s - p, ss - p
                else:
                    rows.append(("rewards", row(k, count=int(n), sum=s, sum_sq=ss, ids=part), p))
        for (f, rule, v, a, m), (n, s, ss) in self.metric_rewards.items():
            rows.append(("rewards", row((f, rule, v, a), count=int(n), sum=s, sum_sq=ss, metric=m), 0))
        self.exposures = {}
        self.rewards = {}
        self.ids = {}
        self.metric_rewards = {}
        return rows
