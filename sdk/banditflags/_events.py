"""Exposure and reward recording: a lock-free buffer, pre-aggregation and batched delivery.

The hot path appends one small tuple to :attr:`EventProcessor.queue` (``deque.append`` is atomic
under the GIL) and never touches anything else here. Everything below runs on the worker thread (or,
in serverless mode, inside ``flush()`` under :attr:`EventProcessor.lock`):

- drain the buffer in order and aggregate per ``(flag, version, arm, rule)`` into ``n`` (exposures) and
  ``count, sum, sum_sq`` (rewards); keep the recent-decision memory used to attribute rewards and
  to count ``user``-unit exposures once per credit window;
- every ``flush_interval``, cut the aggregates into a batch (docs/protocol.md, ``POST /v1/events``)
  and send pending batches in order; retryable failures (network, 408, 429, 5xx) keep the batch and
  its ``batch_id`` and back off with jitter, other 4xx drop it (counted).

Buffer items (positional tuples keep the hot path cheap):

- exposure: ``((flag, version, arm, rule), unit_id)``
- reward by token: ``("t", flag, version, arm, rule, unit_id | None, reward)``
- reward by unit: ``("u", flag, unit_id, reward)``
- a decision that records no exposure (error, killed flag): ``("d", flag, variant, reason, error_type)``,
  only counted for the decisions metric
- either with a guardrail metric name appended: ``(..., reward, metric)``
- a :class:`FlushMarker` from ``flush()``.

The worker also keeps cumulative counters for the OpenTelemetry metrics (``_metrics``), so that
nothing is counted on the hot path: :attr:`EventProcessor.decision_counts` and
:attr:`EventProcessor.reward_totals`.

``rule`` is the targeting rule that served the unit (DESIGN.md §9): a rule's id, ``"target"``, or
``None`` for the flag's default allocation. Rows carry ``"rule"`` only when it is not None, so a batch
without targeting is byte for byte what it was. Attribute values never reach this module.

>>> import collections
>>> proc = EventProcessor(lambda: {}, lambda body, timeout: 202, flush_interval=1.0)
>>> proc.queue.append((("btn", 1, 0, None), "u1"))
>>> proc.flush_now(deadline=None)
True
>>> proc.batches_sent
1
"""

from __future__ import annotations

import collections
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

import cachetools

from ._bucketing import hash_key
from ._config import FlagSnapshot
from ._sync import backoff_delay

__all__ = ["Batch", "EventProcessor", "FlushMarker"]

DRAIN_INTERVAL = 0.1
MAX_ROWS_PER_BATCH = 10_000
MAX_METRIC_SERIES = 10_000  # distinct (flag, variant, reason, error) counted; the rest go to "_other"
SEND_BACKOFF_BASE = 0.5
SEND_BACKOFF_CAP = 60.0
_RETRYABLE = frozenset({408, 429})

Key = tuple[str, int, int, "str | None"]  # (flag, version, arm, rule)
# post(body, timeout) -> HTTP status, or None for a network error
PostFn = Callable[[dict[str, Any], float], "int | None"]


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


@dataclass(slots=True)
class _Memory:
    """Recent decision of one (flag, unit): served arm, when, and the unit's reward total there."""

    version: int
    arm: int
    at: float
    total: float = 0.0
    rule: str | None = None


