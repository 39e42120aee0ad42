"""The ``banditflags`` CLI: help, first-start keys printed once, settings errors, the missing extra."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from banditflags_server.cli import main

from ..conftest import free_port  # type: ignore[import-not-found]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BANDITFLAGS_")}


def test_serve_help(capsys: object) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "banditflags_server", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert out.returncode == 0
    for option in ("--db", "--host", "--port", "--recompute-interval", "--log-level"):
        assert option in out.stdout


def test_usage_errors_exit_2(capsys: object) -> None:
    assert main([]) == 2
    env = {**_env(), "BANDITFLAGS_PORT": "eighty"}
    out = subprocess.run(
        [sys.executable, "-m", "banditflags_server", "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2 and "BANDITFLAGS_PORT" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "banditflags_server", "serve", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert out.returncode == 2


def test_unusable_database_exits_1(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "banditflags_server",
            "serve",
            "--port",
            "0",
            "--db",
            str(tmp_path / "missing-dir" / "x.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr


def _start(db: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "banditflags_server", "serve", "--port", str(port), "--db", str(db)],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(log.read_text())


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(20)


def test_first_start_prints_generated_keys_once(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    proc, url = _start(db, tmp_path / "first.log")
    try:
        text = (tmp_path / "first.log").read_text()
        admin = re.search(r"admin key: (bf_admin_[A-Za-z0-9_-]{32})", text)
        sdk = re.search(r"sdk key:\s+(bf_sdk_[A-Za-z0-9_-]{32})", text)
        assert admin and sdk, text
        assert f"serving on {url}" in text
        h = {"Authorization": f"Bearer {admin.group(1)}"}
        assert httpx.get(url + "/v1/flags", headers=h).status_code == 200
        h = {"Authorization": f"Bearer {sdk.group(1)}"}
        assert httpx.get(url + "/v1/flags", headers=h).status_code == 403
    finally:
        assert _stop(proc) == 0  # SIGINT: a clean shutdown
    proc, url = _start(db, tmp_path / "second.log")
    try:
        second = (tmp_path / "second.log").read_text()
        assert "admin key" not in second and admin.group(1) not in second
        assert (
            httpx.get(url + "/v1/flags", headers={"Authorization": f"Bearer {admin.group(1)}"}).status_code
            == 200
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_missing_server_extra_is_a_clear_message() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "from banditflags_server.cli import main\n"
        "sys.exit(main(['serve']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env())
    assert out.returncode == 2
    assert "pip install 'banditflags[server]'" in out.stderr and "Traceback" not in out.stderr


def test_demo_is_registered(capsys: object) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "banditflags_server", "demo", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert out.returncode == 0 and "--duration" in out.stdout
