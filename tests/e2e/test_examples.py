"""The examples run against the real server, as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run_example(server: Any, name: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` as a user would, pointed at ``server`` through the environment."""
    env = dict(
        os.environ,
        BANDITFLAGS_URL=server.url,
        BANDITFLAGS_ADMIN_KEY=server.admin_key,
        BANDITFLAGS_SDK_KEY=server.sdk_key,
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result


def test_quickstart_runs_against_a_live_server(live_server: Any) -> None:
    server = live_server()
    result = _run_example(server, "quickstart.py")
    assert "flushed: True" in result.stdout
    assert "weights after one recompute" in result.stdout
    assert server.admin_key not in result.stdout


def test_otel_example_prints_a_trace_with_decision_and_reward(live_server: Any) -> None:
    import json

    server = live_server()
    result = _run_example(server, "otel_tracing.py")
    assert "flushed: True" in result.stdout
    # the console exporter prints one JSON object per span
    decoder, spans, i = json.JSONDecoder(), {}, 0
    out = result.stdout
    while (i := out.find("{", i)) != -1:
        span, end = decoder.raw_decode(out, i)
        spans[span["name"]] = span
        i = end
    decision, checkout, purchase = (
        spans["feature_flag.evaluation"],
        spans["GET /checkout"],
        spans["POST /purchase"],
    )
    assert decision["parent_id"] == checkout["context"]["span_id"]
    assert decision["attributes"]["feature_flag.key"] == "checkout-button"
    assert decision["attributes"]["feature_flag.result.reason"] == "split"
    (event,) = purchase["events"]
    assert event["name"] == "banditflags.reward" and event["attributes"]["banditflags.reward"] == 1.0
    (link,) = purchase["links"]
    assert link["context"]["span_id"] == decision["context"]["span_id"]
    assert link["context"]["trace_id"] == decision["context"]["trace_id"] != purchase["context"]["trace_id"]
    # bf2:flag:version:arm:did:trace:span (docs/protocol.md, tokens)
    token_ids = result.stdout.split("token=")[1].split()[0].split(":")[5:]
    assert ["0x" + token_ids[0], "0x" + token_ids[1]] == [
        decision["context"]["trace_id"],
        decision["context"]["span_id"],
    ]
