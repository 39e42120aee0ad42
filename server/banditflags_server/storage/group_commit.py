"""Group commit: event batches that arrive together are written in one transaction.

Every ``POST /v1/events`` must be acknowledged only after its batch is durably committed. One commit per
batch caps a server at the database's commit rate (an fsync each: ~400 batches a second on this
machine's SQLite, about the same on PostgreSQL). So the handlers hand their batches to one writer
thread (:class:`GroupCommitter`), which takes everything queued, counts it in one transaction
(:func:`~.events.count_group`: a savepoint per batch, sums coalesced per row) and commits once; each
handler's future is resolved only after that commit, with its own result or its own error. While a
group commits, the next one queues, so a busy server writes bigger groups and an idle one writes each
batch at once: there is no added wait.

- A batch that does not fit its flags gets its ValidationError (422); the others of the group commit.
- A batch that met a concurrent writer (another replica inserting the same decision id) is counted
  again in the next group, up to :data:`ATTEMPTS` times.
- A failed commit fails every batch of the group (:class:`CommitFailed`, a 503 for the SDK, which retries
  with the same ``batch_id``: nothing was counted, so nothing is counted twice).
- The queue is bounded (:data:`MAX_QUEUED` batches): beyond it :meth:`GroupCommitter.submit` refuses
  at once (503), and the SDK keeps the batch and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from banditflags_server.records import EventBatch, IngestResult
from banditflags_server.storage.events import Retry, TargetsCache, count_group
from banditflags_server.storage.outage import OutageLog, is_unavailable, reason

log = logging.getLogger("banditflags_server.ingest")

#: Batches and rows written in one transaction at most (bounds the transaction and its locks).
MAX_GROUP_BATCHES = 256
MAX_GROUP_ROWS = 50_000
#: Batches waiting for the writer at most; beyond it submit() refuses (the SDK retries later).
MAX_QUEUED = 10_000
#: Times a batch that raced another replica is tried again in a later group.
ATTEMPTS = 8


class CommitFailed(Exception):
    """The group's transaction failed; none of its batches was counted (the SDK may retry)."""


class Overloaded(Exception):
    """The writer's queue is full; the batch was not taken (the SDK may retry)."""


@dataclass
class _Item:
    batch: EventBatch
    #: A thread's future (submit) or an event loop's (ingest), with its loop.
    future: Future[IngestResult] | asyncio.Future[IngestResult]
    loop: asyncio.AbstractEventLoop | None = None
    attempts: int = 0
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = len(self.batch.exposures) + len(self.batch.rewards) + 1


