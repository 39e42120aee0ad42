"""Serverless handlers (AWS Lambda and any other callable): no thread, bounded refresh and flush.

A function container is frozen between invocations: a background thread would stop mid-request and
a buffer flushed "later" may never be sent. :class:`Serverless` therefore owns a
``Client(background=False)`` (no thread at all) and wraps each invocation:

1. **start**: if the configuration is older than ``ttl`` seconds (or there is none yet), fetch it with
   a short ``refresh_timeout``; if the server is slow or down, the cached snapshot answers (a failed
   refresh is retried after ``min(ttl, retry_after)`` seconds, so an outage costs one short timeout
   per ``retry_after``, not one per invocation).
2. **the handler runs**; ``variant()``/``decide()`` only tick in-memory counters, ``track()`` appends
   to the in-memory buffer.
3. **end** (also when the handler raises): flush synchronously within a deadline: for Lambda,
   ``context.get_remaining_time_in_millis()`` minus ``margin``, capped at ``flush_timeout``. Whatever
   is not acknowledged by then (a slow server, a deadline already spent) stays in the buffer, with its
   ``batch_id``, and goes out at the end of the next invocation of the same warm container; the
   server counts a retried batch once. Nothing is lost between invocations of a warm container.

A cold start can answer before any network call from a bootstrap configuration: ``bootstrap=`` (a
mapping or a JSON file path) or the ``BANDITFLAGS_BOOTSTRAP`` environment variable (JSON text, or a
path to a JSON file), e.g. a ``GET /v1/config`` body saved at deploy time. Decisions from it carry the
reason ``cached`` until the server answers.

>>> import httpx, json
>>> config = {"schema": 1, "revision": 1, "flags": [{
...     "key": "checkout-button", "salt": "3f0c", "state": "running", "exploration": 1.0,
...     "version": 1, "variants": [{"key": "blue", "value": "#00f"}, {"key": "green", "value": "#0f0"}],
...     "control": "blue", "weights": [0.5, 0.5], "table": [[0, 5000], [1, 5000]],
...     "objective": {"reward": "binary", "unit": "decision"}}]}
>>> posted = []
>>> def server(request):
...     if request.url.path == "/v1/config":
...         return httpx.Response(200, json=config, headers={"ETag": '"1"'})
...     posted.append(json.loads(request.content))
...     return httpx.Response(202, json={})
>>> flags = Serverless(base_url="http://bf", sdk_key="bf_sdk_x", transport=httpx.MockTransport(server))
>>> @flags.lambda_handler
... def handler(event, context):
...     return flags.client.variant("checkout-button", event["user"], "blue")
>>> class Context:                      # what AWS Lambda passes
...     def get_remaining_time_in_millis(self): return 3000
>>> handler({"user": "u-1"}, Context()) in ("blue", "green")
True
>>> sum(row["count"] for row in posted[0]["exposures"]), flags.last_flush_ok
(1, True)
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar, cast

from ._client import Client

__all__ = ["BOOTSTRAP_ENV", "LambdaContext", "Serverless"]

BOOTSTRAP_ENV = "BANDITFLAGS_BOOTSTRAP"

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


class LambdaContext(Protocol):
    """The part of AWS Lambda's context object the wrapper uses."""

    def get_remaining_time_in_millis(self) -> int: ...


def _bootstrap_from_env(name: str, logger: logging.Logger) -> Mapping[str, Any] | str | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    if raw.lstrip().startswith("{"):
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            logger.warning("banditflags: ignoring %s: not valid JSON (%s)", name, exc)
            return None
        return payload if isinstance(payload, Mapping) else None
    return raw  # a file path; the client reads and validates it


