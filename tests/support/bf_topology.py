"""A real topology on loopback: N server replicas on one PostgreSQL database behind HAProxy, and SDK
load in separate processes. Used by tests/topology (a bounded run) and bench/bench_topology.py (longer,
per replica count).

Everything binds to 127.0.0.1, every process is started here and stopped by :meth:`Topology.close`
(replicas get SIGTERM, then SIGKILL), and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
WORKER = HERE / "bf_load_worker.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def haproxy_config(port: int, backends: list[int], stats_port: int, *, no_delay: bool = True) -> str:
    """Round robin with active health checks every 200 ms; a replica marked down has its sessions
    (streams included) cut so clients reconnect to a live one; long-lived streams as tunnels.

    ``option http-no-delay``: without it HAProxy sends a streamed body's chunks with ``MSG_MORE`` and
    the kernel holds each small ``config`` event up to 200 ms waiting for more (a kill switch measured
    ~220 ms through HAProxy against ~15 ms straight to a replica). ``timeout check 1s``: without it a
    check must answer within ``inter`` (200 ms), so two slow answers from a busy replica mark it down and
    cut every stream on it; a killed replica still fails its check at once (connection refused)."""
    servers = "\n".join(
        f"    server r{i} 127.0.0.1:{p} check inter 200ms fall 2 rise 2 on-marked-down shutdown-sessions"
        for i, p in enumerate(backends)
    )
    return (
        textwrap.dedent(
            """\
        global
            maxconn 4096
        defaults
            mode http
            timeout connect 1s
            timeout client 60s
            timeout server 60s
            timeout tunnel 1h
            timeout check 1s
            retries 2
            option redispatch
        frontend fe
            bind 127.0.0.1:{port}
            default_backend be
        frontend stats
            bind 127.0.0.1:{stats_port}
            http-request return status 200 content-type text/plain string ok
        backend be
            balance roundrobin
            option httpchk GET /healthz
            {no_delay}
            http-check expect status 200
        """
        ).format(port=port, stats_port=stats_port, no_delay="option http-no-delay" if no_delay else "")
        + servers
        + "\n"
    )


@dataclass
class Replica:
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Topology:
    """``replicas`` servers on ``db`` (a PostgreSQL URL) behind one HAProxy on :attr:`url`."""

    db: str
    workdir: Path
    replicas: int = 3
    env: dict[str, str] = field(default_factory=dict)
    no_delay: bool = True  # HAProxy's ``option http-no-delay`` (bench_stream_balancer.py compares)
    admin_key: str = field(default_factory=lambda: "bf_admin_" + secrets.token_urlsafe(24))
    sdk_key: str = field(default_factory=lambda: "bf_sdk_" + secrets.token_urlsafe(24))

    def __post_init__(self) -> None:
        self.nodes = [Replica(free_port()) for _ in range(self.replicas)]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.haproxy: subprocess.Popen[bytes] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Topology:
        for i, node in enumerate(self.nodes):
            self._start_node(i, node)
        for node in self.nodes:
            self._wait(node.url + "/healthz", node.proc)
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(
            haproxy_config(self.port, [n.port for n in self.nodes], free_port(), no_delay=self.no_delay)
        )
        exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
        log = open(self.workdir / "haproxy.log", "ab")  # noqa: SIM115
        self.haproxy = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
        self._wait(self.url + "/healthz", self.haproxy)
        return self

    def _start_node(self, i: int, node: Replica) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BANDITFLAGS_")}
        env.update(
            BANDITFLAGS_ADMIN_KEY=self.admin_key,
            BANDITFLAGS_SDK_KEY=self.sdk_key,
            BANDITFLAGS_LOG_LEVEL="warning",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.env)
        log = open(self.workdir / f"replica{i}.log", "ab")  # noqa: SIM115
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "banditflags_server", "serve", "--host", "127.0.0.1",
             "--port", str(node.port), "--db", self.db],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    @staticmethod
    def _wait(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process for {url} exited with {proc.returncode}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{url} did not answer in {timeout} s")

    def balancer_events(self) -> list[str]:
        """HAProxy's warnings and alerts so far (servers marked down or up), for failure messages."""
        return [line for line in self.log("haproxy.log").splitlines() if "WARNING" in line or "ALERT" in line]

    def log(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(5)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait()

    def __enter__(self) -> Topology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- looking at it ------------------------------------------------------------------------------

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=30
        )

    def metrics(self, node: Replica) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            text = httpx.get(node.url + "/metrics", timeout=5.0).text
        except httpx.HTTPError:
            return out
        for line in text.splitlines():
            m = re.match(r"^(banditflags_[a-z_]+(?:\{[^}]*\})?)\s+(\S+)$", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def leaders(self) -> list[int]:
        """Indexes of the live replicas that say they hold the recompute lease."""
        return [
            i
            for i, n in enumerate(self.nodes)
            if n.alive() and self.metrics(n).get("banditflags_recompute_leader") == 1.0
        ]


# -- SDK load in other processes ----------------------------------------------------------------------


def start_workers(
    url: str, key: str, flag: str, n: int, seconds: float, rate: float, out_dir: Path, reward_every: int = 7
) -> list[subprocess.Popen[bytes]]:
    """``n`` processes, each deciding ``rate`` distinct units a second for ``seconds`` through the SDK and
    crediting every ``reward_every``-th decision; each writes its own counts to ``out_dir``."""
    procs = []
    for i in range(n):
        out = out_dir / f"worker{i}.json"
        log = open(out_dir / f"worker{i}.log", "ab")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(WORKER),
                    url,
                    key,
                    flag,
                    str(seconds),
                    str(rate),
                    str(reward_every),
                    f"w{i}-{secrets.token_hex(3)}",
                    str(out),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def collect(
    procs: list[subprocess.Popen[bytes]], out_dir: Path, timeout: float = 120.0
) -> list[dict[str, Any]]:
    """Wait for the workers (bounded) and read their counts."""
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    results = []
    for i, p in enumerate(procs):
        path = out_dir / f"worker{i}.json"
        if p.returncode != 0 or not path.exists():
            log = (out_dir / f"worker{i}.log").read_text(errors="replace")
            raise RuntimeError(f"worker {i} failed ({p.returncode}):\n{log}")
        results.append(json.loads(path.read_text()))
    return results


def server_totals(admin: httpx.Client, flag: str) -> tuple[int, int]:
    """(exposures, rewards) the database holds for ``flag``, over all versions."""
    r = admin.get(f"/v1/flags/{flag}")
    r.raise_for_status()
    stats = r.json()["stats"]
    return sum(int(s["n"]) for s in stats), sum(int(s["rewards"]) for s in stats)