class GroupCommitter:
    """One writer thread per process; :meth:`submit` from any thread or :meth:`ingest` from async code.

    >>> GroupCommitter.__name__
    'GroupCommitter'
    """

    def __init__(self, engine: Engine, on_group: Callable[[int, float], None] | None = None) -> None:
        self.engine = engine
        #: Called after each committed group with its size and seconds taken (metrics); never raises here.
        self.on_group = on_group
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=MAX_QUEUED)
        self._retry: list[_Item] = []
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._conn: Connection | None = None  # the writer thread's own (see _count)
        self._conn_pool: object = None  # the engine's pool it came from
        self._targets = TargetsCache()  # the flags and versions rows were checked against (fresh 1 s)
        self.outage = OutageLog("event ingest", log)
        self.groups = 0
        self.batches = 0
        self.last_group = 0

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="banditflags-ingest", daemon=True)
                self._thread.start()

    def submit(self, batch: EventBatch) -> Future[IngestResult]:
        """Queue ``batch``; the future resolves after the commit that counted it (or with its error)."""
        if self._closed:
            raise CommitFailed("the server is shutting down")
        self.start()
        fut: Future[IngestResult] = Future()
        try:
            self._queue.put_nowait(_Item(batch, fut))
        except queue.Full:
            raise Overloaded("too many event batches waiting to be written") from None
        return fut

    async def ingest(self, batch: EventBatch) -> IngestResult:
        """Queue ``batch`` from async code and wait for the commit that counts it. Handlers waiting on
        one group are woken together, with one call into their event loop (not one per batch)."""
        if self._closed:
            raise CommitFailed("the server is shutting down")
        self.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[IngestResult] = loop.create_future()
        try:
            self._queue.put_nowait(_Item(batch, fut, loop))
        except queue.Full:
            raise Overloaded("too many event batches waiting to be written") from None
        return await fut

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread (idempotent, bounded by ``timeout``)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                return
            thread.join(timeout)

    # -- the writer thread -------------------------------------------------------------------------

    def _take(self, block: bool) -> tuple[list[_Item], bool]:
        """The next group: retries first, then whatever is queued (waiting only when nothing is and
        ``block``); and whether the stop marker was seen."""
        group, rows, stop = list(self._retry), sum(i.rows for i in self._retry), False
        self._retry = []
        while len(group) < MAX_GROUP_BATCHES and rows < MAX_GROUP_ROWS:
            try:
                item = self._queue.get() if block and not group and not stop else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                continue
            group.append(item)
            rows += item.rows
        return group, stop

    def _run(self) -> None:
        stopping = False
        while True:
            group, saw_stop = self._take(block=not stopping)
            stopping = stopping or saw_stop
            if group:
                self._write(group)
            if stopping and not self._retry and self._queue.empty():
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        self._conn.close()
                    self._conn = None
                return  # everything queued before close() has been written

    def _write(self, group: list[_Item]) -> None:
        now = time.time()
        t0 = time.perf_counter()
        try:
            outcomes = self._count(group, now)
        except Exception as exc:
            if is_unavailable(exc):  # down, full, read-only: said once per outage
                self.outage.failed(exc)
            else:
                log.warning("event batches not committed (%d in the group): %s", len(group), reason(exc))
            failed = CommitFailed(f"{type(exc).__name__}: the batch was not counted")
            _settle([(item, failed) for item in group])
            time.sleep(0.05)  # a failing database: do not spin through the queue
            return
        self.outage.ok()
        self.groups += 1
        self.batches += len(group)
        self.last_group = len(group)
        if self.on_group is not None:
            with contextlib.suppress(Exception):
                self.on_group(len(group), time.perf_counter() - t0)
        done: list[tuple[_Item, IngestResult | Exception]] = []
        for item, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, Retry):
                item.attempts += 1
                if item.attempts < ATTEMPTS:
                    self._retry.append(item)
                else:
                    done.append((item, CommitFailed("a concurrent writer kept winning; retry")))
            else:
                done.append((item, outcome))
        _settle(done)
        if self._retry:
            time.sleep(0.002 * min(self._retry[0].attempts, 10))  # let the other replica commit first

    def _count(self, group: list[_Item], now: float) -> list[IngestResult | Exception]:
        """Count ``group`` in one transaction on the writer's own connection, kept between groups: no
        pool checkout and no pre-ping round trip per group (it follows the engine when the engine's
        pool is disposed of and made again). A connection found dead (a restarted
        database, a killed backend) is replaced and the group tried once more on the new one: safe, as
        a group whose commit did go through finds its batch ids on record and counts nothing twice."""
        batches = [i.batch for i in group]
        for attempt in (1, 2):
            if self._conn is not None and self._conn_pool is not self.engine.pool:
                self._drop_connection()  # the engine was disposed of (a new pool): follow it
            if self._conn is None:
                self._conn_pool = self.engine.pool
                self._conn = self.engine.connect().execution_options(bf_write=True)
            conn = self._conn
            try:
                with conn.begin():
                    return count_group(conn, batches, now, self._targets)
            except Exception as exc:
                self._targets.clear()  # e.g. a flag deleted since it was cached: look everything up again
                self._drop_connection()  # whatever failed, the next group starts on a fresh connection
                if attempt == 2 or not (isinstance(exc, DBAPIError) and exc.connection_invalidated):
                    raise
        raise AssertionError("unreachable")

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()


def _settle(done: list[tuple[_Item, IngestResult | Exception]]) -> None:
    """Resolve the futures: threads' at once, each event loop's in one call (one wake-up per loop)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Item, IngestResult | Exception]]] = {}
    for item, outcome in done:
        if item.loop is None:
            _resolve(item.future, outcome)
        else:
            by_loop.setdefault(item.loop, []).append((item, outcome))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve_all, items)


def _resolve_all(items: list[tuple[_Item, IngestResult | Exception]]) -> None:
    for item, outcome in items:
        _resolve(item.future, outcome)


def _resolve(
    fut: Future[IngestResult] | asyncio.Future[IngestResult], outcome: IngestResult | Exception
) -> None:
    if fut.done():  # an asyncio future cancelled by a client that went away
        return
    if isinstance(outcome, Exception):
        fut.set_exception(outcome)
    else:
        fut.set_result(outcome)