@dataclass
class EventProcessor:
    """Owns the buffer, the aggregates, the decision memory and the pending batches.

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

    def __post_init__(self) -> None:
        self.queue: collections.deque[Any] = collections.deque()
        self.memory: cachetools.LRUCache[tuple[str, str], _Memory] = cachetools.LRUCache(
            maxsize=self.decision_memory_size
        )
        self.batches_sent = 0
        self.batches_failed = 0  # failed attempts (each retry counts)
        self.batches_dropped = 0
        self.dropped = 0  # events lost: buffer full or reward not attributable
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
        self.exposures: dict[Key, int] = {}
        self.rewards: dict[Key, list[float]] = {}
        # Guardrail metrics: (flag, version, arm, rule, metric) -> [count, sum, sum_sq], each on its own.
        self.metric_rewards: dict[tuple[str, int, int, str | None, str], list[float]] = {}
        self.pending: collections.deque[Batch] = collections.deque()
        self._waiting: list[FlushMarker] = []
        self._seq = 0
        self._dropped_reported = self.dropped
        self._next_send_at = 0.0

    def after_fork_in_child(self) -> None:
        """Forget the parent's thread, locks and unsent data (the parent sends those)."""
        self.queue = collections.deque()
        self._reset_runtime()

    # -- called from user threads ---------------------------------------------------------------

    def note_dropped(self) -> None:
        """Count one event lost because the buffer was full (the rare path, so a lock is fine)."""
        with self._drop_lock:
            self.dropped += 1

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
                    if forced or now >= next_cut:
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
        flags = self.get_flags()
        now = self.clock()
        markers: list[FlushMarker] = []
        seen: dict[Key, int] = {}
        while q:
            try:
                item = pop()
            except IndexError:
                break
            if item.__class__ is FlushMarker:
                markers.append(item)
            elif len(item) == 2:
                key = item[0]
                seen[key] = seen.get(key, 0) + 1
                self._exposure(key, item[1], flags, now)
            elif item[0] == "t":
                self._reward_token(item, flags, now)
            elif item[0] == "d":
                self._count_decision(str(item[1])[:64], item[2] or "", item[3], item[4] or "", flags, 1)
            else:
                self._reward_unit(item, flags, now)
        if seen:
            reason = self.reason_now() if self.reason_now is not None else "split"
            for (flag, _, arm, _), n in seen.items():
                f = flags.get(flag)
                variant = f.keys[arm] if f is not None and arm < len(f.keys) else str(arm)
                self._count_decision(flag, variant, reason, "", flags, n)
        return markers

    def _count_decision(
        self, flag: str, variant: str, reason: str, error_type: str, flags: Mapping[str, FlagSnapshot], n: int
    ) -> None:
        if reason == "error" and not error_type:  # variant() does not tell flag_not_found apart
            error_type = "flag_not_found" if flags else "provider_not_ready"
        key = (flag, variant, reason, error_type)
        counts = self.decision_counts
        if key not in counts and len(counts) >= MAX_METRIC_SERIES:
            key = ("_other", "", reason, error_type)  # unknown flag keys must not grow memory
        counts[key] = counts.get(key, 0) + n

    def _register(self, markers: list[FlushMarker]) -> None:
        # Called right after the cut that follows the drain: everything recorded before a marker is
        # in a batch numbered <= the last one cut.
        for m in markers:
            m.seq = self._seq
        self._waiting.extend(markers)

    def _exposure(self, key: Key, unit_id: str, flags: Mapping[str, FlagSnapshot], now: float) -> None:
        flag, version, arm, rule = key
        mkey = (flag, unit_id)
        f = flags.get(flag)
        if f is not None and f.user_unit:
            m = self.memory.get(mkey)
            if (
                m is not None
                and m.version == version
                and m.arm == arm
                and m.rule == rule
                and now - m.at <= f.credit_window
            ):
                return  # this user was already counted on this arm in this credit window
        self.memory[mkey] = _Memory(version, arm, now, 0.0, rule)
        self.exposures[key] = self.exposures.get(key, 0) + 1

    def _reward_token(self, item: tuple[Any, ...], flags: Mapping[str, FlagSnapshot], now: float) -> None:
        _, flag, version, arm, rule, unit_id, reward = item[:7]
        f = flags.get(flag)
        if f is None or arm >= len(f.keys):
            self._lost()
            return
        if len(item) > 7:
            self._add_metric((flag, version, arm, rule, item[7]), reward)
            return
        m: _Memory | None = None
        if f.user_unit and unit_id is not None:
            mkey = (flag, unit_id)
            m = self.memory.get(mkey)
            if m is None or m.version != version or m.arm != arm or m.rule != rule:
                m = self.memory[mkey] = _Memory(version, arm, now, 0.0, rule)
        self._add_reward((flag, version, arm, rule), reward, m)

    def _reward_unit(self, item: tuple[Any, ...], flags: Mapping[str, FlagSnapshot], now: float) -> None:
        _, flag, unit_id, reward = item[:4]
        f = flags.get(flag)
        if f is None:
            self._lost()
            return
        mkey = (flag, unit_id)
        m = self.memory.get(mkey)
        if m is None or now - m.at > f.credit_window:
            if f.killed:  # no arm to credit: everyone is on control and nothing was exposed
                self._lost()
                return
            if f.route is not None:  # targeting without the call's attributes: targets and id-only rules
                f = f.route(unit_id, None)
            arm = f.table[(hash_key(f.prefix + unit_id) * 10_000) >> 32]
            m = self.memory[mkey] = _Memory(f.version, arm, now, 0.0, f.rule)
        if len(item) > 4:
            self._add_metric((flag, m.version, m.arm, m.rule, item[4]), reward)
            return
        self._add_reward((flag, m.version, m.arm, m.rule), reward, m if f.user_unit else None)

    def _add_metric(self, key: tuple[str, int, int, str | None, str], value: float) -> None:
        row = self.metric_rewards.get(key)
        if row is None:
            row = self.metric_rewards[key] = [0, 0.0, 0.0]
        row[0] += 1
        row[1] += value
        row[2] += value * value

    def _add_reward(self, key: Key, reward: float, m: _Memory | None) -> None:
        row = self.rewards.get(key)
        if row is None:
            row = self.rewards[key] = [0, 0.0, 0.0]
        row[0] += 1
        row[1] += reward
        if m is None:  # unit = decision: every reward is its own observation
            row[2] += reward * reward
        else:  # unit = user: sum_sq is the sum of squared per-user totals; (t+r)² - t² = 2tr + r²
            t = m.total
            row[2] += 2.0 * t * reward + reward * reward
            m.total = t + reward

    def _lost(self) -> None:
        with self._drop_lock:
            self.dropped += 1

    def _undropped(self) -> int:
        return self.dropped - self._dropped_reported

    def cut(self) -> None:
        """Turn the aggregates into pending batches (at most MAX_ROWS_PER_BATCH rows each)."""
        dropped = self._undropped()
        if not self.exposures and not self.rewards and not self.metric_rewards and not dropped:
            return
        rows: list[tuple[str, dict[str, Any]]] = [
            ("exposures", _row(key, {"count": n})) for key, n in self.exposures.items()
        ]
        rows.extend(
            ("rewards", _row(key, {"count": int(r[0]), "sum": r[1], "sum_sq": r[2]}))
            for key, r in self.rewards.items()
        )
        flags = self.get_flags()
        totals = self.reward_totals
        for (f, _, a, _), r in self.rewards.items():
            fs = flags.get(f)
            tkey = (f, fs.keys[a] if fs is not None and a < len(fs.keys) else str(a))
            t = totals.get(tkey)
            if t is None:
                t = totals[tkey] = [0, 0.0]
            t[0] += r[0]
            t[1] += r[1]
        rows.extend(
            ("rewards", _row(key[:4], {"count": int(r[0]), "sum": r[1], "sum_sq": r[2], "metric": key[4]}))
            for key, r in self.metric_rewards.items()
        )
        self.exposures = {}
        self.rewards = {}
        self.metric_rewards = {}
        self._dropped_reported += dropped
        sent_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for start in range(0, max(len(rows), 1), MAX_ROWS_PER_BATCH):
            chunk = rows[start : start + MAX_ROWS_PER_BATCH]
            self._seq += 1
            body: dict[str, Any] = {
                "batch_id": uuid.uuid4().hex,
                "sent_at": sent_at,
                "sdk": self.sdk,
                "exposures": [r for kind, r in chunk if kind == "exposures"],
                "rewards": [r for kind, r in chunk if kind == "rewards"],
                "dropped": dropped if start == 0 else 0,
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
        """Send pending batches in order; stop at the first retryable failure (returns False)."""
        while self.pending:
            batch = self.pending[0]
            timeout = 30.0 if deadline is None else deadline - self.clock()
            if timeout <= 0:
                return False
            status = self.post(batch.body, timeout)
            if status is not None and 200 <= status < 300:
                self.pending.popleft()
                self.batches_sent += 1
                self._resolve_markers()
                continue
            if status is None or status in _RETRYABLE or status >= 500:
                batch.attempts += 1
                self.batches_failed += 1
                self.last_error = f"POST /v1/events failed ({'network error' if status is None else status})"
                delay = backoff_delay(batch.attempts, SEND_BACKOFF_BASE, SEND_BACKOFF_CAP, self.rng)
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


def _row(key: tuple[Any, ...], counts: dict[str, Any]) -> dict[str, Any]:
    """A batch row: ``flag, version, arm``, ``rule`` when a targeting rule served it, then ``counts``."""
    flag, version, arm, rule = key
    row: dict[str, Any] = {"flag": flag, "version": version, "arm": arm}
    if rule is not None:
        row["rule"] = rule
    row.update(counts)
    return row
