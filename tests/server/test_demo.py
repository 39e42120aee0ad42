"""`banditflags demo`: the real server in-process, the real SDK over HTTP, simulated users; the default
allocation and the segment bandit of rule ``dach`` (users from DE, AT, CH) converge to different arms."""

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


def _shares(lines: list[str]) -> dict[str, float]:
    """``{"blue": 1.0, ...}`` from one block's variant lines: "orange  true 30.00%  ███ 97.9%" -> 97.9."""
    return {line.split()[0]: float(line.split("%")[1].split()[-1]) for line in lines}


def test_demo_learns_and_reports(tmp_path: object) -> None:
    out = io.StringIO()
    args = _args(
        "--duration", "6", "--rate", "2000", "--rates", "0.02,0.02,0.30", "--segment-rates", "0.02,0.30,0.02",
        "--recompute-interval", "1", "--report-every", "2", "--seed", "3",
    )  # fmt: skip
    assert demo.run(args, out=out) == 0
    text = out.getvalue()
    assert "server at http://127.0.0.1:" in text
    assert "rule 'dach': users from DE, AT, CH (30% of the traffic)" in text
    assert "done:" in text and "best variant is 'orange'" in text and "rule 'dach': 'green'" in text
    last = text.rsplit("users · allocation", 1)[1].splitlines()
    # The last report: the default allocation's three variants, then the rule's header and three variants.
    assert last[1].startswith("   default allocation: everyone else")
    rule = next(i for i, line in enumerate(last) if line.startswith("   rule 'dach'"))
    default, segment = _shares(last[2:5]), _shares(last[rule + 1 : rule + 4])
    assert max(default, key=default.__getitem__) == "orange" and default["orange"] > 50.0, text[-2500:]
    assert max(segment, key=segment.__getitem__) == "green" and segment["green"] > 50.0, text[-2500:]
    version = int(last[rule].split("allocation v")[1].split()[0])
    assert version > 1  # the rule's own allocation moved, apart from the flag's
    users = int(last[rule].split("·")[1].split()[0].replace(",", ""))
    total = int(text.rsplit("users · allocation", 1)[0].rsplit("]", 1)[1].split()[0].replace(",", ""))
    assert 0.2 * total < users < 0.4 * total  # the 30% from DE, AT, CH, routed by the SDK


def test_demo_rejects_bad_rates() -> None:
    for argv, option in (
        (("--rates", "0.1,2"), "--rates"),
        (("--segment-rates", "0.1,0.2,x"), "--segment-rates"),
        (("--segment-share", "1.5"), "--segment-share"),
    ):
        try:
            demo.run(_args(*argv), out=io.StringIO())
        except SystemExit as exc:
            assert option in str(exc)
        else:
            raise AssertionError(f"bad {option} accepted")


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
