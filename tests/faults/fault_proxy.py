"""A small fault-injecting HTTP proxy for tests: it sits between a real SDK client and the real server
on loopback and breaks the traffic on purpose.

One request per client connection (the proxy answers with ``Connection: close``, so the client opens a
new connection for the next request and every fault starts from a clean state). Each request is logged
(monotonic arrival time, method, path, the fault applied, the status the client was sent, the events
batch id) so tests can check *what the SDK sent and when*, e.g. that a ``Retry-After`` was honoured.

Faults (``kind`` of :meth:`FaultProxy.set`), each limited to path prefixes (default: every path):

- ``latency``: wait ``delay`` seconds, then forward (the request reaches the server even if the client
  gave up meanwhile, as on a slow network);
- ``reset_request``: reset the connection (TCP RST) before forwarding: the server never sees it;
- ``reset_after_commit``: forward, read the whole answer, then reset without sending a byte of it (the
  server did the work, the client cannot know);
- ``reset_mid_body``: forward, then send the answer's head and half its body, then reset;
- ``status``: answer ``status`` (500, 502, 503, 429, 401, ...) without forwarding, with ``Retry-After:
  retry_after`` if given;
- ``body``: answer 200 with ``body`` (bytes) as JSON without forwarding (a body that is not JSON, or a
  config that fails validation); on ``/v1/stream`` the body goes out as the data of one ``config``
  event, then the stream ends;
- ``blackhole``: accept the connection and the request, never answer (until the fault is cleared or
  ``hold_max`` seconds pass, then the connection is closed);
- ``truncate_stream``: forward, pass the first ``keep_bytes`` bytes of the answer's body, then close the
  connection (FIN): a stream cut mid-event;
- ``stall_stream``: forward, pass the first ``keep_bytes`` bytes of the body, then pass nothing more
  while the fault lasts (the connection stays open); a stall also hits streams that were open before it
  was set. A stalled connection is reset when the fault clears (its framing was lost).

``times=n`` applies a fault to the next ``n`` matching requests only. :meth:`FaultProxy.clear` removes
every fault and releases what is held. Bounded: loopback only, at most ``max_connections`` at once,
heads of 64 KiB and bodies of 16 MiB at most, a log of ``max_log`` entries, and the proxy stops by
itself after ``max_lifetime`` seconds.

>>> with FaultProxy("http://127.0.0.1:9") as proxy:
...     proxy.set("status", paths=("/v1/events",), status=429, retry_after="2", times=1)
...     proxy.url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["KINDS", "Entry", "Fault", "FaultProxy"]

KINDS = frozenset(
    {
        "latency",
        "reset_request",
        "reset_after_commit",
        "reset_mid_body",
        "status",
        "body",
        "blackhole",
        "truncate_stream",
        "stall_stream",
    }
)
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
_REASONS = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests"}


@dataclass
class Fault:
    """One active fault (see the module docstring for the kinds and their parameters)."""

    kind: str
    paths: tuple[str, ...] = ()
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    body: bytes = b""
    keep_bytes: int = 0
    times: int | None = None
    hold_max: float = 30.0
    cleared: asyncio.Event = field(default_factory=asyncio.Event)

    def matches(self, path: str) -> bool:
        return not self.paths or any(path.startswith(p) for p in self.paths)


@dataclass
class Entry:
    """One request as the proxy saw it, logged on arrival: ``t`` is that time (``time.monotonic()``),
    ``fault`` the kind applied (None: passed through), ``status`` the status the client was sent (None:
    no answer, or not yet)."""

    t: float
    method: str
    path: str
    fault: str | None
    status: int | None
    batch_id: str | None


class FaultProxy:
    """The proxy, on its own event loop in a daemon thread. Start with :meth:`start` or ``with``."""

    def __init__(
        self,
        upstream: str,
        *,
        max_lifetime: float = 120.0,
        max_connections: int = 64,
        max_log: int = 10_000,
    ) -> None:
        u = urlsplit(upstream)
        if u.scheme != "http" or u.hostname is None or u.port is None:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        if not ipaddress.ip_address(socket.gethostbyname(u.hostname)).is_loopback:
            raise ValueError("the fault proxy forwards to loopback only")
        self.upstream = (u.hostname, u.port)
        self.max_lifetime = max_lifetime
        self.max_connections = max_connections
        self.port = 0
        self.url = ""
        self._log: collections.deque[Entry] = collections.deque(maxlen=max_log)
        self._faults: list[Fault] = []
        self._lock = threading.Lock()  # guards _faults and _log across the test and the loop threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._done: asyncio.Event | None = None

    # -- control, from the test's thread ----------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Listen on a free loopback port (``url``); returns self."""
        self._thread = threading.Thread(target=self._main, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10.0) or not self.url:
            raise RuntimeError("the fault proxy did not start")
        return self

    def set(self, kind: str, *, paths: tuple[str, ...] = (), **params: Any) -> None:
        """Add a fault (in front of those already set: the newest matching one applies)."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")

        def add() -> None:
            with self._lock:
                self._faults.insert(0, Fault(kind, tuple(paths), **params))

        self._call(add)

    def clear(self) -> None:
        """Remove every fault; held and stalled connections are closed."""

        def drop() -> None:
            with self._lock:
                faults, self._faults = self._faults, []
            for f in faults:
                f.cleared.set()

        self._call(drop)

    def drop_connections(self) -> None:
        """Reset every connection open now (an open stream, a held request), as a network blip would."""

        def drop() -> None:
            for writer in list(self._writers):
                _reset(writer)

        self._call(drop)

    def requests(self, prefix: str = "", method: str | None = None) -> list[Entry]:
        """The logged requests whose path starts with ``prefix`` (and of ``method``), oldest first."""
        with self._lock:
            entries = list(self._log)
        return [e for e in entries if e.path.startswith(prefix) and (method is None or e.method == method)]

    def stop(self) -> None:
        """Close everything and end the thread (idempotent)."""
        loop, done = self._loop, self._done
        if loop is not None and done is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(done.set)
        if self._thread is not None:
            self._thread.join(10.0)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, fn: Any) -> None:
        # Run fn on the proxy's loop (asyncio.Event is not thread-safe) and wait for it.
        loop = self._loop
        if loop is None or loop.is_closed():
            fn()
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        done.wait(10.0)

    # -- the loop ---------------------------------------------------------------------------------------

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()
            self._ready.set()

    async def _serve(self) -> None:
        self._done = asyncio.Event()
        slots = asyncio.Semaphore(self.max_connections)

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            self._writers.add(writer)
            try:
                async with slots:
                    await self._connection(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                pass  # the client or the server went away: nothing to answer
            except asyncio.CancelledError:
                pass  # the proxy stops
            finally:
                self._tasks.discard(task)
                self._writers.discard(writer)
                writer.close()

        self._server = await asyncio.start_server(on_connect, "127.0.0.1", 0, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._done.wait(), self.max_lifetime)
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)

    def _match(self, path: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(path):
                    if f.times is not None:
                        f.times -= 1
                        if f.times <= 0:
                            self._faults.remove(f)
                    return f
        return None

    def _active(self, path: str, kind: str) -> Fault | None:
        with self._lock:
            return next((f for f in self._faults if f.kind == kind and f.matches(path)), None)

    def _record(self, t: float, method: str, path: str, fault: Fault | None, body: bytes) -> Entry:
        batch_id = None
        if method == "POST" and path.startswith("/v1/events"):
            with contextlib.suppress(ValueError, AttributeError):
                batch_id = json.loads(body).get("batch_id")
        entry = Entry(t, method, path, fault.kind if fault else None, None, batch_id)
        with self._lock:
            self._log.append(entry)
        return entry

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        t = time.monotonic()
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [tuple(x.strip() for x in ln.split(":", 1)) for ln in lines[1:] if ":" in ln]
        length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
        if length > MAX_BODY:
            raise ConnectionError("body too large")
        body = await reader.readexactly(length) if length else b""
        path = target.split("?", 1)[0]
        fault = self._match(path)
        kind = fault.kind if fault else None
        entry = self._record(t, method, path, fault, body)

        if fault is not None and kind == "latency":
            await asyncio.sleep(fault.delay)
        if fault is not None and kind == "reset_request":
            _reset(writer)
            return
        if fault is not None and kind == "blackhole":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(fault.cleared.wait(), fault.hold_max)
            _reset(writer)
            return
        if fault is not None and kind == "status":
            entry.status = fault.status
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            payload = json.dumps({"error": f"injected {fault.status}"}).encode()
            await _answer(writer, fault.status, payload, "application/json", extra)
            return
        if fault is not None and kind == "body":
            entry.status = 200
            if path.startswith("/v1/stream"):
                data = b"".join(b"data: " + ln + b"\n" for ln in fault.body.split(b"\n"))
                await _answer(writer, 200, b"event: config\n" + data + b"\n", "text/event-stream", {})
            else:
                await _answer(writer, 200, fault.body, "application/json", {"ETag": '"injected"'})
            return

        # Forward, with Connection: close (one request per upstream connection too).
        up_reader, up_writer = await asyncio.open_connection(*self.upstream, limit=MAX_HEAD)
        try:
            out = [lines[0]] + [
                f"{k}: {v}" for k, v in headers if k.lower() not in ("connection", "keep-alive")
            ]
            up_writer.write(("\r\n".join([*out, "Connection: close", "", ""])).encode("latin-1") + body)
            await up_writer.drain()
            resp_head = await up_reader.readuntil(b"\r\n\r\n")
            status = int(resp_head.split(b" ", 2)[1])
            entry.status = None if kind == "reset_after_commit" else status
            if kind in ("reset_after_commit", "reset_mid_body"):
                resp_body = await _read_all(up_reader)
                if kind == "reset_mid_body":
                    writer.write(_closing(resp_head) + resp_body[: len(resp_body) // 2])
                    await writer.drain()
                _reset(writer)
                return
            writer.write(_closing(resp_head))
            await writer.drain()
            await self._relay(up_reader, writer, path, fault)
        finally:
            up_writer.close()

    async def _relay(
        self, up: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, fault: Fault | None
    ) -> None:
        """Pass the answer's body on until the server closes, applying stream faults on the way."""
        passed = 0
        stalled = False
        while True:
            chunk = await up.read(65536)
            if not chunk:
                return
            if fault is not None and fault.kind == "truncate_stream":
                room = fault.keep_bytes - passed
                if room <= len(chunk):
                    writer.write(chunk[: max(room, 0)])
                    await writer.drain()
                    return  # FIN: a stream that ends mid-event
            stall = self._active(path, "stall_stream")
            if stall is not None:
                room = stall.keep_bytes - passed if fault is stall else 0
                if room > 0:
                    chunk = chunk[:room]
                else:
                    stalled = True
                    continue  # read on and drop: the client sees nothing more
            elif stalled:
                _reset(writer)  # bytes were lost: the framing is broken, end it
                return
            passed += len(chunk)
            writer.write(chunk)
            await writer.drain()


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    data = bytearray()
    while len(data) <= MAX_BODY:
        chunk = await reader.read(65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _closing(head: bytes) -> bytes:
    """A response head with ``Connection: close`` instead of any connection header it had."""
    lines = head.decode("latin-1").split("\r\n")
    kept = [
        ln
        for ln in lines[1:]
        if ln and ln.split(":", 1)[0].strip().lower() not in ("connection", "keep-alive")
    ]
    return ("\r\n".join([lines[0], *kept, "Connection: close", "", ""])).encode("latin-1")


async def _answer(
    writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str, extra: dict[str, str]
) -> None:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Injected')}", f"Content-Type: {ctype}"]
    head += [f"Content-Length: {len(body)}", "Connection: close", *(f"{k}: {v}" for k, v in extra.items())]
    writer.write(("\r\n".join([*head, "", ""])).encode("latin-1") + body)
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