class Serverless:
    """A thread-free client for a function container, and the wrappers for its handlers.

    Create it once, at module level (outside the handler), so warm invocations reuse the client,
    its configuration and any events not yet delivered::

        flags = Serverless()       # BANDITFLAGS_URL, BANDITFLAGS_SDK_KEY, BANDITFLAGS_BOOTSTRAP

        @flags.lambda_handler
        def handler(event, context):
            variant = flags.client.variant("checkout-button", event["user_id"], "blue")
            ...

    ``client``: an existing ``Client(background=False)``; otherwise one is built from ``base_url`` /
    ``sdk_key`` (default: the ``BANDITFLAGS_URL`` / ``BANDITFLAGS_SDK_KEY`` environment variables),
    ``bootstrap`` and ``client_options``. ``ttl``: the age after which the configuration is fetched
    again at the start of an invocation. ``refresh_timeout``: the most an invocation waits for it.
    ``margin``: seconds kept free before the Lambda deadline. ``flush_timeout``: the most an
    invocation spends flushing (and the whole budget for :meth:`handler`, which has no deadline).

    See the module docstring for an example.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        base_url: str | None = None,
        sdk_key: str | None = None,
        ttl: float = 30.0,
        refresh_timeout: float = 0.5,
        retry_after: float = 5.0,
        margin: float = 0.25,
        flush_timeout: float = 2.0,
        bootstrap: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        bootstrap_env: str = BOOTSTRAP_ENV,
        clock: Callable[[], float] = time.time,
        **client_options: Any,
    ) -> None:
        for name, v in (("ttl", ttl), ("refresh_timeout", refresh_timeout), ("flush_timeout", flush_timeout)):
            if not v > 0:
                raise ValueError(f"{name} must be positive")
        if not margin >= 0 or not retry_after >= 0:
            raise ValueError("margin and retry_after must be >= 0")
        self._logger: logging.Logger = client_options.get("logger") or logging.getLogger("banditflags")
        if client is None:
            url = base_url or os.environ.get("BANDITFLAGS_URL")
            key = sdk_key or os.environ.get("BANDITFLAGS_SDK_KEY", "").split(",")[0]
            if not url or not key:
                raise ValueError("give base_url and sdk_key (or set BANDITFLAGS_URL and BANDITFLAGS_SDK_KEY)")
            if bootstrap is None:
                bootstrap = _bootstrap_from_env(bootstrap_env, self._logger)
            client = Client(url, key, background=False, bootstrap=bootstrap, **client_options)
        elif client._background:
            raise ValueError("Serverless needs Client(background=False): threads freeze between invocations")
        self.client = client
        self.ttl = float(ttl)
        self.refresh_timeout = float(refresh_timeout)
        self.retry_after = float(retry_after)
        self.margin = float(margin)
        self.flush_timeout = float(flush_timeout)
        self._clock = clock
        self._next_refresh_at = -float("inf")
        self._last_refresh_at = -float("inf")
        self.invocations = 0
        self.refreshes = 0
        self.last_refresh_ok: bool | None = None
        self.last_flush_ok: bool | None = None

    # -- the two halves of an invocation (public for frameworks the wrappers do not cover) -------

    def begin(self) -> None:
        """Start an invocation: refresh the configuration if it is older than ``ttl`` (bounded)."""
        self.invocations += 1
        now = self._clock()
        # A clock that went backwards (a restored snapshot) counts as expired.
        has_config = self.client.stats().config_revision is not None
        if has_config and self._last_refresh_at <= now < self._next_refresh_at:
            return
        self.refreshes += 1
        ok = self.client.refresh(timeout=self.refresh_timeout)
        self.last_refresh_ok = ok
        self._last_refresh_at = now
        self._next_refresh_at = now + (self.ttl if ok else min(self.ttl, self.retry_after))

    def end(self, budget: float | None = None) -> bool:
        """End an invocation: flush within ``budget`` seconds (capped at ``flush_timeout``).

        Returns True when everything recorded so far was acknowledged. With no budget left, nothing
        is sent and everything stays buffered for the next invocation.
        """
        timeout = self.flush_timeout if budget is None else min(self.flush_timeout, budget)
        if timeout <= 0:
            self.last_flush_ok = False
            return False
        ok = self.client.flush(timeout=timeout)
        self.last_flush_ok = ok
        return ok

    def budget(self, context: object) -> float | None:
        """Seconds left for the flush: Lambda's remaining time minus ``margin`` (None: no deadline)."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return None
        try:
            return float(remaining()) / 1000.0 - self.margin
        except Exception:
            return None

    # -- wrappers -------------------------------------------------------------------------------

    def lambda_handler(self, fn: Callable[[Any, Any], R]) -> Callable[[Any, Any], R]:
        """Wrap an AWS Lambda handler ``fn(event, context)`` (sync, or ``async def``)."""
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[[Any, Any], Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def arun(event: Any, context: Any) -> Any:
                self.begin()
                try:
                    return await afn(event, context)
                finally:
                    self.end(self.budget(context))

            return cast(Callable[[Any, Any], R], arun)

        @functools.wraps(fn)
        def run(event: Any, context: Any) -> R:
            self.begin()
            try:
                return fn(event, context)
            finally:
                self.end(self.budget(context))

        return run

    def handler(self, fn: F) -> F:
        """Wrap any callable (sync, or ``async def``): refresh before, flush within ``flush_timeout`` after.

        In an ``async def`` handler the refresh and the flush run inline, bounded by their timeouts:
        an invocation is the only work of a function instance, and a thread pool would outlive it.
        """
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def arun(*args: Any, **kwargs: Any) -> Any:
                self.begin()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self.end()

            return cast(F, arun)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            self.begin()
            try:
                return fn(*args, **kwargs)
            finally:
                self.end()

        return cast(F, run)

    def __repr__(self) -> str:
        return f"<banditflags.serverless.Serverless {self.client!r} invocations={self.invocations}>"
