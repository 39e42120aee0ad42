"""The :class:`Client`: local decisions over a cached config, background sync and delivery."""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, overload

import httpx
import mmh3

from . import _lifecycle, _metrics
from ._config import ConfigSnapshot, FlagSnapshot, parse_config
from ._events import EventProcessor
from ._inputs import reward_item, unit_key
from ._models import ClientStats, Decision, ErrorType, Reason
from ._notify import Listener, Notifier
from ._sync import ConfigSync
from ._telemetry import ContextIdMode, Mode, Telemetry, trace_module
from ._version import __version__

__all__ = ["Client"]


def _origin(base_url: str) -> str:
    """``scheme://host[:port]`` of the server: the default ``feature_flag.set.id`` (no path, no userinfo)."""
    try:
        u = httpx.URL(base_url)
        host = f"[{u.host}]" if ":" in u.host else u.host
        return f"{u.scheme}://{host}" + (f":{u.port}" if u.port is not None else "")
    except Exception:
        return ""


_hash = mmh3.hash
_monotonic = time.monotonic


class _AlwaysCheck:
    """Stands in for ``opentelemetry.trace`` if a future API drops its private ``_TRACER_PROVIDER``:
    every decision then asks for the current span (the public, slower check) instead of failing."""

    _TRACER_PROVIDER: object = object()


def _provider_probe(module: Any) -> Any:
    """What the hot path reads ``_TRACER_PROVIDER`` from: the API module (None there until a real
    tracer provider is installed: one global read skips telemetry), or :class:`_AlwaysCheck`."""
    return module if hasattr(module, "_TRACER_PROVIDER") else _AlwaysCheck()


_otel = _provider_probe(trace_module)
_SDK = f"banditflags-python/{__version__}"


def _rebadged(f: FlagSnapshot, arm: int, reason: Reason) -> Decision:
    return Decision(f.key, f.keys[arm], f.values[arm], reason, f.version, arm, f.propensities[arm])


@dataclass(frozen=True, slots=True)
class _State:
    """What the hot path reads, swapped as one attribute: flags, and where they came from."""

    flags: dict[str, FlagSnapshot]
    revision: int | None
    cached: bool  # from bootstrap, no server answer yet
    stale_at: float  # monotonic time after which decisions are `stale`
    confirmed_at: float | None  # monotonic time of the last 200/304, None before any


_EMPTY_STATE = _State({}, None, False, math.inf, None)


