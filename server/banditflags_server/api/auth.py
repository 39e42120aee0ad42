"""Bearer-key authentication: ``admin`` keys may do everything, ``sdk`` keys only config and events.

Keys are compared by their sha256 (the store keeps nothing else); a key never reaches a log line or a
response. Known hashes are cached in memory for ``key_recheck`` seconds; an unknown or expired one is
looked up in the database, so keys added by another process are honoured and keys it revoked stop working.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.errors import ApiError
from banditflags_server.storage.store import Store, hash_key

Endpoint = Callable[[Request], Awaitable[Response]]


class KeyRing:
    """sha256 -> (kind, when checked), cached for ``recheck`` seconds; falls back to the store for hashes
    it has not seen or not checked lately. The key's name (for the audit log) is cached while the key is."""

    def __init__(self, store: Store, recheck: float = 30.0) -> None:
        self.store = store
        self.recheck = recheck
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

    async def kind(self, request: Request) -> str:
        """The kind of the request's key; 401 if missing or unknown. Sets ``request.state.key_hash``."""
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401,
                "missing bearer key (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        digest = hash_key(key)
        hit = self.known.get(digest)
        kind = hit[0] if hit is not None and time.monotonic() - hit[1] < self.recheck else None
        if kind is None:
            kind = await self._lookup(digest)
            if kind is None:
                raise ApiError(401, "unknown key", headers={"WWW-Authenticate": "Bearer"})
        request.state.key_hash = digest
        return kind


async def actor(request: Request) -> str:
    """The name of the key that authorised ``request`` (after :func:`requires` let it through)."""
    digest: str | None = getattr(request.state, "key_hash", None)
    if digest is None:
        return "unknown"
    ring: KeyRing = request.app.state.keys
    return await ring.name(digest)


def requires(kind: str) -> Callable[[Endpoint], Endpoint]:
    """Decorate an endpoint: ``admin`` needs an admin key, ``sdk`` accepts an sdk or admin key."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def guarded(request: Request) -> Response:
            ring: KeyRing = request.app.state.keys
            got = await ring.kind(request)
            if kind == "admin" and got != "admin":
                raise ApiError(403, "this key may not call this endpoint (an admin key is needed)")
            return await endpoint(request)

        return guarded

    return wrap
