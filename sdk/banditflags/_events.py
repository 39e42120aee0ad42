"""Event recording and delivery: the reward buffer, the worker thread and batched ``POST /v1/events``.

Exposures never pass through here one by one: decisions count them in place on per-arm counters that
:class:`~banditflags._aggregate.Aggregator` reads (issue 13). The buffer :attr:`EventProcessor.queue`
(``deque.append`` is atomic under the GIL) carries the rarer items; everything below runs on the worker
thread (or, in serverless mode, inside ``flush()`` under :attr:`EventProcessor.lock`):

- drain the buffer every ``DRAIN_INTERVAL`` and aggregate rewards per (flag, rule, version, arm);
- every ``flush_interval`` (and on ``flush()``), read the exposure counters, cut the aggregates into
  batches (docs/protocol.md: at most ``MAX_ROWS_PER_BATCH`` rows and ``MAX_IDS_PER_BATCH`` decision ids
  each) and send pending batches in order; retryable failures (network, 408, 429, 5xx) keep the batch
  and its ``batch_id`` and back off with jitter, other 4xx drop it (counted). A ``Retry-After`` on a 429
  or 503 holds every send until it has passed, ``flush()`` included; so does a refused sdk key (401,
  403: the batch is kept, and the next try is minutes away, see :class:`~banditflags._sync.Pushback`).

Buffer items (positional tuples, resolved and checked by ``track()`` on the caller's thread):

- reward: ``("r", (flag, rule, version, arm), did | None, reward, conversion)``
- guardrail metric value: ``("m", (flag, rule, version, arm, metric), value)``
- a decision that records no exposure (error, killed flag): ``("d", flag, variant, reason, error_type)``,
  only counted for the decisions metric (and, for an unknown flag key, logged once per key)
- a :class:`FlushMarker` from ``flush()``.

The worker also keeps cumulative counters for the OpenTelemetry metrics (``_metrics``), so that
nothing is counted on the hot path: :attr:`EventProcessor.decision_counts` and
:attr:`EventProcessor.reward_totals`.

>>> proc = EventProcessor(lambda: {}, lambda body, timeout: 202, flush_interval=1.0)
>>> proc.queue.append(("r", ("btn", None, 1, 0), None, 1.0, False))
>>> proc.flush_now(deadline=None)
True
>>> proc.batches_sent
1
"""

from __future__ import annotations

import collections
import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._aggregate import Aggregator, Ids, ids_text
from ._config import FlagSnapshot
from ._sync import AUTH_STATUSES, RETRY_AFTER_STATUSES, Pushback, backoff_delay

__all__ = ["Batch", "EventProcessor", "FlushMarker", "encode_body"]

DRAIN_INTERVAL = 0.1
MAX_ROWS_PER_BATCH = 10_000
MAX_IDS_PER_BATCH = 10_000  # decision ids (rewards[].ids) per batch, the server's limit
MAX_UNKNOWN_LOGGED = 1_000  # unknown flag keys logged once each; beyond, at most one line a minute
MAX_METRIC_SERIES = 10_000  # distinct (flag, variant, reason, error) counted; the rest go to "_other"
SEND_BACKOFF_BASE = 0.5
SEND_BACKOFF_CAP = 60.0
_RETRYABLE = frozenset({408, 429})

# post(body, timeout) -> HTTP status, or None for a network error; or (status, its Retry-After header)
PostFn = Callable[[dict[str, Any], float], "int | tuple[int, str | None] | None"]


class FlushMarker:
    """Put on the buffer by ``flush()``; set once every batch cut up to it has been resolved."""

    __slots__ = ("event", "ok", "seq")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = True
        self.seq = -1


@dataclass(slots=True)
class Batch:
    """One ``POST /v1/events`` body, kept (same ``batch_id``) until acknowledged or dropped."""

    seq: int
    body: dict[str, Any]
    attempts: int = 0