class Client:
    """A banditflags client: answers ``variant()`` locally in about a microsecond.

    The constructor does no I/O on the network. Background threads (config sync, event delivery)
    start on the first ``variant``/``decide``/``track`` call, on ``start()`` or ``wait_until_ready()``.
    With ``background=False`` (serverless) no thread ever runs: call ``refresh()`` to fetch the config
    and ``flush()`` to send, both synchronous with a deadline.

    ``variant``, ``decide`` and ``track`` never raise and never block; see :class:`Decision` and
    :class:`Reason` for what a decision says when something is wrong.

    OpenTelemetry (docs/telemetry.md): ``telemetry="span"`` (default) adds a ``feature_flag.evaluation``
    child span to decisions made inside a recording span, ``"event"`` emits the log-based event
    instead, ``"off"`` nothing; ``tracer_provider`` / ``logger_provider`` / ``meter_provider``
    default to the global ones. ``telemetry_context_id`` is ``"hashed"`` (keyed with
    ``telemetry_context_id_key``, by default the sdk key), ``"raw"`` or ``"none"``;
    ``flag_set_id`` (``feature_flag.set.id``) defaults to the server's origin.

    >>> import httpx
    >>> config = {"schema": 1, "revision": 1, "flags": [{
    ...     "key": "checkout-button", "salt": "3f0c", "state": "running", "exploration": 1.0,
    ...     "version": 1, "variants": [{"key": "blue", "value": "#00f"}, {"key": "green", "value": "#0f0"}],
    ...     "control": "blue", "weights": [0.5, 0.5], "table": [[0, 5000], [1, 5000]],
    ...     "objective": {"reward": "binary", "unit": "decision"}}]}
    >>> def server(request):
    ...     if request.url.path == "/v1/config":
    ...         return httpx.Response(200, json=config, headers={"ETag": '"1"'})
    ...     return httpx.Response(202, json={})
    >>> with Client("http://bf", "bf_sdk_x", transport=httpx.MockTransport(server)) as client:
    ...     client.wait_until_ready(5.0)
    ...     decision = client.decide("checkout-button", "user-42")
    ...     decision.variant in ("blue", "green"), decision.reason
    ...     client.track(decision, reward=1)
    ...     client.variant("no-such-flag", "user-42", "off")
    ...     client.flush(5.0)
    True
    (True, <Reason.SPLIT: 'split'>)
    True
    'off'
    True
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
        self._transport = transport
        self._logger = logger or logging.getLogger("banditflags")
        self._rng = random.Random()
        self._closed = False
        self._state = _EMPTY_STATE
        self._flags: dict[str, FlagSnapshot] = _EMPTY_STATE.flags
        self._rejected = 0
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
        self._sync = ConfigSync(
            f"{self._base_url}/v1/config",
            sdk_key,
            float(refresh_interval),
            self._publish,
            self._confirm,
            self._logger,
            self._rng,
            stream_url=f"{self._base_url}/v1/stream" if self._streaming else None,
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
        )
        self._init_runtime()
        if bootstrap is not None:
            self._load_bootstrap(bootstrap)
        _lifecycle.register(self)
        if telemetry != "off":
            _metrics.register(self, meter_provider)

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
        self._note_dropped = self._events.note_dropped
        # The hot path checks this one bool; serverless and closed clients never start threads.
        self._started = self._closed or not self._background

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
        self._state = state
        self._flags = state.flags

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

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on config lifecycle events (:class:`ConfigEvent`: ``ready``,
        ``changed``, ``stale``). It runs on the sync thread (or in ``refresh()``), never on a decision;
        keep it short. Staleness is noticed after a failed fetch, so at the poll interval's pace."""
        self._notifier.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._notifier.remove(listener)

    # -- decisions (hot path: no locks, no I/O, no logging, nothing raised) ----------------------

    @overload
    def variant(self, flag: str, unit_id: str | int | None, default: str) -> str: ...

    @overload
    def variant(self, flag: str, unit_id: str | int | None, default: None = None) -> str | None: ...

    def variant(self, flag: str, unit_id: str | int | None, default: str | None = None) -> str | None:
        """The variant key ``unit_id`` gets for ``flag``, or ``default`` (see ``decide`` for when)."""
        try:
            if not self._started:  # lazy start, whatever the outcome: a not-ready client must sync
                self._start()
            # One global read while no tracer provider is installed (see _telemetry).
            if (_otel._TRACER_PROVIDER is not None or self._tel_forced) and self._tel.active():
                d = self._traced_decide(flag, unit_id, default)
                return d.variant if d.variant is not None else default
            f = self._flags[flag]  # subscript beats .get(); a missing flag is the rare path
            if unit_id.__class__ is not str or not unit_id:
                unit_id = unit_key(unit_id)
                if unit_id is None:
                    self._note(
                        flag, None if default is not None else f.control_key, "error", "targeting_key_missing"
                    )
                    return default if default is not None else f.control_key
            if f.killed:
                self._note(flag, f.control_key, "disabled", "")
                return f.control_key
            # The same steps as decide(), inlined on purpose: a shared helper call costs ~15% here.
            arm = f.table[(_hash(f.prefix + unit_id, 0, False) * 10_000) >> 32]
            q = self._queue
            if len(q) < self._max_queue:
                q.append((f.exposure_keys[arm], unit_id))
            else:
                self._note_dropped()
            return f.keys[arm]
        except Exception:  # KeyError (unknown flag) included: never raise into the caller
            self._note(flag, None, "error", "")
            return default

    def _note(self, flag: object, variant: str | None, reason: str, error_type: str) -> None:
        # A decision that records no exposure (error, killed flag), counted by the worker for the
        # decisions metric. Off the normal path; must never raise.
        try:
            q = self._queue
            if len(q) < self._max_queue:
                q.append(("d", flag, variant, reason, error_type))
        except Exception:
            pass

    def decide(self, flag: str, unit_id: str | int | None, default: Any = None) -> Decision:
        """Bucket ``unit_id`` into ``flag`` and say how and why.

        Reasons: ``split`` (normal), ``stale`` (config not confirmed for ``stale_after`` seconds),
        ``cached`` (bootstrap config, no server answer yet), ``disabled`` (killed flag: control arm,
        no exposure recorded), ``error`` with ``error_type`` ``flag_not_found`` / ``provider_not_ready``
        (caller's default), ``targeting_key_missing`` (caller's default, else the control arm) or
        ``general`` (unexpected failure, caller's default).

        Inside a recording OpenTelemetry span the decision gets its own child span (see
        ``telemetry=``) and the returned Decision carries that span's ``trace_id`` and ``span_id``.
        """
        if (_otel._TRACER_PROVIDER is not None or self._tel_forced) and self._tel.active():
            return self._traced_decide(flag, unit_id, default)
        return self._decide(flag, unit_id, default)

    def _traced_decide(self, flag: str, unit_id: str | int | None, default: Any) -> Decision:
        d = self._decide(flag, unit_id, default)
        uid = unit_id if unit_id.__class__ is str else unit_key(unit_id)
        return self._tel.decision(d, self._flags.get(d.flag), uid)

    def _decide(self, flag: str, unit_id: str | int | None, default: Any) -> Decision:
        try:
            if not self._started:
                self._start()
            st = self._state
            f = st.flags.get(flag)
            if f is None:
                if st.revision is None:
                    self._note(flag, None, "error", "provider_not_ready")
                    return Decision(
                        flag,
                        None,
                        default,
                        Reason.ERROR,
                        error_type=ErrorType.PROVIDER_NOT_READY,
                        error_message="no config yet",
                    )
                self._note(flag, None, "error", "flag_not_found")
                return Decision(
                    flag,
                    None,
                    default,
                    Reason.ERROR,
                    error_type=ErrorType.FLAG_NOT_FOUND,
                    error_message=f"flag {flag!r} not in config revision {st.revision}",
                )
            if unit_id.__class__ is not str or not unit_id:
                unit_id = unit_key(unit_id)
                if unit_id is None:
                    d = self._missing_key(f, default)
                    self._note(f.key, d.variant, "error", "targeting_key_missing")
                    return d
            if f.killed:
                self._note(f.key, f.control_key, "disabled", "")
                return f.disabled_decision
            arm = f.table[(_hash(f.prefix + unit_id, 0, False) * 10_000) >> 32]
            q = self._queue
            if len(q) < self._max_queue:
                q.append((f.exposure_keys[arm], unit_id))
            else:
                self._note_dropped()
            if st.cached:
                return _rebadged(f, arm, Reason.CACHED)
            if _monotonic() >= st.stale_at:
                return _rebadged(f, arm, Reason.STALE)
            return f.decisions[arm]  # prebuilt per arm: no allocation on the normal path
        except Exception as exc:
            self._note(flag, None, "error", "general")
            return Decision(
                str(flag),
                None,
                default,
                Reason.ERROR,
                error_type=ErrorType.GENERAL,
                error_message=f"{type(exc).__name__}: {exc}",
            )

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

    @staticmethod
    def _missing_key(f: FlagSnapshot, default: Any) -> Decision:
        msg = "unit_id must be a non-empty str or an int"
        if default is not None:
            return Decision(
                f.key,
                None,
                default,
                Reason.ERROR,
                f.version,
                error_type=ErrorType.TARGETING_KEY_MISSING,
                error_message=msg,
            )
        c = f.control
        return Decision(
            f.key,
            f.control_key,
            f.values[c],
            Reason.ERROR,
            f.version,
            c,
            f.propensities[c],
            ErrorType.TARGETING_KEY_MISSING,
            msg,
        )

    # -- rewards --------------------------------------------------------------------------------

    def track(
        self,
        flag_or_decision: str | Decision,
        unit_id: str | int | None = None,
        reward: float = 1.0,
        metric: str | None = None,
    ) -> bool:
        """Record a reward. Never raises; returns False (and counts it) when the reward is rejected.

        ``flag_or_decision`` is a :class:`Decision`, a decision token (``decision.token``, possibly
        from another process) or a flag key with ``unit_id``: then the reward goes to the arm the unit
        was served recently (within the flag's credit window), else to the arm it buckets into now.
        Binary flags accept rewards 0 and 1 only. ``metric`` names a guardrail metric of the flag
        (e.g. ``"errors"``, ``"latency_ms"``; any finite value) instead of the objective.
        """
        try:
            if not self._started:
                self._start()
            item = reward_item(self._flags, flag_or_decision, unit_id, reward, metric)
            if item is None:
                return self._reject()
            q = self._queue
            if len(q) >= self._max_queue:
                self._note_dropped()
                return False
            q.append(item)
            if _otel._TRACER_PROVIDER is not None or self._tel_forced:
                self._tel.reward(self._flags, flag_or_decision, item[-1])
            return True
        except Exception:
            return self._reject()

    def _reject(self) -> bool:
        with self._counter_lock:  # the rare path: exact counts under concurrent track() calls
            self._rejected += 1
        if not self._rejected_logged:
            self._rejected_logged = True
            self._logger.debug("banditflags: track() rejected a reward (bad value, unknown flag or unit)")
        return False

    # -- lifecycle ------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._started:
                return
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

    def _post_events(self, body: dict[str, Any], timeout: float) -> int | None:
        try:
            resp = self._http.post(
                f"{self._base_url}/v1/events",
                json=body,
                headers={"Authorization": f"Bearer {self._sdk_key}"},
                timeout=min(timeout, self._request_timeout),
            )
        except httpx.HTTPError:
            return None
        return resp.status_code

    def flush(self, timeout: float = 5.0) -> bool:
        """Send everything recorded before this call; True once the server acknowledged it all."""
        try:
            if not self._background or self._closed:
                return self._flush_sync(timeout)
            if not self._started:
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

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads, flush what is left within ``timeout`` and release the connection pool.

        Idempotent; decisions keep answering from the last config afterwards but record nothing.
        """
        if self._closed:
            return
        self._closed = True
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
                    ev.flush_now(deadline)
                finally:
                    ev.release_waiters()
                    ev.lock.release()
            self._started = True
            self._queue = collections.deque(maxlen=0)  # appends become no-ops
            self._http.close()
            self._stream_http.close()
        except Exception as exc:
            self._logger.debug("banditflags: error while closing: %s", exc)
        finally:
            _lifecycle.unregister(self)
            _metrics.retire(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _after_fork_in_child(self) -> None:
        # The parent's threads do not exist here, its locks may be held forever, and its unsent
        # events are the parent's to send. Keep the snapshot so the child answers at once.
        self._events.after_fork_in_child()
        self._sync.after_fork()
        self._notifier.after_fork_in_child()
        self._rng.seed()  # else every worker jitters its polls and retries in lockstep
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
        )

    def __repr__(self) -> str:
        return f"<banditflags.Client {self._base_url!r} revision={self._state.revision}>"
