"""Config synchronisation: the ``/v1/stream`` push stream, and ``GET /v1/config`` with ETags, jittered
polling and capped backoff as the fallback.

:class:`ConfigSync` holds the protocol logic and no thread of its own. In background mode the client
runs :meth:`ConfigSync.run_stream` on one daemon thread (server-sent events: every ``config`` event
carries the whole config, so a change is applied without another request) and :meth:`ConfigSync.run`
on another, which polls only while the stream is down: at start, when the server has no stream (404),
when a proxy refuses it, or while it reconnects with backoff. ``Client.refresh`` and serverless mode
call :meth:`ConfigSync.fetch` directly. A payload that fails validation is counted and logged once; it
never replaces the last good snapshot.

The server can push back (:class:`Pushback`, shared by the poller, the stream and the event sender):
a ``Retry-After`` on a 429 or 503 (seconds or an HTTP date, capped at ``MAX_RETRY_AFTER``) is honoured,
so the next request to that endpoint waits at least that long; a 401 or 403 (the sdk key refused) is
said once in words, counted, and retried only every few minutes (``AUTH_BACKOFF`` doubling to
``AUTH_MAX_BACKOFF``, jittered): retrying every few seconds would not make the key work.

>>> import random
>>> rng = random.Random(1)
>>> [round(backoff_delay(n, 1.0, 60.0, rng), 2) for n in (1, 2, 3, 10)]
[0.57, 1.85, 3.53, 37.65]
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Protocol

import httpx

from ._config import ConfigSnapshot, parse_config
from ._exceptions import ConfigError
from ._sse import parse_sse, split_lines

__all__ = ["ConfigSync", "Pushback", "Waiter", "backoff_delay", "jittered", "retry_after_seconds"]

MAX_BACKOFF = 60.0
#: Stream reconnection: 1 s doubling to 30 s (jittered); 5 min when the server has no stream at all.
STREAM_BACKOFF = 1.0
STREAM_MAX_BACKOFF = 30.0
STREAM_UNSUPPORTED_BACKOFF = 300.0
#: With no byte for this long the stream is taken as dead (the server sends a keep-alive every 15 s).
STREAM_READ_TIMEOUT = 60.0
#: A connection that lived this long was healthy: its drop restarts the backoff from the beginning.
STREAM_HEALTHY_AFTER = 30.0
#: The longest ``Retry-After`` honoured: a bigger one (or a date further ahead) waits this long.
MAX_RETRY_AFTER = 300.0
#: After a 401/403 (the sdk key refused): wait 1 min, doubling to 5 min, times a jitter in [0.5, 1).
AUTH_BACKOFF = 60.0
AUTH_MAX_BACKOFF = 300.0
#: Answers whose ``Retry-After`` is honoured.
RETRY_AFTER_STATUSES = frozenset({429, 503})
AUTH_STATUSES = frozenset({401, 403})


class Waiter(Protocol):
    """What the poll loop sleeps on: a ``threading.Event`` (tests pass a fake clock)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """Delay after the ``failures``-th consecutive failure: ``base * 2**(failures-1)``, capped, times
    a random factor in [0.5, 1) so that many clients that failed together do not retry together."""
    raw = min(cap, base * (2.0 ** min(failures - 1, 30)))
    return raw * rng.uniform(0.5, 1.0)