@dataclass
class EventProcessor:
    """Owns the buffer, the aggregates and the pending batches.

    ``get_flags`` returns the current snapshot's flags; ``post`` sends one body.
    """

    get_flags: Callable[[], Mapping[str, FlagSnapshot]]
    post: PostFn
    flush_interval: float = 2.0
    max_queue: int = 100_000
    max_pending_batches: int = 100
    decision_memory_size: int = 100_000
    sdk: str = "banditflags-python"
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("banditflags"))
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    reason_now: Callable[[], str] | None = None  # the reason of exposures drained now (metrics)
    sync_info: Callable[[], tuple[int | None, float | None]] | None = None  # (config revision, age)
    pushback: Pushback | None = None  # shared with the config sync: Retry-After, refused key

    def __post_init__(self) -> None:
        self.queue: collections.deque[Any] = collections.deque()
        self.agg = Aggregator(self.decision_memory_size, MAX_IDS_PER_BATCH)
        self.batches_sent = 0
        self.batches_failed = 0  # failed attempts (each retry counts)
        self.batches_dropped = 0
        self.dropped = 0  # events lost: buffer full or reward not attributable
        self.duplicates = 0  # conversions not counted again: the decision had converted already
        self.unknown_flags = 0  # decisions asking for a flag key the config does not have
        self._unknown_logged: set[str] = set()
        self._unknown_last_log = -math.inf
        self.last_error: str | None = None
        # Cumulative, for metrics: (flag, variant, reason, error_type) -> decisions, and
        # (flag, variant) -> [reward count, reward sum]. Kept across fork (counters never go down).
        self.decision_counts: dict[tuple[str, str, str, str], int] = {}
        self.reward_totals: dict[tuple[str, str], list[float]] = {}
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        # Everything a forked child must not inherit: locks, events, the thread, unsent data.
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stop = threading.Event()
        self._drop_lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.agg.reset()
        self.pending: collections.deque[Batch] = collections.deque()
        self._waiting: list[FlushMarker] = []
        self._seq = 0
        self._dropped_reported = self.dropped
        self._next_send_at = 0.0
        self._hold_until = 0.0  # the server asked for no request before this clock() (even a flush's)
        self.cut_soon = False  # a conversion list is half full: cut at the next wake, not at the interval

    def after_fork_in_child(self) -> None:
        """Forget the parent's thread, locks and unsent data (the parent sends those)."""
        self.queue = collections.deque()
        self.agg.rebase()
        self._reset_runtime()

    # -- called from user threads ---------------------------------------------------------------

    def note_dropped(self) -> None:
        """Count one event lost because the buffer was full (the rare path, so a lock is fine)."""
        with self._drop_lock:
            self.dropped += 1

    def request_cut(self) -> None:
        """A conversion list holds half its cap: wake the worker to cut now, so that a burst of
        conversions (a tight loop, a replay) is taken before the list fills and drops. Lock-free: a
        bool and, once per request, an Event.set."""
        if not self.cut_soon:
            self.cut_soon = True
            self.wake.set()

    def start(self) -> None:
        """Start the worker thread (daemon: it must never keep the interpreter alive)."""
        t = threading.Thread(target=self._run, name="banditflags-events", daemon=True)
        self.thread = t
        t.start()

    def request_flush(self, timeout: float) -> bool:
        """Background mode: wake the worker and wait until everything recorded so far is delivered."""
        marker = FlushMarker()
        self.queue.append(marker)  # bypasses max_queue: one marker per flush() call
        self.wake.set()
        return marker.event.wait(timeout) and marker.ok

    # -- worker ---------------------------------------------------------------------------------

    def _run(self) -> None:
        next_cut = self.clock() + self.flush_interval
        while not self.stop.is_set():
            self.wake.wait(DRAIN_INTERVAL)
            self.wake.clear()
            if self.stop.is_set():
                return
            try:
                with self.lock:
                    markers = self.drain()
                    forced = bool(markers)
                    now = self.clock()
                    if forced or now >= next_cut or self.cut_soon:
                        self.cut_soon = False  # before the cut: a request during it is kept
                        self.cut()
                        next_cut = now + self.flush_interval
                    self._register(markers)
                    if self.pending and (forced or now >= self._next_send_at):
                        self.send_pending(None)
                    self._resolve_markers()
            except Exception as exc:  # never let the worker die
                self.last_error = f"event worker error: {type(exc).__name__}: {exc}"
                self.logger.debug("banditflags: %s", self.last_error, exc_info=True)

    def flush_now(self, deadline: float | None) -> bool:
        """Drain, cut and send synchronously until ``deadline`` (a ``clock()`` value). Caller holds
        no lock; used by serverless ``flush()`` and by ``close()``. True when nothing is left unsent
        and nothing was dropped on the way."""
        markers = self.drain()
        self.cut()
        self._register(markers)
        ok = True
        while self.pending:
            before = self.batches_dropped
            if not self.send_pending(deadline):
                if deadline is None:
                    ok = False
                    break
                remaining = deadline - self.clock()
                wait = self._next_send_at - self.clock()
                if remaining <= 0 or wait >= remaining:
                    ok = False
                    break
                self.sleep(max(0.0, wait))
            if self.batches_dropped != before:
                ok = False
        self._resolve_markers()
        return ok and not self.pending

    def drain(self) -> list[FlushMarker]:
        """Aggregate everything in the buffer; return the flush markers found in it."""
        q = self.queue
        pop = q.popleft
        agg = self.agg
        markers: list[FlushMarker] = []
        while q:
            try:
                item = pop()
            except IndexError:
                break
            if item.__class__ is FlushMarker:
                markers.append(item)
                continue
            kind = item[0]
            if kind == "r":
                agg.reward(item[1], item[2], item[3], item[4])
            elif kind == "m":
                agg.metric(item[1], item[2])
            elif kind == "d":
                flag = item[1]
                name = flag[:64] if flag.__class__ is str else f"<{type(flag).__name__}>"
                self._count_decision(name, item[2] or "", item[3], item[4] or "", 1)
        return markers

    def collect(self) -> None:
        """Take the exposures counted in place since the last call (before a cut)."""
        counted = self.agg.collect(self.clock())
        if counted:
            reason = self.reason_now() if self.reason_now is not None else "split"
            for (flag, variant), n in counted.items():
                self._count_decision(flag, variant, reason, "", n)

    def _add_totals(self) -> None:
        # The rewards metrics, per (flag, variant), from the rows about to be cut (not per reward).
        flags = self.get_flags()
        totals = self.reward_totals
        for (f, _, _, a), r in self.agg.rewards.items():
            fs = flags.get(f)
            tkey = (f, fs.keys[a] if fs is not None and a < len(fs.keys) else str(a))
            t = totals.get(tkey)
            if t is None:
                t = totals[tkey] = [0, 0.0]
            t[0] += r[0]
            t[1] += r[1]

    def _count_decision(self, flag: str, variant: str, reason: str, error_type: str, n: int) -> None:
        if reason == "error" and not error_type:  # variant() does not tell flag_not_found apart
            error_type = "flag_not_found" if self.get_flags() else "provider_not_ready"
        if error_type == "flag_not_found":
            self._unknown_flag(flag, n)
        key = (flag, variant, reason, error_type)
        counts = self.decision_counts
        if key not in counts and len(counts) >= MAX_METRIC_SERIES:
            key = ("_other", "", reason, error_type)  # unknown flag keys must not grow memory
        counts[key] = counts.get(key, 0) + n

    def _unknown_flag(self, flag: str, n: int) -> None:
        # A typo in a flag key answers the default silently otherwise: say it once per key, here on the
        # worker (never on the decision path); beyond MAX_UNKNOWN_LOGGED keys, one line a minute at most.
        self.unknown_flags += n
        logged = self._unknown_logged
        if flag in logged:
            return
        now = self.clock()
        if len(logged) >= MAX_UNKNOWN_LOGGED:
            if now - self._unknown_last_log < 60.0:
                return
        else:
            logged.add(flag)
        self._unknown_last_log = now
        self.logger.warning(
            "banditflags: flag %r is not in the configuration; answering the caller's default "
            "(logged once per key; counted in stats().unknown_flags)",
            flag,
        )

    def _register(self, markers: list[FlushMarker]) -> None:
        # Called right after the cut that follows the drain: everything recorded before a marker is
        # in a batch numbered <= the last one cut.
        for m in markers:
            m.seq = self._seq
        self._waiting.extend(markers)

    def _lost(self) -> None:
        with self._drop_lock:
            self.dropped += 1

    def _undropped(self) -> int:
        return self.dropped - self._dropped_reported

    def cut(self) -> None:
        """Read the exposure counters and turn the aggregates into pending batches (at most
        MAX_ROWS_PER_BATCH rows and MAX_IDS_PER_BATCH decision ids each)."""
        self.collect()
        dropped = self._undropped()
        if self.agg.empty() and not dropped:
            return
        self._add_totals()
        rows = self.agg.take_rows()
        self._dropped_reported += dropped
        sent_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for first, chunk in enumerate(_pack(rows)):
            self._seq += 1
            body: dict[str, Any] = {
                "batch_id": uuid.uuid4().hex,
                "sent_at": sent_at,
                "sdk": self.sdk,
                "exposures": [r for kind, r, _ in chunk if kind == "exposures"],
                "rewards": [r for kind, r, _ in chunk if kind == "rewards"],
                "dropped": dropped if first == 0 else 0,
            }
            if self.sync_info is not None:
                revision, age = self.sync_info()
                if revision is not None:
                    body["config_revision"] = revision
                if age is not None:
                    body["config_age"] = round(age, 3)
            self.pending.append(Batch(self._seq, body))
        while len(self.pending) > self.max_pending_batches:
            self._drop_batch(self.pending.popleft(), "too many pending batches")

    def send_pending(self, deadline: float | None) -> bool:
        """Send pending batches in order; stop at the first retryable failure (returns False), or at
        once while the server's ``Retry-After`` or a refused key's backoff lasts."""
        if self.pending and self.clock() < self._hold_until:
            return False
        while self.pending:
            batch = self.pending[0]
            timeout = 30.0 if deadline is None else deadline - self.clock()
            if timeout <= 0:
                return False
            answer = self.post(batch.body, timeout)
            status, retry_after = answer if isinstance(answer, tuple) else (answer, None)
            if status is not None and 200 <= status < 300:
                self.pending.popleft()
                self.batches_sent += 1
                if self.pushback is not None:
                    self.pushback.accepted()
                self._resolve_markers()
                continue
            if status is None or status in _RETRYABLE or status in AUTH_STATUSES or status >= 500:
                batch.attempts += 1
                self.batches_failed += 1
                self.last_error = f"POST /v1/events failed ({'network error' if status is None else status})"
                delay = backoff_delay(batch.attempts, SEND_BACKOFF_BASE, SEND_BACKOFF_CAP, self.rng)
                hold = None
                if self.pushback is not None and status in AUTH_STATUSES:
                    hold = self.pushback.refused(status, "POST /v1/events")  # kept: the key may come back
                elif self.pushback is not None and status in RETRY_AFTER_STATUSES:
                    hold = self.pushback.throttled_for(retry_after)
                if hold is not None:
                    delay = max(delay, hold)
                    self._hold_until = self.clock() + hold
                self._next_send_at = self.clock() + delay
                return False
            self.pending.popleft()
            self._drop_batch(batch, f"POST /v1/events answered HTTP {status}; batch dropped")
        return True

    def _drop_batch(self, batch: Batch, why: str) -> None:
        self.batches_dropped += 1
        self.last_error = why
        self.logger.warning("banditflags: %s", why)
        for m in self._waiting:
            if batch.seq <= m.seq:
                m.ok = False

    def _resolve_markers(self) -> None:
        if not self._waiting:
            return
        first = self.pending[0].seq if self.pending else math.inf
        still: list[FlushMarker] = []
        for m in self._waiting:
            if m.seq < first:
                m.event.set()
            else:
                still.append(m)
        self._waiting = still

    def release_waiters(self) -> None:
        """On close: wake every flush() still waiting (their batches may never be delivered)."""
        for m in self._waiting:
            m.ok = m.ok and (not self.pending or m.seq < self.pending[0].seq)
            m.event.set()
        self._waiting = []


