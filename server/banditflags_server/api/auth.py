"""Bearer-key authentication: ``admin`` keys may do everything, ``sdk`` keys only config and events.

Keys are compared by their sha256 (the store keeps nothing else); a key never reaches a log line or a
response. Known hashes are cached in memory for ``key_recheck`` seconds; an unknown or expired one is
looked up in the database, so keys added by another process are honoured and keys it revoked stop working.
An address that keeps presenting unknown keys is throttled (:mod:`banditflags_server.api.throttle`).
"""

from __future__ import annotations

import functools
import hmac
import math
import time
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.throttle import BadKeyThrottle
from banditflags_server.errors import ApiError
from banditflags_server.service import metrics
from banditflags_server.storage.store import Store, hash_key

Endpoint = Callable[[Request], Awaitable[Response]]


def client_address(request: Request) -> str:
    """The client's address as uvicorn saw it (behind a trusted proxy: its ``X-Forwarded-For``)."""
    return request.client.host if request.client is not None else "unknown"


def bearer(request: Request) -> str:
    """The request's bearer key; 401 if there is none."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(
            401, "missing bearer key (Authorization: Bearer <key>)", headers={"WWW-Authenticate": "Bearer"}
        )
    return key


class KeyRing:
    """sha256 -> (kind, when checked), cached for ``recheck`` seconds; falls back to the store for hashes
    it has not seen or not checked lately. The key's name (for the audit log) is cached while the key is."""

    def __init__(self, store: Store, recheck: float = 30.0, throttle: BadKeyThrottle | None = None) -> None:
        self.store = store
        self.recheck = recheck
        self.throttle = throttle if throttle is not None else BadKeyThrottle()
        self.known: dict[str, tuple[str, float]] = {}
        self.names: dict[str, str] = {}

    def load(self) -> None:
        """Read every stored key hash (blocking)."""
        now = time.monotonic()
        self.known = {digest: (kind, now) for digest, kind in self.store.all_keys().items()}

    async def _lookup(self, digest: str) -> str | None:
        """The stored kind of a key hash, refreshing the cache; the cached kind if the database fails."""
        hit = self.known.get(digest)
        try:
            kind = await run_in_threadpool(self.store.key_kind, digest)
        except Exception:
            if hit is None:
                raise
            return hit[0]  # the database is down: keep serving the keys we know rather than lock out SDKs
        if kind is None:
            self.known.pop(digest, None)
            self.names.pop(digest, None)
            return None
        self.known[digest] = (kind, time.monotonic())
        return kind

    async def name(self, digest: str) -> str:
        """The stored name of a known key (``env-admin``, ``admin-initial``, ...); never the key."""
        name = self.names.get(digest)
        if name is None:
            found = await run_in_threadpool(self.store.key_identity, digest)
            name = found[1] if found is not None else "unknown"
            self.names[digest] = name
        return name

    def gate(self, request: Request, digest: str) -> None:
        """429 while the client's address is throttled, unless the key with this hash worked from it
        before; checked before any database lookup."""
        wait = self.throttle.retry_after(client_address(request), digest)
        if wait is not None:
            metrics.AUTH_THROTTLED.inc()
            raise ApiError(
                429,
                "too many unknown keys from this address; try again later",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def refused(self, request: Request) -> ApiError:
        """Count an unknown key from the request's address; the 401 to raise."""
        self.throttle.failed(client_address(request))
        metrics.AUTH_FAILURES.inc()
        return ApiError(401, "unknown key", headers={"WWW-Authenticate": "Bearer"})

    def accepted(self, request: Request, digest: str) -> None:
        """Note that the key with this hash worked from the request's address."""
        self.throttle.vouch(client_address(request), digest)

    async def kind(self, request: Request) -> str:
        """The kind of the request's key; 401 if missing or unknown, 429 while the address is throttled.
        Sets ``request.state.key_hash``."""
        digest = hash_key(bearer(request))
        self.gate(request, digest)
        hit = self.known.get(digest)
        kind = hit[0] if hit is not None and time.monotonic() - hit[1] < self.recheck else None
        if kind is None:
            kind = await self._lookup(digest)
            if kind is None:
                raise self.refused(request)
        self.accepted(request, digest)
        request.state.key_hash = digest
        return kind


def keys(request: Request) -> KeyRing:
    """The app's key ring."""
    ring: KeyRing = request.app.state.keys
    return ring


async def actor(request: Request) -> str:
    """The name of the key that authorised ``request`` (after :func:`requires` let it through)."""
    digest: str | None = getattr(request.state, "key_hash", None)
    if digest is None:
        return "unknown"
    return await keys(request).name(digest)


def check_metrics_key(request: Request, expected: str) -> None:
    """401 unless the request carries ``expected`` (compared in constant time), 429 while throttled."""
    ring = keys(request)
    digest = hash_key(bearer(request))
    ring.gate(request, digest)
    if not hmac.compare_digest(digest.encode(), hash_key(expected).encode()):
        raise ring.refused(request)
    ring.accepted(request, digest)


def requires(kind: str) -> Callable[[Endpoint], Endpoint]:
    """Decorate an endpoint: ``admin`` needs an admin key, ``sdk`` accepts an sdk or admin key. The
    endpoint's ``auth_kind`` says which (:class:`~banditflags_server.api.operations.ApiRoute` checks it
    against the route's declaration)."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            got = await keys(request).kind(request)
            if kind == "admin" and got != "admin":
                raise ApiError(403, "this key may not call this endpoint (an admin key is needed)")
            return await endpoint(request)

        guarded.auth_kind = kind  # type: ignore[attr-defined]
        return guarded

    return wrap