def jittered(interval: float, rng: random.Random) -> float:
    """A poll interval with ±10% jitter (spreads the load of a fleet started at the same moment)."""
    return interval * rng.uniform(0.9, 1.1)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: delta-seconds or an HTTP date (against ``now``, a
    ``time.time()`` value), at most ``MAX_RETRY_AFTER``; None when absent or unreadable.

    >>> retry_after_seconds("120"), retry_after_seconds("Thu, 01 Jan 1970 00:01:00 GMT", 0.0)
    (120.0, 60.0)
    >>> retry_after_seconds("soon") is None, retry_after_seconds("99999")
    (True, 300.0)
    """
    if value is None:
        return None
    v = value.strip()
    if not v:
        return None
    if v.isascii() and v.isdigit():
        return min(float(int(v[:12])), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    ahead = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, ahead), MAX_RETRY_AFTER)


class Pushback:
    """What the server said about our pace, shared by the poller, the stream and the event sender.

    ``refused()`` counts a 401/403, logs it once in words (until the key is accepted again) and returns
    the long jittered wait before that endpoint's next request; ``throttled_for()`` reads a
    ``Retry-After`` and returns the wait it asks for (times a jitter in [1, 1.1): never shorter).
    Not on the decision path: the lock costs nothing there.

    >>> import logging, random
    >>> p = Pushback(logging.getLogger("doctest"), random.Random(0))
    >>> 30.0 <= p.refused(401, "GET /v1/config") < 60.0, p.auth_refusals
    (True, 1)
    >>> 2.0 <= p.throttled_for("2") < 2.2, p.throttled, p.throttled_for(None)
    (True, 1, None)
    """

    def __init__(self, logger: logging.Logger, rng: random.Random) -> None:
        self._logger = logger
        self._rng = rng
        self.auth_refusals = 0  # 401/403 answers, all endpoints
        self.throttled = 0  # answers with a Retry-After that was honoured
        self._consecutive = 0  # refusals since the key last worked: drives the backoff
        self._logged = False
        self.after_fork()

    def after_fork(self) -> None:
        """A new lock in a forked child (one held by a parent's thread would never be released)."""
        self._lock = threading.Lock()

    def refused(self, status: int, what: str) -> float:
        """Count a refusal of the sdk key; the seconds to wait before ``what``'s next request."""
        with self._lock:
            self.auth_refusals += 1
            self._consecutive += 1
            n = self._consecutive
            first = not self._logged
            self._logged = True
        if first:
            self._logger.warning(
                "banditflags: the server refused the sdk key (HTTP %d on %s): check BANDITFLAGS_SDK_KEY "
                "(or the sdk_key given to Client). Decisions answer from the last good config (or the "
                "defaults), events are kept, and the client asks again every few minutes",
                status,
                what,
            )
        return backoff_delay(n, AUTH_BACKOFF, AUTH_MAX_BACKOFF, self._rng)

    def accepted(self) -> None:
        """The server accepted the key (any 2xx/304): the refusal episode, if any, is over."""
        if not self._consecutive:  # the common case, without the lock
            return
        with self._lock:
            self._consecutive = 0
            logged, self._logged = self._logged, False
        if logged:
            self._logger.info("banditflags: the server accepts the sdk key again")

    def throttled_for(self, header: str | None) -> float | None:
        """The wait a ``Retry-After`` header asks for (jittered up, never down), counted; None without one."""
        seconds = retry_after_seconds(header)
        if seconds is None:
            return None
        with self._lock:
            self.throttled += 1
        return seconds * self._rng.uniform(1.0, 1.1)


class ConfigSync:
    """Fetch and validate the config; remember the ETag; compute the next poll delay.

    ``publish(snapshot)`` is called with every new valid snapshot, ``confirm()`` on every 304.

    >>> import httpx, random, logging
    >>> def handler(request):
    ...     return httpx.Response(200, json={"schema": 1, "revision": 3, "flags": []},
    ...                           headers={"ETag": '"3"'})
    >>> got = []
    >>> sync = ConfigSync("http://bf/v1/config", "key", 5.0, got.append, lambda: None,
    ...                   logging.getLogger("doctest"), random.Random(0))
    >>> sync.fetch(httpx.Client(transport=httpx.MockTransport(handler)), 1.0)
    True
    >>> got[0].revision, sync.etag
    (3, '"3"')
    """

    def __init__(
        self,
        url: str,
        sdk_key: str,
        refresh_interval: float,
        publish: Callable[[ConfigSnapshot], None],
        confirm: Callable[[], None],
        logger: logging.Logger,
        rng: random.Random,
        max_backoff: float = MAX_BACKOFF,
        stream_url: str | None = None,
        pushback: Pushback | None = None,
    ) -> None:
        self.url = url
        self.stream_url = stream_url
        self._auth = f"Bearer {sdk_key}"  # never logged
        self.refresh_interval = refresh_interval
        self._publish = publish
        self._confirm = confirm
        self._logger = logger
        self._rng = rng
        self.max_backoff = max_backoff
        self.pushback = pushback if pushback is not None else Pushback(logger, rng)
        #: monotonic times before which the server asked us not to come back (Retry-After, 401/403)
        self.hold_until = 0.0
        self.stream_hold_until = 0.0
        self.etag: str | None = None
        self.failures = 0  # consecutive, drives the backoff
        self.errors = 0  # all failed fetches (network, HTTP status, bad payload)
        self.bad_payloads = 0
        self.last_error: str | None = None
        self._last_logged: str | None = None
        # Stream state (read by stats(); written by the stream thread).
        self.stream_connected = False
        self.stream_connects = 0
        self.stream_events = 0  # config events applied from the stream
        self.stream_errors = 0
        self._stream_logged: str | None = None
        self._init_runtime()

    def _init_runtime(self) -> None:
        # Per-process: rebuilt after fork() (a lock held by a parent thread would never be released).
        self._lock = threading.Lock()  # orders publishes and confirms from the two threads
        self._generation = 0  # bumped by every publish
        self.revision: int | None = None
        self._wake = threading.Event()  # wakes the poll loop when the stream drops, or at close
        self._response: httpx.Response | None = None
        self.stream_connected = False

    def after_fork(self) -> None:
        """Reset the per-process state in a forked child (the parent's threads do not exist there)."""
        revision = self.revision
        self._init_runtime()
        self.revision = revision

    def interrupt(self) -> None:
        """Wake the poll loop and end the open stream (called by ``close()`` after setting stop)."""
        self._wake.set()
        resp = self._response
        if resp is None:
            return
        # A read blocked in another thread wakes up only when its socket is shut down (closing the
        # response or the pool does not wake it). Best effort: the stream thread is a daemon anyway.
        with contextlib.suppress(Exception):
            stream = resp.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
                return
        with contextlib.suppress(Exception):
            resp.close()

    def _accept(self, snapshot: ConfigSnapshot, generation: int) -> bool:
        """Publish ``snapshot`` unless it lost a race: a response to a request made before the last
        publish, carrying an older revision, is stale. (A response to a request made after it is the
        server's word, even with a lower revision: the server's database may have been replaced.)"""
        with self._lock:
            if (
                generation != self._generation
                and self.revision is not None
                and snapshot.revision is not None
                and snapshot.revision < self.revision
            ):
                return False
            self._generation += 1
            self.revision = snapshot.revision
            self._publish(snapshot)
            return True

    def _confirmed(self) -> None:
        with self._lock:
            self._confirm()

    def fetch(self, http: httpx.Client, timeout: float) -> bool:
        """One conditional GET. True when the server answered with a valid config or a 304.

        False without a request while the server's last ``Retry-After`` (or a refused key's backoff)
        lasts: the server asked us to wait, ``refresh()`` included.
        """
        if time.monotonic() < self.hold_until:
            return False
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        generation = self._generation
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        try:
            resp = http.get(self.url, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            return self._failed(f"GET /v1/config failed: {type(exc).__name__}: {exc}")
        status = resp.status_code
        if status in AUTH_STATUSES:
            self.hold_until = time.monotonic() + self.pushback.refused(status, "GET /v1/config")
            self.errors += 1  # said once, in words, by the pushback: not again as an HTTP error
            self.last_error = f"GET /v1/config answered HTTP {status}: the sdk key was refused"
            return False
        if status != 200 and status != 304:
            wait = (
                self.pushback.throttled_for(resp.headers.get("retry-after"))
                if status in RETRY_AFTER_STATUSES
                else None
            )
            if wait is not None:
                self.hold_until = time.monotonic() + wait
            return self._failed(f"GET /v1/config answered HTTP {status}")
        self.pushback.accepted()
        if status == 304 and self.etag is not None:
            self._confirmed()
            return True
        if status != 200:
            return self._failed(f"GET /v1/config answered HTTP {status}")
        try:
            snapshot = parse_config(resp.json())
        except (ValueError, ConfigError) as exc:  # json errors are ValueErrors
            self.bad_payloads += 1
            return self._failed(f"rejected config payload (kept the last good one): {exc}")
        if self._accept(snapshot, generation):
            self.etag = resp.headers.get("etag")
        return True

    def _failed(self, message: str) -> bool:
        self.errors += 1
        self.last_error = message
        # Once per distinct problem: a server that stays down must not flood the application's logs.
        if message != self._last_logged:
            self._last_logged = message
            self._logger.warning("banditflags: %s", message)
        return False

    def next_delay(self, ok: bool) -> float:
        """Seconds until the next poll, after a fetch that succeeded (``ok``) or failed."""
        if ok:
            self.failures = 0
            self._last_logged = None
            return jittered(self.refresh_interval, self._rng)
        self.failures += 1
        delay = backoff_delay(self.failures, self.refresh_interval, self.max_backoff, self._rng)
        return max(delay, self.hold_until - time.monotonic())

    def run(
        self,
        get_http: Callable[[], httpx.Client],
        stop: Waiter,
        timeout: float,
        on_result: Callable[[bool], None] | None = None,
    ) -> None:
        """Poll until ``stop`` is set, calling ``on_result(ok)`` after each fetch and pausing while the
        stream is connected. Never raises: this is the body of a daemon thread."""
        while not stop.is_set():
            if self.stream_connected:
                # The stream delivers changes; wake when it drops (poll at once) or at close.
                self._wake.wait(self.refresh_interval)
                self._wake.clear()
                continue
            try:
                ok = self.fetch(get_http(), timeout)
                if on_result is not None:
                    on_result(ok)
            except Exception as exc:  # defensive: a bug here must not kill the thread
                ok = self._failed(f"config sync error: {type(exc).__name__}: {exc}")
            if stop.wait(self.next_delay(ok)):
                return

    # -- the stream -----------------------------------------------------------------------------------

    def run_stream(self, get_http: Callable[[], httpx.Client], stop: Waiter, timeout: float) -> None:
        """Hold ``GET /v1/stream`` open and apply its events, reconnecting with backoff until ``stop``.
        Never raises: this is the body of a daemon thread."""
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            unsupported = False
            try:
                unsupported = self._stream_once(get_http(), stop, timeout)
            except Exception as exc:  # network errors, a server that died, a bug: reconnect later
                if stop.is_set():
                    return  # interrupted by close(): not a failure
                self._stream_failed(f"stream: {type(exc).__name__}: {exc}")
            finally:
                self._response = None
                if self.stream_connected:
                    self.stream_connected = False
                    self._wake.set()  # the poll loop fetches at once: nothing is missed meanwhile
            if stop.is_set():
                return
            failures = 1 if time.monotonic() - started > STREAM_HEALTHY_AFTER else failures + 1
            cap = STREAM_UNSUPPORTED_BACKOFF if unsupported else STREAM_MAX_BACKOFF
            base = cap if unsupported else STREAM_BACKOFF
            delay = max(
                backoff_delay(failures, base, cap, self._rng), self.stream_hold_until - time.monotonic()
            )
            if stop.wait(delay):
                return

    def _stream_once(self, http: httpx.Client, stop: Waiter, timeout: float) -> bool:
        """One connection; returns True when the server has no stream endpoint (404, 405, 501)."""
        assert self.stream_url is not None
        headers = {"Authorization": self._auth, "Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.revision is not None:
            headers["Last-Event-ID"] = str(self.revision)
        limits = httpx.Timeout(timeout, read=STREAM_READ_TIMEOUT)
        with http.stream("GET", self.stream_url, headers=headers, timeout=limits) as resp:
            self._response = resp
            if stop.is_set():
                return False
            status = resp.status_code
            if status in AUTH_STATUSES:
                self.stream_hold_until = time.monotonic() + self.pushback.refused(status, "GET /v1/stream")
                self.stream_errors += 1  # said once, in words, by the pushback
                self.last_error = f"GET /v1/stream answered HTTP {status}: the sdk key was refused"
                return False
            if status != 200:
                if status in RETRY_AFTER_STATUSES:
                    wait = self.pushback.throttled_for(resp.headers.get("retry-after"))
                    if wait is not None:
                        self.stream_hold_until = time.monotonic() + wait
                self._stream_failed(f"GET /v1/stream answered HTTP {status}; polling /v1/config")
                return status in (404, 405, 501)
            self.pushback.accepted()
            self.stream_connected = True
            self.stream_connects += 1
            if self._stream_logged is not None:
                self._stream_logged = None
                self._logger.info("banditflags: config stream connected again")
            generation = self._generation
            for event in parse_sse(split_lines(resp.iter_text())):
                if stop.is_set():
                    return False
                if event.type == "comment":
                    # A keep-alive or "up to date": the connection is alive and the config current.
                    self._confirmed()
                elif event.type == "config":
                    generation = self._apply_event(event.data, generation)
        return False

    def _apply_event(self, data: str, generation: int) -> int:
        try:
            snapshot = parse_config(json.loads(data))
        except (ValueError, ConfigError) as exc:
            self.bad_payloads += 1
            self._failed(f"rejected config event (kept the last good one): {exc}")
            return generation
        if self._accept(snapshot, generation):
            self.stream_events += 1
            if snapshot.revision is not None:
                self.etag = f'"{snapshot.revision}"'
        # Later events of this connection are newer than this one, whatever the poller did meanwhile.
        return self._generation

    def _stream_failed(self, message: str) -> None:
        self.stream_errors += 1
        self.last_error = message
        # Logged once until the stream connects again: the client keeps working by polling.
        if self._stream_logged is None:
            self._stream_logged = message
            self._logger.warning("banditflags: %s", message)
