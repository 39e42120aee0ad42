"""Shared fixtures: the real server as a subprocess, HTTP clients, and a fresh PostgreSQL database.

``live_server`` is a factory::

    def test_something(live_server):
        server = live_server()                        # SQLite file in tmp_path, fresh random keys
        server = live_server(db=pg_url, recompute_interval=1, env={"X": "y"}, args=["--log-level", "debug"])
        httpx.get(server.url + "/v1/config", headers={"Authorization": f"Bearer {server.sdk_key}"})
        server.kill(); server.restart()               # SIGKILL, then the same port, database and keys

Every server started by the factory is stopped at the end of the test. The server's output goes to
``server.log_path`` (read it with ``server.log()``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings

# CI replays the same examples every run (a red build means a real regression, not a new random draw);
# local runs keep exploring. Failures found locally are kept in .hypothesis/ and replayed first.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    """A free TCP port on loopback (the server binds with SO_REUSEADDR, so a restart can reuse it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveServer:
    """A ``python -m banditflags_server serve`` subprocess on a loopback port.

    Attributes: ``url``, ``admin_key``, ``sdk_key``, ``db`` (path or URL), ``port``, ``log_path``.
    """

    def __init__(
        self,
        db: str,
        log_path: Path,
        *,
        recompute_interval: float = 3600.0,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        admin_key: str | None = None,
        sdk_key: str | None = None,
    ) -> None:
        self.db = db
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_key = admin_key or "bf_admin_" + secrets.token_urlsafe(24)
        self.sdk_key = sdk_key or "bf_sdk_" + secrets.token_urlsafe(24)
        self.recompute_interval = recompute_interval
        self.extra_env = dict(env or {})
        self.args = list(args)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The command line that starts this server."""
        return [
            sys.executable,
            "-m",
            "banditflags_server",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--db",
            self.db,
            "--recompute-interval",
            str(self.recompute_interval),
            *self.args,
        ]

    def environment(self) -> dict[str, str]:
        """The subprocess environment: this one without BANDITFLAGS_*, plus the keys and extras."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITFLAGS_")}
        env["BANDITFLAGS_ADMIN_KEY"] = self.admin_key
        env["BANDITFLAGS_SDK_KEY"] = self.sdk_key
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def start(self) -> LiveServer:
        """Start the process and wait until ``/healthz`` answers (raises with the log if it does not)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not answer /healthz in {self.startup_timeout} s:\n{self.log()}")

    def log(self) -> str:
        """Everything the server printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``timeout``); returns the exit code. Idempotent."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL, as a crash would (no clean shutdown)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> LiveServer:
        """Stop if running, then start again on the same port with the same database and keys."""
        self.stop()
        return self.start()

    def client(self, kind: str = "admin", **kwargs: Any) -> httpx.Client:
        """An httpx client for this server with the ``admin`` or ``sdk`` key."""
        key = self.admin_key if kind == "admin" else self.sdk_key
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30.0, **kwargs
        )


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Factory: ``live_server(db=None, recompute_interval=3600, env=None, args=(), admin_key=None,
    sdk_key=None)`` -> a started server.

    Keys default to fresh random ones (give the same keys to servers sharing a database: each process
    makes the stored settings keys exactly its own).
    ``db`` defaults to a new SQLite file in ``tmp_path``; all servers are stopped after the test.
    """
    started: list[LiveServer] = []

    def make(db: str | None = None, **kwargs: Any) -> LiveServer:
        n = len(started)
        server = LiveServer(db or str(tmp_path / f"server{n}.db"), tmp_path / f"server{n}.log", **kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One started server (fresh keys) shared by the tests of a module, once on SQLite and once on a
    PostgreSQL database of its own, for modules that make many requests of one server (the fuzzer)."""
    tmp = tmp_path_factory.mktemp("module-server")
    with contextlib.ExitStack() as stack:
        db = str(tmp / "server.db") if request.param == "sqlite" else stack.enter_context(fresh_pg_database())
        server = LiveServer(db, tmp / "server.log").start()
        stack.callback(server.stop)
        yield server


@pytest.fixture
def server(live_server: Callable[..., LiveServer]) -> LiveServer:
    """One started server (SQLite) for this test."""
    return live_server()


@pytest.fixture
def admin(server: LiveServer) -> Iterator[httpx.Client]:
    """An httpx client for ``server`` with its admin key."""
    with server.client("admin") as client:
        yield client


@pytest.fixture
def sdk(server: LiveServer) -> Iterator[httpx.Client]:
    """An httpx client for ``server`` with its sdk key."""
    with server.client("sdk") as client:
        yield client


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new PostgreSQL database (``postgresql://...``), dropped on exit; skips (with the reason) only
    when PostgreSQL on 127.0.0.1:5432 is unreachable."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    name = f"bf_test_{uuid.uuid4().hex[:12]}"
    admin_url = PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://")
    try:
        engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    except Exception as exc:  # OperationalError and driver errors alike mean "not reachable"
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {type(exc).__name__}: {exc}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        engine.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end (see fresh_pg_database)."""
    with fresh_pg_database() as url:
        yield url


class AppClients:
    """Fast in-process clients (Starlette TestClient, no recompute loop) for one app and database."""

    def __init__(self, db: str) -> None:
        with warnings.catch_warnings():  # Starlette's notice about httpx vs httpx2: not ours to act on
            warnings.simplefilter("ignore")
            from starlette.testclient import TestClient

        from banditflags_server.app import create_app
        from banditflags_server.settings import Settings

        self.admin_key = "bf_admin_" + secrets.token_urlsafe(24)
        self.sdk_key = "bf_sdk_" + secrets.token_urlsafe(24)
        self.settings = Settings(
            db=db, admin_keys=(self.admin_key,), sdk_keys=(self.sdk_key,), recompute_loop=False
        )
        self.raw = TestClient(create_app(self.settings), raise_server_exceptions=False)
        self.raw.__enter__()  # runs the lifespan: opens the store
        self.admin = self._with(self.admin_key)
        self.sdk = self._with(self.sdk_key)

    def _with(self, key: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from starlette.testclient import TestClient
        client = TestClient(self.raw.app, raise_server_exceptions=False)
        client.headers["Authorization"] = f"Bearer {key}"
        return client

    @property
    def store(self) -> Any:
        """The app's store (for looking behind the API)."""
        return self.raw.app.state.ctx.store

    def close(self) -> None:
        """Run the lifespan's shutdown."""
        self.raw.__exit__(None, None, None)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[AppClients]:
    """The app in-process on SQLite: ``app.admin``, ``app.sdk``, ``app.raw`` clients and ``app.store``."""
    clients = AppClients(str(tmp_path / "app.db"))
    yield clients
    clients.close()
