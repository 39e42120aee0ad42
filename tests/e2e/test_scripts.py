"""``scripts/test`` installs the console tests' browser only when asked (issue 11): a first run must not
apt-get a hundred system packages as root without asking. CI asks (``.ci/run``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _browser(
    tmp_path: Path, *, opt_in: bool, uid: int, chromium: str = "/nonexistent/chromium"
) -> tuple[str, str]:
    """``bf_browser`` of scripts/_env.sh with stub ``apt-get`` and ``id``: (apt-get calls, stderr)."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    log = tmp_path / "apt.log"
    (stubs / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (stubs / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "BANDITFLAGS_INSTALL_BROWSER"}
    env.update(PATH=f"{stubs}:{env['PATH']}", BF_CHROMIUM=chromium)
    if opt_in:
        env["BANDITFLAGS_INSTALL_BROWSER"] = "1"
    done = subprocess.run(
        ["bash", "-c", f"source {ROOT / 'scripts' / '_env.sh'} && bf_browser"],
        env=env, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return (log.read_text() if log.exists() else ""), done.stderr


def test_without_the_opt_in_nothing_is_installed_and_the_skip_is_explained(tmp_path: Path) -> None:
    calls, err = _browser(tmp_path, opt_in=False, uid=0)
    assert calls == ""
    assert "browser tests will be skipped" in err and "--install-browser" in err


@pytest.mark.parametrize(("uid", "installs"), [(0, True), (1000, False)])
def test_the_opt_in_installs_as_root_only(tmp_path: Path, uid: int, installs: bool) -> None:
    calls, err = _browser(tmp_path, opt_in=True, uid=uid)
    assert calls.splitlines() == (["update -q", "install -y -q chromium"] if installs else [])
    assert ("needs root" in err) is not installs


def test_a_present_browser_needs_nothing(tmp_path: Path) -> None:
    assert _browser(tmp_path, opt_in=True, uid=0, chromium="/bin/sh") == ("", "")


def test_ci_opts_in_and_scripts_test_takes_the_option() -> None:
    assert "export BANDITFLAGS_INSTALL_BROWSER=1" in (ROOT / ".ci" / "run").read_text()
    script = (ROOT / "scripts" / "test").read_text()
    assert '"--install-browser" ]' in script and "bf_browser" in script
