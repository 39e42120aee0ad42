"""``GET /v1/stream``: server-sent events that push the config to SDKs on every revision change.

Each server process runs one watcher task (:meth:`StreamHub.run`) that reads the store's revision every
``stream_poll`` seconds while at least one stream is open (one cheap ``SELECT`` on the ``meta`` row), and
at once after a write made through this process (:class:`PokeOnWrite`). On a change it builds the config
body once (the same cached bytes ``GET /v1/config`` serves) and wakes every open stream, which sends it
as one event::

    event: config
    id: 42
    data: {"schema":1,"revision":42,"generated_at":"...","flags":[...]}

Because the watcher reads the database, a change made through *another* process or replica sharing the
database reaches this process's streams within one poll interval. A stream starts with the current
config (or with a ``: up to date`` comment when the client's ``Last-Event-ID`` names the current
revision) and sends a ``: keep-alive`` comment every ``stream_heartbeat`` seconds, so proxies keep the
connection open and clients can tell a silent server from a dead one.

A change costs each stream one wake-up and one write: the event's bytes are built once per change, and
the heartbeat is one hub-wide beat (the watcher wakes every stream with nothing new, and each sends a
keep-alive) rather than a timer per stream, so a push to thousands of streams stays cheap (the kill
switch's fan-out bounds how many streams one replica should hold: docs/scaling.md).

On shutdown :class:`Server` (the uvicorn server the runner uses) closes every stream first, so that
uvicorn's graceful shutdown is not held up by connections that never end.

>>> event_bytes(7, b'{"revision":7}')
b'event: config\\nid: 7\\ndata: {"revision":7}\\n\\n'
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from banditflags_server.api.auth import requires
from banditflags_server.api.config import config_bytes
from banditflags_server.api.context import Context, ctx
from banditflags_server.api.operations import ApiRoute, Operation, Param
from banditflags_server.errors import ApiError
from banditflags_server.storage.notify import RevisionListener

log = logging.getLogger("banditflags_server.stream")

KEEP_ALIVE = b": keep-alive\n\n"
UP_TO_DATE = b": up to date\n\n"
#: Reconnection delay hint for browsers' EventSource (the Python SDK has its own backoff).
RETRY = b"retry: 2000\n\n"


def event_bytes(revision: int, body: bytes) -> bytes:
    """One SSE ``config`` event. The body is compact JSON: it has no raw newline, so one ``data:`` line."""
    return b"event: config\nid: %d\ndata: %s\n\n" % (revision, body)


class StreamHub:
    """The process's open streams and the watcher that feeds them.

    >>> hub = StreamHub(poll=0.1, heartbeat=15.0, max_streams=10)
    >>> hub.open_streams, hub.latest
    (0, None)
    """

    def __init__(
        self, *, poll: float, heartbeat: float, max_streams: int, listen_poll: float | None = None
    ) -> None:
        self.fast_poll = poll
        self.listen_poll = poll if listen_poll is None else listen_poll
        #: Set by the app on PostgreSQL: while it listens, changes of other replicas arrive as
        #: notifications and the revision is polled only as a fallback (storage/notify.py).
        self.listener: RevisionListener | None = None
        self.heartbeat = heartbeat
        self.max_streams = max_streams
        self.open_streams = 0
        self.latest: tuple[int, bytes] | None = None
        #: ``latest`` as one SSE event, built once per change for every stream.
        self._latest_event = b""
        self.beats = 0  # hub-wide heartbeats so far; a stream woken with nothing new sends a keep-alive
        self.closing = False
        self.events_sent = 0
        self._changed = asyncio.Event()
        self._poke = asyncio.Event()
        self._failing = False
        #: Successful writes through this process (counted by :class:`PokeOnWrite` before the response
        #: goes out), so ``GET /v1/config`` re-reads the revision after a local change.
        self.writes = 0

    def reset(self) -> None:
        """Fresh events for the running event loop (at the start of the app's lifespan)."""
        self._changed = asyncio.Event()
        self._poke = asyncio.Event()
        self.closing = False

    @property
    def poll(self) -> float:
        """Seconds between revision reads now: long while notifications arrive, short otherwise."""
        listener = self.listener
        return self.listen_poll if listener is not None and listener.healthy else self.fast_poll

    def notified(self) -> None:
        """Another replica (or this one) committed a change: re-read the revision now (event loop)."""
        self.writes += 1  # makes GET /v1/config re-read the revision too
        self._poke.set()

    def poke(self) -> None:
        """Check the revision now (after a write through this process) instead of at the next poll."""
        self._poke.set()

    def close(self) -> None:
        """End every stream (shutdown); new ones are refused."""
        self.closing = True
        self._changed.set()
        self._poke.set()

    def _publish(self, snap: tuple[int, bytes]) -> None:
        self._latest_event = event_bytes(*snap)
        self.latest = snap
        self._wake_streams()

    def _wake_streams(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _beat(self) -> None:
        self.beats += 1
        self._wake_streams()

    async def run(self, c: Context, stop: asyncio.Event) -> None:
        """The watcher: poll the revision while streams are open, publish each change, beat the
        heartbeat, until ``stop``."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat
        while not stop.is_set() and not self.closing:
            if self.open_streams > 0:
                try:
                    revision = await asyncio.to_thread(c.store.revision)
                    if self.latest is None or revision != self.latest[0]:
                        self._publish(await asyncio.to_thread(config_bytes, c))
                    if self._failing:
                        self._failing = False
                        log.info("revision watcher: the database answers again")
                except Exception as exc:
                    # Keep the streams open (clients keep their config); say it once, not every poll.
                    if not self._failing:
                        self._failing = True
                        log.warning("revision watcher: cannot read the revision: %s", type(exc).__name__)
            self._poke.clear()
            now = loop.time()
            if now >= next_beat:
                next_beat = now + self.heartbeat
                if self.open_streams > 0:
                    self._beat()
            # Idle (no stream open): sleep until a stream opens or a write pokes us.
            timeout = min(self.poll, max(next_beat - now, 0.0)) if self.open_streams > 0 else None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._poke.wait(), timeout=timeout)

    async def events(self, c: Context, last_event_id: int | None) -> AsyncIterator[bytes]:
        """The body of one stream; counted in ``open_streams`` while it runs."""
        self.open_streams += 1
        self.poke()  # wake an idle watcher
        try:
            yield RETRY
            revision, body = await asyncio.to_thread(config_bytes, c)
            if revision == last_event_id:
                yield UP_TO_DATE
            else:
                yield event_bytes(revision, body)
                self.events_sent += 1
            sent, beats = revision, self.beats
            while not self.closing:
                changed = self._changed  # before reading latest: a change after this read sets it
                latest = self.latest
                if latest is not None and latest[0] > sent:
                    sent = latest[0]
                    self.events_sent += 1
                    yield self._latest_event if self.latest is latest else event_bytes(*latest)
                    beats = self.beats
                    continue
                if self.beats != beats:
                    beats = self.beats
                    yield KEEP_ALIVE
                    continue
                await changed.wait()
        finally:
            self.open_streams -= 1


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id", "").strip()
    # isascii: str.isdigit() also takes digits int() refuses ("²").
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None


@requires("sdk")
async def get_stream(request: Request) -> Response:
    """``GET /v1/stream`` (sdk or admin key): ``text/event-stream`` of ``config`` events."""
    hub: StreamHub = request.app.state.streams
    if hub.closing:
        raise ApiError(503, "the server is shutting down", headers={"Retry-After": "1"})
    if hub.open_streams >= hub.max_streams:
        raise ApiError(
            503, "too many open streams on this server; poll /v1/config", headers={"Retry-After": "30"}
        )
    return StreamingResponse(
        hub.events(ctx(request), _last_event_id(request)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


routes = [
    ApiRoute(
        "/v1/stream",
        get_stream,
        "GET",
        Operation(
            "stream",
            "Server-sent events: the whole config on every revision change (docs/protocol.md)",
            "sdk",
            "sdk",
            answer=str,
            media=("text/event-stream",),
            params=(Param("Last-Event-ID", "header", str, "the revision this client has"),),
            also=(503,),
            headers={503: {"Retry-After": ("seconds", True)}},
        ),
    )
]


#: Writes that never change the config: event batches arrive all the time and must not make every
#: config poll re-read the revision (nor wake the watcher for nothing).
_NEVER_CHANGE_CONFIG = frozenset({"/v1/events"})


class PokeOnWrite:
    """ASGI middleware: after a successful POST/PATCH/PUT/DELETE, poke the watcher so this process's
    streams carry the change at once instead of at the next poll."""

    def __init__(self, app: ASGIApp, hub: StreamHub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or scope["path"] in _NEVER_CHANGE_CONFIG
        ):
            await self.app(scope, receive, send)
            return
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status < 400:
                    self.hub.writes += 1  # before the client can see the answer and poll again
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if status < 400:
                self.hub.poke()


class Server(uvicorn.Server):
    """uvicorn's server, ending the app's streams when shutdown starts (else each open stream would
    hold the graceful shutdown for ``timeout_graceful_shutdown`` seconds)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close the streams, then shut down as uvicorn does."""
        state: Any = getattr(self.config.app, "state", None)
        hub = getattr(state, "streams", None)
        if isinstance(hub, StreamHub):
            hub.close()
        await super().shutdown(sockets)
