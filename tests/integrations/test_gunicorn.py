"""gunicorn --preload with 2 workers running examples/flask_app.py against the real server.

The client is created (and its threads started) in the master before the workers fork. Every worker
must answer at once while the server is down (bounded start-up), pick up the configuration when the
server comes back, follow a kill switch and a weight change, and the server's counts must equal the
decisions and conversions the workers answered: nothing duplicated or lost across the fork, nothing
lost when the workers exit.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from bf_apps import Traffic, app_down_at_start, follow_the_server

pytest.importorskip("gunicorn")
pytest.importorskip("flask")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gunicorn needs fork")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_preloaded_workers_follow_the_server_and_count_exactly(
    flags: Any, spawn: Any, env_for: Any, wait: Any, python: str
) -> None:
    port, env = app_down_at_start(flags, env_for)
    args = [python, "-m", "gunicorn", "--preload", "-w", "2", "-b", f"127.0.0.1:{port}"]
    args += ["--timeout", "20", "--graceful-timeout", "20", "--chdir", str(EXAMPLES), "flask_app:app"]
    gunicorn = spawn(args, env, "gunicorn")
    pids: set[int] = set()

    def booted() -> bool:
        pids.update(int(p) for p in re.findall(r"Booting worker with pid: (\d+)", gunicorn.log()))
        return len(pids) == 2

    wait(booted, 30.0, "two gunicorn workers")
    app = Traffic(f"http://127.0.0.1:{port}")
    follow_the_server(flags, app, pids, wait)

    assert gunicorn.stop() == 0  # graceful: each worker flushes what it still holds at exit
    log = gunicorn.log()
    assert "Traceback" not in log, log
    expected = app.expected()
    assert sum(n for n, _ in expected.values()) > 400
    assert flags.periods("checkout-button") == expected
