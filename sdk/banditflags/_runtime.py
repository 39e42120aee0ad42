"""Everything a :class:`~banditflags.Client` does besides deciding: construction, bootstrap, the config
state it publishes, background threads, refresh, flush, close, fork handling, listeners and stats.

:class:`Runtime` is the base class of ``Client`` (``_client.py`` adds the decision path on top). The
split is by who calls what: application code calls ``variant``/``decide``/``track`` millions of times
per second, everything here runs at start, on the sync and delivery threads, or at close. The decision
path reads only plain instance attributes set here (``_state``, ``_flags``, ``_queue``, ``_started``,
...), so the base class costs a decision nothing: methods resolve through the type's cache and the
attributes live in the instance's own dict, as before the split.

>>> _origin("https://user:pw@flags.example.com:8443/base/"), _origin("http://[::1]:8000")
('https://flags.example.com:8443', 'http://[::1]:8000')
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import math
import os
import random
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx

from . import _lifecycle, _metrics
from ._config import ConfigSnapshot, FlagSnapshot, parse_config
from ._events import EventProcessor, encode_body
from ._models import ClientStats
from ._notify import Listener, Notifier
from ._sync import ConfigSync, Pushback
from ._telemetry import ContextIdMode, Mode, Telemetry
from ._units import Conversions, reseed_decision_ids
from ._version import __version__

__all__ = ["Runtime"]

_SDK = f"banditflags-python/{__version__}"
_monotonic = time.monotonic
_R = TypeVar("_R", bound="Runtime")


def _in_uwsgi_master() -> bool:
    """True in a uWSGI master process (the app imported before uWSGI forks its workers, its default).

    uWSGI forks its workers from C after the master has released the GIL for good; if one of our
    threads holds the GIL at that instant, the new worker waits for it forever (seen: a worker stuck in
    ``take_gil`` under ``uwsgi_python_master_fixup``, never answering). So no thread of ours may run in
    a uWSGI master: the client fetches synchronously there and each worker starts its own threads.
    """
    uwsgi = sys.modules.get("uwsgi")  # present only inside a uWSGI server; never imported here
    if uwsgi is None:
        return False
    try:
        return bool(uwsgi.masterpid() == os.getpid())
    except Exception:  # an older uWSGI without masterpid(), or not the real module
        return False


def _origin(base_url: str) -> str:
    """``scheme://host[:port]`` of the server: the default ``feature_flag.set.id`` (no path, no userinfo)."""
    try:
        u = httpx.URL(base_url)
        host = f"[{u.host}]" if ":" in u.host else u.host
        return f"{u.scheme}://{host}" + (f":{u.port}" if u.port is not None else "")
    except Exception:
        return ""


@dataclass(frozen=True, slots=True)
class _State:
    """What the hot path reads, swapped as one attribute: flags, and where they came from."""

    flags: dict[str, FlagSnapshot]
    revision: int | None
    cached: bool  # from bootstrap, no server answer yet
    stale_at: float  # monotonic time after which decisions are `stale`
    confirmed_at: float | None  # monotonic time of the last 200/304, None before any


_EMPTY_STATE = _State({}, None, False, math.inf, None)


