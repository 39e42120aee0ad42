"""The package builds with and without a C compiler: the compiled fast path of track() is optional
(setup.py), and an install without it decides and tracks through the Python path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

_PROBE = """
import httpx, banditflags
config = {"schema": 1, "revision": 1, "flags": [{"key": "btn", "salt": "s", "state": "running",
    "exploration": 1.0, "version": 1, "variants": [{"key": "a", "value": 1}, {"key": "b", "value": 2}],
    "control": "a", "weights": [0.5, 0.5], "table": [[0, 5000], [1, 5000]],
    "objective": {"reward": "binary", "unit": "decision"}}]}
def server(request):
    if request.url.path == "/v1/config":
        return httpx.Response(200, json=config)
    return httpx.Response(202, json={})
c = banditflags.Client("http://bf", "bf_sdk_x", transport=httpx.MockTransport(server), background=False)
assert c.refresh()
d = c.decide("btn", "u1")
import banditflags._client as bc
where = bc._speedups.__file__ if bc._speedups is not None else banditflags.__file__
print(where, c.speedups, c.track(d), c.track(d), c.track("btn", "u2"), c.flush(2.0))
"""


@pytest.mark.parametrize("compiler", ["none", "default"])
def test_the_wheel_builds_and_works_with_and_without_a_c_compiler(tmp_path: Path, compiler: str) -> None:
    # A copy of the sources without build/ or an in-place .so: setuptools would reuse a compiled one.
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.so", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
        ),
    )
    env = dict(os.environ)
    if compiler == "none":
        env["CC"] = "false"  # every compile fails, as on a machine without a compiler
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(tmp_path / "w")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "w").glob("banditflags-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    built = any(n.startswith("banditflags/_speedups") and n.endswith((".so", ".pyd")) for n in names)
    assert built is (compiler == "default")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # -S: no site initialisation, so no .pth file, and the editable install of the source tree (whose
    # finder answers for banditflags and its submodules) stays out; the dependencies come from the path.
    deps = sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), *deps]))
    env.pop("BANDITFLAGS_NO_SPEEDUPS", None)
    run = subprocess.run(
        [sys.executable, "-S", "-c", _PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    where, speedups, *answers = run.stdout.split()
    assert where.startswith(str(target))  # the installed wheel, not the source tree
    assert speedups == str(compiler == "default")
    assert answers == ["True", "False", "True", "True"]
