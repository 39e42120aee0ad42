"""After os.fork(): the child answers from the inherited snapshot, sends only its own events, and the
parent's unsent counts are sent once (by the parent)."""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from typing import Any

import pytest

from banditflags import Client, Reason

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs fork")


def test_fork(server: Any) -> None:
    client = Client(
        "http://bf.test",
        "bf_sdk_test",
        transport=server.transport,
        refresh_interval=60.0,
        flush_interval=60.0,
    )
    try:
        assert client.wait_until_ready(5.0)
        for i in range(10):
            client.variant("btn", f"parent-{i}")
        config_requests_before = len(server.config_requests)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: report through the pipe, never return into pytest
            code = 1
            try:
                d = client.decide("btn", "child-0")
                report: dict[str, Any] = {"reason": d.reason.value, "variant": d.variant}
                for i in range(1, 5):
                    client.variant("btn", f"child-{i}")
                report["flushed"] = client.flush(5.0)
                report["exposures"] = sum(server.exposures().values())
                names = [t.name for t in threading.enumerate()]
                report["threads"] = len([n for n in names if n.startswith("banditflags-")])
                client.close(1.0)
                with os.fdopen(write_fd, "w") as fh:
                    json.dump(report, fh)
                code = 0
            except BaseException:
                os.write(write_fd, traceback.format_exc().encode())
            finally:
                os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd) as fh:
            raw = fh.read()
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, raw
        report = json.loads(raw)
        # the child answered at once from the inherited snapshot (split, not provider_not_ready)
        assert report["reason"] == Reason.SPLIT.value and report["variant"] in ("a", "b")
        # its own flush delivered exactly its own 5 exposures, none of the parent's 10
        assert report["flushed"] is True and report["exposures"] == 5
        assert report["threads"] == 3  # poll, stream and events: restarted lazily in the child
        # the parent still owns and sends its 10 exposures, once
        assert client.flush(5.0)
        assert sum(server.exposures().values()) == 10
        assert len(server.config_requests) == config_requests_before  # the child's fetches are its own
    finally:
        client.close(1.0)
