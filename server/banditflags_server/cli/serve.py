"""Running the server: :func:`serve` (blocking, for the CLI) and :class:`ServerThread` (a background
uvicorn on a loopback port, for the demo and tests)."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import signal
import socket
import sys
import threading
import time
from types import TracebackType
from typing import TextIO

import httpx
import uvicorn

from banditflags_server.api.stream import Server
from banditflags_server.app import create_app
from banditflags_server.settings import Settings
from banditflags_server.storage.store import Store


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves, so port 0 gives a free port whose number we know."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def prepare_store(settings: Settings) -> tuple[Store, tuple[str, str] | None]:
    """Open and migrate the database and register the settings' keys; on a first start without keys,
    make one admin and one sdk key and return them (they are stored hashed and shown only this once)."""
    store = Store.open(settings.url)
    try:
        store.sync_settings_keys(settings.admin_keys, settings.sdk_keys)
        generated = None
        if not settings.admin_keys and not settings.sdk_keys:
            generated = store.ensure_initial_keys()
    except BaseException:
        store.close()
        raise
    return store, generated


def configure_logging(level: str) -> None:
    """The server's own loggers (``banditflags_server.*``) at ``--log-level``, on stderr beside
    uvicorn's, so that an info line (a database that answers again, a new recompute leader) is seen."""
    logger = logging.getLogger("banditflags_server")
    if not any(getattr(h, "_banditflags", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:  %(name)s: %(message)s"))
        handler._banditflags = True  # type: ignore[attr-defined]  # ours, not an embedding app's
        logger.addHandler(handler)
        logger.propagate = False  # not twice through an application's root handler
    logger.setLevel(logging.DEBUG if level == "trace" else level.upper())


def serve(settings: Settings, out: TextIO | None = None) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's handlers shut down cleanly: in-flight requests finish)."""
    out = sys.stderr if out is None else out
    store, generated = prepare_store(settings)
    try:
        sock = _bind(settings.host, settings.port)
    except BaseException:
        store.close()
        raise
    url = _url(settings.host, sock)
    if generated is not None:
        admin, sdk = generated
        print(
            "banditflags: first start, made these keys (stored hashed; they are not shown again):", file=out
        )
        print(f"  admin key: {admin}", file=out)
        print(f"  sdk key:   {sdk}", file=out)
    print(f"banditflags: serving on {url}", file=out, flush=True)
    configure_logging(settings.log_level)
    app = create_app(settings, store=store)
    config = uvicorn.Config(app, log_level=settings.log_level, lifespan="on", timeout_graceful_shutdown=10)
    # uvicorn shuts down cleanly on SIGINT/SIGTERM and then re-raises the signal to the handler that was
    # installed before it; ours turns SIGTERM into a normal return (exit 0) instead of death by signal.
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        Server(config).run(sockets=[sock])
    except _Terminated:
        pass
    finally:
        sock.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(Exception):
    """SIGTERM arrived after uvicorn's clean shutdown."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated()


class ServerThread:
    """The server under uvicorn in a daemon thread on ``settings.host``/``settings.port`` (0: a free port).

    Keys default to fresh random ones when the settings give none::

        with ServerThread(Settings(db="/tmp/x.db", port=0)) as server:
            httpx.get(server.url + "/healthz")
    """

    def __init__(
        self, settings: Settings | None = None, *, db: str | None = None, startup_timeout: float = 20.0
    ) -> None:
        if settings is None:
            if db is None:
                raise ValueError("ServerThread needs settings or a db")
            settings = Settings(db=db, port=0)
        if not settings.admin_keys:
            settings = dataclasses.replace(settings, admin_keys=("bf_admin_" + secrets.token_urlsafe(24),))
        if not settings.sdk_keys:
            settings = dataclasses.replace(settings, sdk_keys=("bf_sdk_" + secrets.token_urlsafe(24),))
        self.settings = settings
        self.admin_key = settings.admin_keys[0]
        self.sdk_key = settings.sdk_keys[0]
        self.startup_timeout = startup_timeout
        self.url = ""
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self) -> ServerThread:
        """Start serving and wait until ``/healthz`` answers; raises RuntimeError if it does not."""
        self._sock = _bind(self.settings.host, self.settings.port)
        self.url = _url(self.settings.host, self._sock)
        app = create_app(self.settings)
        config = uvicorn.Config(
            app, log_level=self.settings.log_level, lifespan="on", timeout_graceful_shutdown=5
        )
        self._server = Server(config)
        sock = self._sock
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name="banditflags-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                self._close_socket()
                raise RuntimeError("the server failed to start (see the log above)")
            if server.started:
                try:
                    if httpx.get(self.url + "/healthz", timeout=2.0).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the server did not answer /healthz within {self.startup_timeout} s")

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def stop(self, timeout: float = 15.0) -> None:
        """Shut down (idempotent): finish in-flight requests, stop the recompute loop, close the store."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close_socket()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