class Runtime:
    """The lifecycle half of :class:`~banditflags.Client` (see there for the constructor's arguments).

    Not meant to be used alone: it publishes config snapshots and runs the threads, but has no way to
    make a decision.
    """

    def __init__(
        self,
        base_url: str,
        sdk_key: str,
        *,
        refresh_interval: float = 5.0,
        flush_interval: float = 2.0,
        stale_after: float = 300.0,
        request_timeout: float = 5.0,
        bootstrap: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        background: bool = True,
        max_queue: int = 100_000,
        max_pending_batches: int = 100,
        decision_memory_size: int = 100_000,
        transport: httpx.BaseTransport | None = None,
        logger: logging.Logger | None = None,
        telemetry: Mode = "span",
        tracer_provider: Any = None,
        logger_provider: Any = None,
        meter_provider: Any = None,
        telemetry_context_id: ContextIdMode = "hashed",
        telemetry_context_id_key: str | bytes | None = None,
        flag_set_id: str | None = None,
        streaming: bool = True,
    ) -> None:
        if not isinstance(base_url, str) or not base_url:
            raise ValueError("base_url must be a non-empty string")
        if not isinstance(sdk_key, str) or not sdk_key:
            raise ValueError("sdk_key must be a non-empty string")
        for name, v in (
            ("refresh_interval", refresh_interval),
            ("flush_interval", flush_interval),
            ("stale_after", stale_after),
            ("request_timeout", request_timeout),
        ):
            if not v > 0:
                raise ValueError(f"{name} must be positive")
        for name, n in (
            ("max_queue", max_queue),
            ("max_pending_batches", max_pending_batches),
            ("decision_memory_size", decision_memory_size),
        ):
            if n < 1:
                raise ValueError(f"{name} must be >= 1")
        self._base_url = base_url.rstrip("/")
        self._sdk_key = sdk_key
        self._stale_after = float(stale_after)
        self._request_timeout = float(request_timeout)
        self._background = background
        # The push stream (/v1/stream) in background mode; polling every refresh_interval otherwise.
        self._streaming = bool(streaming) and background
        self._max_queue = max_queue
        self._memory_size = decision_memory_size
        self._transport = transport
        self._logger = logger or logging.getLogger("banditflags")
        self._rng = random.Random()
        self._closed = False
        self._state = _EMPTY_STATE
        self._flags: dict[str, FlagSnapshot] = _EMPTY_STATE.flags
        self._token_heads: dict[str, tuple[FlagSnapshot, int]] = {}
        self._rejected = 0
        self._duplicates = itertools.count()  # next() per duplicate; read by stats() (reads subtracted)
        self._duplicate_reads = 0
        self._conversions = Conversions(decision_memory_size)
        self._rejected_logged = False
        cid_key = telemetry_context_id_key if telemetry_context_id_key is not None else sdk_key
        self._tel = Telemetry(
            mode=telemetry,
            tracer_provider=tracer_provider,
            logger_provider=logger_provider,
            context_id=telemetry_context_id,
            context_id_key=cid_key.encode("utf-8") if isinstance(cid_key, str) else bytes(cid_key),
            set_id=flag_set_id if flag_set_id is not None else _origin(self._base_url),
        )
        self._tel_forced = self._tel.forced
        self._notifier = Notifier(self._logger)
        self._pushback = Pushback(self._logger, self._rng)  # Retry-After and refused keys, all endpoints
        self._sync = ConfigSync(
            f"{self._base_url}/v1/config",
            sdk_key,
            float(refresh_interval),
            self._publish,
            self._confirm,
            self._logger,
            self._rng,
            stream_url=f"{self._base_url}/v1/stream" if self._streaming else None,
            pushback=self._pushback,
        )
        self._events = EventProcessor(
            get_flags=lambda: self._flags,
            post=self._post_events,
            flush_interval=float(flush_interval),
            max_queue=max_queue,
            max_pending_batches=max_pending_batches,
            decision_memory_size=decision_memory_size,
            sdk=_SDK,
            logger=self._logger,
            rng=self._rng,
            reason_now=self._exposure_reason,
            sync_info=self._sync_info,
            pushback=self._pushback,
        )
        self._init_runtime()
        self._bind_fast_paths()
        if bootstrap is not None:
            self._load_bootstrap(bootstrap)
        _lifecycle.register(self)
        if telemetry != "off":
            _metrics.register(self, meter_provider)

    def _bind_fast_paths(self) -> None:
        """Client binds its compiled fast paths here, once everything they read exists."""

    def _init_runtime(self) -> None:
        # Per-process resources: rebuilt in a forked child.
        self._pid = os.getpid()
        self._start_lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._sync_lock = threading.Lock()  # serialises synchronous refresh() calls
        self._stop = threading.Event()
        self._ready = threading.Event()
        if self._state.confirmed_at is not None:
            self._ready.set()
        self._config_thread: threading.Thread | None = None
        self._stream_thread: threading.Thread | None = None
        self._http = httpx.Client(
            transport=self._transport, timeout=self._request_timeout, headers={"User-Agent": _SDK}
        )
        # Its own connection pool: a long-lived stream never competes with event delivery.
        self._stream_http = httpx.Client(
            transport=self._transport, timeout=self._request_timeout, headers={"User-Agent": _SDK}
        )
        self._queue = self._events.queue
        self._conversion_ids = self._events.agg.conversions  # track()'s conversions, counted in place
        self._conv_cap = self._max_queue  # ids one conversion list holds at most (0 once closed)
        # From this many ids on, track() asks the worker to cut early (0 once closed: then every
        # call takes that branch, which records nothing).
        self._conv_soon = self._max_queue // 2
        self._request_cut = self._events.request_cut
        self._note_dropped = self._events.note_dropped
        # The hot path checks this one bool; serverless and closed clients never start threads.
        self._started = self._closed or not self._background
        self._master_checked = 0  # the pid _in_master was checked in
        self._in_master = False

    def _load_bootstrap(self, bootstrap: Mapping[str, Any] | str | os.PathLike[str]) -> None:
        try:
            if isinstance(bootstrap, Mapping):
                payload: object = bootstrap
            else:
                with open(bootstrap, encoding="utf-8") as fh:
                    payload = json.load(fh)
            snapshot = parse_config(payload)
        except Exception as exc:  # a broken cache file must not stop the application from starting
            self._logger.warning("banditflags: ignoring bootstrap config: %s", exc)
            return
        self._set_state(_State(dict(snapshot.flags), snapshot.revision, True, math.inf, None))

    # -- config state ---------------------------------------------------------------------------

    def _set_state(self, state: _State) -> None:
        old = self._state.flags
        if state.flags is old:  # a confirmation (304): same snapshots
            self._state = state
            return
        units = self._memory_size
        for key, f in state.flags.items():
            # A flag's unit memory outlives its snapshots: a new config must not forget who was served.
            prev = old.get(key)
            if prev is not None and prev.units is not f.units:
                prev.units.on = prev.units.on or f.units.on
                for g in (f, *f.rule_snapshots):  # its targeting's snapshots share the flag's memory
                    object.__setattr__(g, "units", prev.units)  # frozen: set once, before anyone reads it
            else:
                f.units.cap = units
        # What track(token) looks a bf2 token's head up in ("bf2:flag:version:arm", no rule): the
        # snapshot and arm it names, without parsing the token (see Client.track).
        self._token_heads = {
            f"bf2:{key}:{f.version}:{arm}": (f, arm)
            for key, f in state.flags.items()
            for arm in range(len(f.keys))
        }
        self._state = state
        self._flags = state.flags
        self._events.agg.watch(state.flags)  # its exposure counters are read from now on

    def _publish(self, snapshot: ConfigSnapshot) -> None:
        now = _monotonic()
        old = self._state.flags
        self._set_state(_State(dict(snapshot.flags), snapshot.revision, False, now + self._stale_after, now))
        self._ready.set()
        self._notifier.published(old, snapshot.flags, snapshot.revision)

    def _confirm(self) -> None:
        now = _monotonic()
        stale_at = now + self._stale_after
        self._set_state(replace(self._state, cached=False, stale_at=stale_at, confirmed_at=now))
        self._ready.set()
        self._notifier.confirmed()

    def _after_fetch(self, ok: bool) -> None:
        if not ok:
            self._notifier.fetch_failed(_monotonic() >= self._state.stale_at)

    def _exposure_reason(self) -> str:
        # The reason of the exposures the worker drains now (for the decisions metric).
        st = self._state
        if st.cached:
            return "cached"
        return "stale" if _monotonic() >= st.stale_at else "split"

    def _sync_info(self) -> tuple[int | None, float | None]:
        # What each events batch reports to the server: config revision and age (staleness metric).
        st = self._state
        return st.revision, None if st.confirmed_at is None else _monotonic() - st.confirmed_at

    # -- listeners ------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on config lifecycle events (:class:`ConfigEvent`: ``ready``,
        ``changed``, ``stale``). It runs on the sync thread (or in ``refresh()``), never on a decision;
        keep it short. Staleness is noticed after a failed fetch, so at the poll interval's pace."""
        self._notifier.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._notifier.remove(listener)

    # -- lifecycle ------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._in_master and self._master_checked == os.getpid():
            return  # a uWSGI master, already known: no lock on its decision path
        with self._start_lock:
            if self._started:
                return
            if self._pid != os.getpid() and not self._closed:
                # A fork no hook told us about (uWSGI without py-call-osafterfork or a postfork hook):
                # the parent's connections and counts are the parent's. (Replaces the lock we hold.)
                self._after_fork_in_child()
            if self._threads_deferred():
                return  # a uWSGI master: each worker starts its own threads on first use
            self._started = True
            if self._closed:
                return
            t = threading.Thread(
                target=self._sync.run,
                args=(lambda: self._http, self._stop, self._request_timeout, self._after_fetch),
                name="banditflags-config",
                daemon=True,
            )
            self._config_thread = t
            t.start()
            if self._streaming:
                st = threading.Thread(
                    target=self._sync.run_stream,
                    args=(lambda: self._stream_http, self._stop, self._request_timeout),
                    name="banditflags-stream",
                    daemon=True,
                )
                self._stream_thread = st
                st.start()
            self._events.start()

    def _threads_deferred(self) -> bool:
        """True in a uWSGI master, where the client runs no threads (see :func:`_in_uwsgi_master`)."""
        pid = os.getpid()
        if self._master_checked != pid:
            self._master_checked = pid
            self._in_master = _in_uwsgi_master()
            if self._in_master:
                self._logger.info(
                    "banditflags: in a uWSGI master: no background threads here (uWSGI forks its workers "
                    "from C, and a thread holding the GIL then would hang the new worker); each worker "
                    "starts its own, and wait_until_ready() fetches the config synchronously"
                )
        return self._in_master

    def start(self) -> None:
        """Start the background threads now instead of on the first decision (no-op if serverless)."""
        if not self._started:
            self._start()

    def wait_until_ready(self, timeout: float = 5.0) -> bool:
        """Block until the server has answered once with a valid config; False on timeout.

        In serverless mode this fetches the config synchronously (``refresh``) if needed.
        """
        if self._ready.is_set():
            return True
        if not self._background:
            return self.refresh(timeout)
        self.start()
        if not self._started:  # a uWSGI master: no threads, so fetch it here
            return self.refresh(timeout)
        return self._ready.wait(timeout)

    def refresh(self, timeout: float = 5.0) -> bool:
        """Fetch the config now, synchronously. True when the server answered (200 or 304)."""
        try:
            if self._closed or not self._sync_lock.acquire(timeout=timeout):
                return False
            try:
                ok = self._sync.fetch(self._http, min(timeout, self._request_timeout))
            finally:
                self._sync_lock.release()
            self._after_fetch(ok)
            return ok
        except Exception:
            return False

    def _post_events(self, body: dict[str, Any], timeout: float) -> tuple[int, str | None] | None:
        try:
            resp = self._http.post(
                f"{self._base_url}/v1/events",
                content=encode_body(body),  # json= would encode each decision id through json.dumps
                headers={"Authorization": f"Bearer {self._sdk_key}", "Content-Type": "application/json"},
                timeout=min(timeout, self._request_timeout),
            )
        except httpx.HTTPError:
            return None
        return resp.status_code, resp.headers.get("retry-after")

    def flush(self, timeout: float = 5.0) -> bool:
        """Send everything recorded before this call; True once the server acknowledged it all."""
        try:
            if not self._background or self._closed:
                return self._flush_sync(timeout)
            if not self._started:
                if self._threads_deferred():  # a uWSGI master: no worker thread to ask
                    return self._flush_sync(timeout)
                if not self._queue and not self._events.pending:
                    return True
                self._start()
            return self._events.request_flush(timeout)
        except Exception:
            return False

    def _flush_sync(self, timeout: float) -> bool:
        deadline = _monotonic() + timeout
        ev = self._events
        if not ev.lock.acquire(timeout=timeout):
            return False
        try:
            return ev.flush_now(deadline)
        finally:
            ev.lock.release()

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the threads, flush what is left within ``timeout`` and release the connection pool.

        True when everything recorded was delivered (acknowledged by the server); False when something
        could not be within ``timeout`` (the server down, slow or refusing): that is lost, and counted
        in ``stats().pending_batches``. Idempotent (a second call returns True); decisions keep
        answering from the last config afterwards but record nothing.
        """
        if self._closed:
            return True
        self._closed = True
        delivered = False
        try:
            deadline = _monotonic() + timeout
            self._stop.set()
            self._sync.interrupt()
            ev = self._events
            ev.stop.set()
            ev.wake.set()
            for t in (ev.thread, self._config_thread):
                if t is not None and t is not threading.current_thread():
                    t.join(max(0.0, deadline - _monotonic()))
            st = self._stream_thread
            if st is not None and st is not threading.current_thread():
                # Interrupted above; a daemon, so a read that ignores the interrupt cannot hold us.
                st.join(min(0.5, max(0.0, deadline - _monotonic())))
            if ev.lock.acquire(timeout=max(0.0, deadline - _monotonic())):
                try:
                    delivered = ev.flush_now(deadline)
                finally:
                    ev.release_waiters()
                    ev.lock.release()
            self._started = True
            self._queue = collections.deque(maxlen=0)  # appends become no-ops
            self._conv_cap = self._conv_soon = 0  # track() then records nothing (see Client.track)
            self._http.close()
            self._stream_http.close()
        except Exception as exc:
            self._logger.debug("banditflags: error while closing: %s", exc)
        finally:
            _lifecycle.unregister(self)
            _metrics.retire(self)
        return delivered

    def __enter__(self: _R) -> _R:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        # The parent's threads do not exist here, its locks may be held forever, and its unsent
        # events are the parent's to send. Keep the snapshot so the child answers at once.
        self._events.after_fork_in_child()
        self._sync.after_fork()
        self._pushback.after_fork()
        self._notifier.after_fork_in_child()
        self._rng.seed()  # else every worker jitters its polls and retries in lockstep
        reseed_decision_ids()  # else sibling workers forked from C mint the same decision ids
        self._init_runtime()

    def after_fork(self) -> None:
        """Re-initialise in a forked child whose server did not run Python's fork hooks.

        CPython's ``os.fork()`` (gunicorn, celery/billiard, multiprocessing) already does this through
        ``os.register_at_fork``. uWSGI forks from C: enable ``py-call-osafterfork`` or call this from a
        ``@uwsgidecorators.postfork`` function. A no-op in the process that created (or already
        re-initialised) the client, so calling it twice never drops events.
        """
        if self._pid != os.getpid() and not self._closed:
            self._after_fork_in_child()

    # -- introspection --------------------------------------------------------------------------

    def stats(self) -> ClientStats:
        """A snapshot of the client's counters (see :class:`ClientStats`)."""
        st = self._state
        ev = self._events
        return ClientStats(
            decisions_queued=len(self._queue),
            decisions_dropped=ev.dropped,
            duplicates=self._duplicates_so_far() + ev.duplicates,
            unknown_flags=ev.unknown_flags,
            rewards_rejected=self._rejected,
            batches_sent=ev.batches_sent,
            batches_failed=ev.batches_failed,
            batches_dropped=ev.batches_dropped,
            pending_batches=len(ev.pending),
            config_revision=st.revision,
            config_age_seconds=None if st.confirmed_at is None else _monotonic() - st.confirmed_at,
            config_errors=self._sync.errors,
            last_error=ev.last_error or self._sync.last_error,
            stream_connected=self._sync.stream_connected,
            stream_connects=self._sync.stream_connects,
            stream_events=self._sync.stream_events,
            auth_refusals=self._pushback.auth_refusals,
            throttled=self._pushback.throttled,
        )

    def _duplicates_so_far(self) -> int:
        with self._counter_lock:  # reading is a next() too: count this reader's own calls
            n = next(self._duplicates) - self._duplicate_reads
            self._duplicate_reads += 1
        return n

    def __repr__(self) -> str:
        return f"<banditflags.Client {self._base_url!r} revision={self._state.revision}>"
