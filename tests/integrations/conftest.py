"""Fixtures of the integration tests: a flag on a live server, process helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


class Flags:
    """Admin helpers for one live server."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.admin = server.client("admin")

    def create(
        self, key: str = "checkout-button", weights: tuple[float, ...] = (0.5, 0.5), **extra: Any
    ) -> Any:
        variants = [{"key": "blue", "value": "#00f"}, {"key": "green", "value": "#0f0"}]
        body = {
            "key": key,
            "variants": variants[: len(weights)],
            "control": "blue",
            "objective": {"reward": "binary", "direction": "maximize", "unit": "decision"},
            "policy": {"name": "fixed", "weights": list(weights)},
            **extra,
        }
        r = self.admin.post("/v1/flags", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def patch(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.admin.patch(f"/v1/flags/{key}", json=body)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def periods(self, key: str) -> dict[tuple[int, int], tuple[int, int]]:
        """(version, arm) -> (exposures, rewards) as the server stored them."""
        r = self.admin.get(f"/v1/flags/{key}/stats")
        assert r.status_code == 200, r.text
        out: dict[tuple[int, int], tuple[int, int]] = {}
        for p in r.json()["periods"]:
            for arm, (n, rw) in enumerate(zip(p["n"], p["rewards"], strict=True)):
                if n or rw:
                    out[(p["version"], arm)] = (n, rw)
        return out


@pytest.fixture
def flags(live_server: Callable[..., Any]) -> Iterator[Flags]:
    f = Flags(live_server())
    yield f
    f.admin.close()


class Proc:
    """A subprocess with its output in a file, stopped (SIGTERM, then SIGKILL) at the end of the test."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.log_path = log
        with open(log, "ab") as fh:
            # Its own process group, so a worker it forked cannot outlive the test (a hung uWSGI worker
            # once did, reparented to init, after its master was killed).
            self.proc = subprocess.Popen(
                args,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"did not stop within {timeout} s after SIGTERM:\n{self.log()}"
                ) from None
        return self.proc.returncode


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    started: list[Proc] = []

    def make(args: list[str], env: dict[str, str], name: str, cwd: Path | None = None) -> Proc:
        p = Proc(args, env, tmp_path / f"{name}.log", cwd)
        started.append(p)
        return p

    yield make
    for p in started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.proc.pid, signal.SIGKILL)  # the whole group: workers included
        if p.proc.poll() is None:
            p.proc.kill()
        p.proc.wait()


def sdk_env(server: Any, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITFLAGS_")}
    env.update(BANDITFLAGS_URL=server.url, BANDITFLAGS_SDK_KEY=server.sdk_key, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


@pytest.fixture
def env_for() -> Callable[..., dict[str, str]]:
    """``env_for(server, **extra)``: the environment of a process using the SDK against ``server``."""
    return sdk_env


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def wait() -> Callable[[Callable[[], bool], float, str], None]:
    """``wait(pred, timeout, what)``: poll until ``pred()`` (raises with ``what`` on timeout)."""
    return wait_for


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


@pytest.fixture
def python() -> str:
    return sys.executable