def _pack(rows: list[tuple[str, dict[str, Any], int]]) -> list[list[tuple[str, dict[str, Any], int]]]:
    """Rows into batches of at most MAX_ROWS_PER_BATCH rows and MAX_IDS_PER_BATCH ids (one empty batch
    when there are no rows: it still reports ``dropped``)."""
    out: list[list[tuple[str, dict[str, Any], int]]] = [[]]
    ids = 0
    for r in rows:
        if len(out[-1]) >= MAX_ROWS_PER_BATCH or ids + r[2] > MAX_IDS_PER_BATCH:
            out.append([])
            ids = 0
        out[-1].append(r)
        ids += r[2]
    return out


_dumps = json.dumps
_HEX = "0123456789abcdef"


def encode_body(body: dict[str, Any]) -> bytes:
    """``body`` as ``json.dumps`` writes it (keys in order), but each reward row's ``ids`` written as
    the worker joined them (:class:`~banditflags._aggregate.Ids`: ``json.dumps`` costs ~150 ns an id,
    a join ~6) or by one join here, and **checked**: ``track()`` checks a Decision's id only for its
    type and length, so an id that is not 16 lower-case hex digits (a hand-made Decision's) is taken
    out of its row here (still counted in ``count`` and ``sum``, as reward_item counts it: without an
    id). One check of the joined text for all ids of a row (:func:`~banditflags._aggregate.ids_text`);
    the row's ``ids`` are replaced only when one fails, so a retry sends the same bytes (a row's
    ``ids`` go last in it, the body's keys stay in order: the same whether or not ids are left).

    >>> body = {"id": "b", "rewards": [{"count": 3, "ids": ["00000000000000aa", "0b", "0000000000000abc"]}],
    ...         "n": 0}
    >>> encode_body(body).decode()
    '{"id": "b", "rewards": [{"count": 3, "ids": ["00000000000000aa","0000000000000abc"]}], "n": 0}'
    >>> body["rewards"][0]["ids"]
    ['00000000000000aa', '0000000000000abc']
    """
    rewards = body.get("rewards")
    if not rewards or not any("ids" in r for r in rewards):
        return _dumps(body).encode("utf-8")
    parts: list[bytes] = []
    for key, value in body.items():
        parts += (b", " if parts else b"{", _dumps(key).encode(), b": ")
        if key != "rewards":
            parts.append(_dumps(value).encode())
            continue
        parts.append(b"[")
        for i, r in enumerate(rewards):
            if i:
                parts.append(b", ")
            ids = r.get("ids")
            if (ids.__class__ is not list and ids.__class__ is not Ids) or not ids:
                parts.append(_dumps(r).encode())
                continue
            text = ids.text if ids.__class__ is Ids else None
            if text is None:
                text = ids_text(ids)
            if text is None:
                ids = [d for d in ids if d.__class__ is str and len(d) == 16 and not d.strip(_HEX)]
                r["ids"] = ids
                if not ids:
                    del r["ids"]
                    parts.append(_dumps(r).encode())
                    continue
                text = '","'.join(ids).encode("ascii")
            rest = _dumps({k: v for k, v in r.items() if k != "ids"})
            parts += (rest[:-1].encode(), b', "ids": ["' if rest != "{}" else b'"ids": ["', text, b'"]}')
        parts.append(b"]")
    parts.append(b"}")
    return b"".join(parts)
