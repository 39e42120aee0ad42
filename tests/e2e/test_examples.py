"""The examples run against the real server, as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_quickstart_runs_against_a_live_server(live_server: Any) -> None:
    server = live_server()
    env = dict(
        os.environ,
        BANDITFLAGS_URL=server.url,
        BANDITFLAGS_ADMIN_KEY=server.admin_key,
        BANDITFLAGS_SDK_KEY=server.sdk_key,
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "flushed: True" in result.stdout
    assert "weights after one recompute" in result.stdout
    assert server.admin_key not in result.stdout
