"""A stand-in for the AWS Lambda Python runtime, run as its own process (one "container").

    python lambda_runtime.py path/to/module.py handler_name

Imports the module once (the cold start), then serves invocations read from stdin, one JSON line
each: ``{"event": ..., "remaining_ms": N}``. The handler gets ``(event, context)`` where
``context.get_remaining_time_in_millis()`` counts down from N. Each answer is one JSON line on stdout:
``{"result": ...}`` or ``{"error": "..."}``, plus ``"threads"``: the threads other than the main
one alive after the invocation (Lambda freezes the process between invocations: any thread would
stop mid-flight). The test freezes the process between invocations with SIGSTOP/SIGCONT.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from typing import Any


class Context:
    def __init__(self, remaining_ms: int) -> None:
        self._deadline = time.monotonic() + remaining_ms / 1000.0
        self.function_name = "banditflags-test"
        self.aws_request_id = "req"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> None:
    path, name = sys.argv[1], sys.argv[2]
    spec = importlib.util.spec_from_file_location("function_module", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, name)
    out = sys.stdout
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        answer: dict[str, Any] = {}
        try:
            answer["result"] = handler(req["event"], Context(int(req.get("remaining_ms", 3000))))
        except Exception as exc:
            answer["error"] = f"{type(exc).__name__}: {exc}"
        answer["threads"] = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        print(json.dumps(answer), file=out, flush=True)


if __name__ == "__main__":
    main()
