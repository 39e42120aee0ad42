"""uWSGI (master + 2 forked workers) running examples/flask_app.py against the real server.

uWSGI imports the app in the master and forks the workers from C, so Python's ``os.register_at_fork``
hooks run only with ``py-call-osafterfork``; otherwise the app calls ``client.after_fork()`` from a
``@uwsgidecorators.postfork`` function (docs/integrations.md); with neither, the client notices the new
process on its first use. In the master (where the example's client is made and waits for its first
config) the client runs no thread: uWSGI forks from C after the master has given up the GIL, and a
thread of ours holding it at that instant hung a worker for good (seen once in this test, before the
client learned to stay thread-free there). Every set-up must behave as under
gunicorn: defaults at once while the server is down, the split when it is back, kill switch and weight
changes followed by every worker, and the server's counts equal to what the workers answered, nothing
lost when the workers exit.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from bf_apps import Traffic, app_down_at_start, follow_the_server

pytest.importorskip("flask")
UWSGI = shutil.which("uwsgi", path=str(Path(sys.executable).parent))
pytestmark = [
    pytest.mark.skipif(UWSGI is None, reason="uwsgi is not installed (the dev extra's pyuwsgi)"),
    pytest.mark.slow,
]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# The documented alternative to py-call-osafterfork: restart the client in each worker by hand.
POSTFORK_APP = """\
import uwsgidecorators

from flask_app import app, client

uwsgidecorators.postfork(client.after_fork)
"""


@pytest.mark.parametrize("fork_hook", ["py-call-osafterfork", "postfork", "none"])
def test_forked_workers_follow_the_server_and_count_exactly(
    fork_hook: str, flags: Any, spawn: Any, env_for: Any, wait: Any, tmp_path: Path
) -> None:
    port, env = app_down_at_start(flags, env_for)
    assert UWSGI is not None
    args = [UWSGI, "--master", "--processes", "2", "--http-socket", f"127.0.0.1:{port}"]
    # SIGTERM -> graceful shutdown (uWSGI's idiom; --die-on-term is a brutal one that can cut a worker's
    # final flush short: seen losing one worker's last second of counts in 1 of 5 runs).
    args += ["--hook-master-start", "unix_signal:15 gracefully_kill_them_all"]
    args += ["--enable-threads", "--need-app", "--worker-reload-mercy", "20"]
    args += ["--chdir", str(EXAMPLES), "--pythonpath", str(EXAMPLES)]
    if fork_hook == "py-call-osafterfork":
        args += ["--py-call-osafterfork", "--module", "flask_app:app"]
    elif fork_hook == "none":  # the client notices the fork on its first use in each worker
        args += ["--module", "flask_app:app"]
    else:
        (tmp_path / "postfork_app.py").write_text(POSTFORK_APP)
        args += ["--pythonpath", str(tmp_path), "--module", "postfork_app:app"]
    uwsgi = spawn(args, env, "uwsgi")
    pids: set[int] = set()

    def booted() -> bool:
        pids.update(int(p) for p in re.findall(r"spawned uWSGI worker \d+ \(pid: (\d+)", uwsgi.log()))
        return len(pids) == 2

    wait(booted, 30.0, "two uWSGI workers")
    # uWSGI's http-socket closes every connection (no keep-alive), and with several clients at once a few
    # of them get a reset instead of the answer (11 of 3,000 requests at 8 concurrent clients, 1 test run in
    # 6 at 2; strace shows the worker wrote each response before closing): the decision is made but the
    # answer is lost, which would spoil the exact counts. Production puts a proxy in front; here 1 client.
    app = Traffic(f"http://127.0.0.1:{port}", keepalive=False, concurrency=1)
    follow_the_server(flags, app, pids, wait)

    uwsgi.stop()  # SIGTERM, graceful: the workers exit and flush what they still hold
    log = uwsgi.log()
    assert "Traceback" not in log, log
    expected = app.expected()
    assert sum(n for n, _ in expected.values()) > 400
    assert flags.periods("checkout-button") == expected
