"""Database faults under SDK traffic: SQLite out of space, PostgreSQL connections killed and refused.

While the database cannot take writes, ``/readyz`` answers 503, event batches get 503 with
``Retry-After`` and are never acknowledged (the SDK keeps them and retries with the same ``batch_id``),
admin changes get a JSON 503 and change nothing, and ``/v1/config`` keeps answering. After recovery
every count is exact: what the SDK clients counted (bucketed decisions, conversions answered True)
equals what the server stored, nothing lost and nothing counted twice.

SQLite's disk is a 16 MiB tmpfs filled to the last byte (needs root to mount; skipped otherwise, with
the reason). PostgreSQL runs on a database of the test's own: its backends are terminated
(``pg_terminate_backend``, that database only) and then new connections refused (``ALTER DATABASE ...
ALLOW_CONNECTIONS false``), so nothing else on the shared server is touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import PG_ADMIN_URL, LiveServer, fresh_pg_database
from tests.faults.conftest import create_binary_flag

import banditflags

FLAG = "dbf-checkout"


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def ready(server: LiveServer) -> int:
    return httpx.get(server.url + "/readyz", timeout=5.0).status_code


class Traffic:
    """A real SDK client deciding and converting, tallying what the server must end up with."""

    def __init__(self, server: LiveServer) -> None:
        self.client = banditflags.Client(
            server.url,
            server.sdk_key,
            refresh_interval=0.2,
            flush_interval=0.2,
            request_timeout=2.0,
            telemetry="off",
        )
        assert self.client.wait_until_ready(10.0)
        self.exposures = 0
        self.rewards = 0
        self.n = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def decide(self, count: int) -> None:
        for _ in range(count):
            self.n += 1
            d = self.client.decide(FLAG, f"u{self.n}")
            if d.token is None:
                continue
            self.exposures += 1
            if self.n % 3 == 0 and self.client.track(d):
                self.rewards += 1

    def start(self, per_tick: int = 20) -> None:
        def run() -> None:
            while not self._stop.is_set():
                self.decide(per_tick)
                time.sleep(0.01)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)


def stored(admin: httpx.Client) -> tuple[int, int]:
    body = admin.get(f"/v1/flags/{FLAG}/stats").json()
    return sum(sum(p["n"]) for p in body["periods"]), sum(sum(p["rewards"]) for p in body["periods"])


def check_outage_answers(server: LiveServer, admin: httpx.Client) -> None:
    """What every caller gets while the database cannot take writes."""
    wait_for(lambda: ready(server) == 503, 10.0, "/readyz to answer 503")
    batch = {
        "batch_id": f"b-{uuid.uuid4().hex}",
        "exposures": [{"flag": FLAG, "version": 1, "arm": 0, "count": 1}],
    }
    sdk = {"Authorization": f"Bearer {server.sdk_key}"}
    r = httpx.post(server.url + "/v1/events", json=batch, headers=sdk, timeout=10.0)
    assert r.status_code == 503, r.text
    assert r.headers.get("retry-after") and r.json()["error"]["code"] == "unavailable"
    r = httpx.get(server.url + "/v1/config", headers=sdk, timeout=10.0)
    assert r.status_code == 200 and any(f["key"] == FLAG for f in r.json()["flags"])
    r = admin.patch(f"/v1/flags/{FLAG}", json={"description": "changed during the outage"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "unavailable" and r.headers.get("retry-after")
    # The batch refused above must never count: a retry with the same id after recovery counts once.
    server.refused_batch = batch  # type: ignore[attr-defined]


def check_recovery(server: LiveServer, admin: httpx.Client, traffic: Traffic) -> None:
    wait_for(lambda: ready(server) == 200, 15.0, "/readyz to answer 200 again")
    assert traffic.client.flush(30.0), traffic.client.stats()
    assert admin.get(f"/v1/flags/{FLAG}").json().get("description") != "changed during the outage"
    assert stored(admin) == (traffic.exposures, traffic.rewards), traffic.client.stats()
    # the refused batch, retried as an SDK would: counted now, exactly once
    sdk = {"Authorization": f"Bearer {server.sdk_key}"}
    batch = server.refused_batch  # type: ignore[attr-defined]
    for _ in range(2):
        r = httpx.post(server.url + "/v1/events", json=batch, headers=sdk, timeout=10.0)
        assert r.status_code == 202, r.text
    assert stored(admin) == (traffic.exposures + 1, traffic.rewards)
    st = traffic.client.stats()
    print(
        f"exposures {traffic.exposures:,} sent = stored, rewards {traffic.rewards:,} sent = stored "
        f"(lost 0, doubled 0); SDK batches failed during the outage {st.batches_failed}, dropped "
        f"{st.batches_dropped}; the refused batch counted once when retried twice"
    )
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert "the database is unavailable" in log and "the database answers again" in log


# -- SQLite: out of space ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (root only): a disk that can really fill up."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
    return filler


@contextlib.contextmanager
def running(db: str, log: Path) -> Iterator[tuple[LiveServer, httpx.Client, Traffic]]:
    """A server on ``db`` with the test's flag, its admin client and SDK traffic; all stopped after."""
    server = LiveServer(db, log).start()
    traffic: Traffic | None = None
    try:
        with server.client("admin") as admin:
            create_binary_flag(admin, FLAG)
            traffic = Traffic(server)
            yield server, admin, traffic
    finally:
        if traffic is not None:
            traffic.stop()
            traffic.client.close(5.0)
        server.stop()


def test_sqlite_out_of_space(small_disk: Path, tmp_path: Path) -> None:
    with running(str(small_disk / "server.db"), tmp_path / "server.log") as (server, admin, traffic):
        traffic.decide(300)
        assert traffic.client.flush(10.0)
        traffic.start()
        time.sleep(0.5)
        filler = fill(small_disk)
        check_outage_answers(server, admin)
        time.sleep(1.0)  # SDK batches keep failing meanwhile; the SDK keeps them
        assert traffic.client.stats().batches_failed > 0
        filler.unlink()
        traffic.stop()
        check_recovery(server, admin, traffic)


# -- PostgreSQL: connections killed, then refused ----------------------------------------------------


def _pg(sql: str) -> None:
    sa = pytest.importorskip("sqlalchemy")
    engine = sa.create_engine(
        PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def _kill_backends(name: str) -> None:
    # Only this test's database: other tests share the server.
    others = f"datname = '{name}' AND pid <> pg_backend_pid()"
    _pg(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {others}")


@pytest.mark.postgres
def test_postgresql_connections_killed_and_refused(tmp_path: Path) -> None:
    with fresh_pg_database() as url, running(url, tmp_path / "server.log") as (server, admin, traffic):
        name = url.rsplit("/", 1)[1]
        traffic.start()
        for _ in range(3):  # killed under load: the pool reconnects, failed batches are retried
            time.sleep(0.7)
            _kill_backends(name)
        time.sleep(0.5)
        _pg(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        try:
            _kill_backends(name)
            check_outage_answers(server, admin)
            time.sleep(1.0)
            assert traffic.client.stats().batches_failed > 0
        finally:
            _pg(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        traffic.stop()
        check_recovery(server, admin, traffic)
