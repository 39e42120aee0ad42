"""Config synchronisation: ``GET /v1/config`` with ETags, jittered polling and capped backoff.

:class:`ConfigSync` holds the protocol logic and no thread of its own; the client runs
:meth:`ConfigSync.run` on a daemon thread (background mode) or calls :meth:`ConfigSync.fetch`
directly (``Client.refresh``, serverless mode). A payload that fails validation is counted and logged
once; it never replaces the last good snapshot.

>>> import random
>>> rng = random.Random(1)
>>> [round(backoff_delay(n, 1.0, 60.0, rng), 2) for n in (1, 2, 3, 10)]
[0.57, 1.85, 3.53, 37.65]
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Protocol

import httpx

from ._config import ConfigSnapshot, parse_config
from ._exceptions import ConfigError

__all__ = ["ConfigSync", "Waiter", "backoff_delay", "jittered"]

MAX_BACKOFF = 60.0


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
    ) -> None:
        self.url = url
        self._auth = f"Bearer {sdk_key}"  # never logged
        self.refresh_interval = refresh_interval
        self._publish = publish
        self._confirm = confirm
        self._logger = logger
        self._rng = rng
        self.max_backoff = max_backoff
        self.etag: str | None = None
        self.failures = 0  # consecutive, drives the backoff
        self.errors = 0  # all failed fetches (network, HTTP status, bad payload)
        self.bad_payloads = 0
        self.last_error: str | None = None
        self._last_logged: str | None = None

    def fetch(self, http: httpx.Client, timeout: float) -> bool:
        """One conditional GET. True when the server answered with a valid config or a 304."""
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        try:
            resp = http.get(self.url, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            return self._failed(f"GET /v1/config failed: {type(exc).__name__}: {exc}")
        if resp.status_code == 304 and self.etag is not None:
            self._confirm()
            return True
        if resp.status_code != 200:
            return self._failed(f"GET /v1/config answered HTTP {resp.status_code}")
        try:
            snapshot = parse_config(resp.json())
        except (ValueError, ConfigError) as exc:  # json errors are ValueErrors
            self.bad_payloads += 1
            return self._failed(f"rejected config payload (kept the last good one): {exc}")
        self._publish(snapshot)
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
        return backoff_delay(self.failures, self.refresh_interval, self.max_backoff, self._rng)

    def run(
        self,
        get_http: Callable[[], httpx.Client],
        stop: Waiter,
        timeout: float,
        on_result: Callable[[bool], None] | None = None,
    ) -> None:
        """Poll until ``stop`` is set, calling ``on_result(ok)`` after each fetch. Never raises: this
        is the body of a daemon thread."""
        while not stop.is_set():
            try:
                ok = self.fetch(get_http(), timeout)
                if on_result is not None:
                    on_result(ok)
            except Exception as exc:  # defensive: a bug here must not kill the thread
                ok = self._failed(f"config sync error: {type(exc).__name__}: {exc}")
            if stop.wait(self.next_delay(ok)):
                return
