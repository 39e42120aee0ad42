"""`banditflags demo`: the real server in-process, the real SDK over HTTP, simulated users."""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import time

from banditflags_server.cli import demo


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_demo_learns_and_reports(tmp_path: object) -> None:
    out = io.StringIO()
    args = _args(
        "--duration",
        "6",
        "--rate",
        "2000",
        "--rates",
        "0.02,0.02,0.30",
        "--recompute-interval",
        "1",
        "--report-every",
        "2",
        "--seed",
        "3",
    )
    assert demo.run(args, out=out) == 0
    text = out.getvalue()
    assert "server at http://127.0.0.1:" in text
    assert "done:" in text and "best variant is 'orange'" in text
    last = text.rsplit("users · allocation", 1)[1]
    orange = next(line for line in last.splitlines() if line.strip().startswith("orange"))
    share = float(orange.split("%")[1].split()[-1])  # "true 30.00%  ███ 97.9%" -> 97.9
    assert share > 50.0, text[-2000:]


def test_demo_rejects_bad_rates() -> None:
    try:
        demo.run(_args("--rates", "0.1,2"), out=io.StringIO())
    except SystemExit as exc:
        assert "--rates" in str(exc)
    else:
        raise AssertionError("bad --rates accepted")


def test_ctrl_c_stops_the_demo_cleanly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "banditflags_server", "demo", "--duration", "0", "--report-every", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        lines = []
        while time.monotonic() < deadline:  # wait for the first report, then interrupt
            line = proc.stdout.readline()
            lines.append(line)
            if "users · allocation" in line:
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopped (Ctrl-C)" in rest
    assert "Traceback" not in rest
