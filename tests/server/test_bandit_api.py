"""Issue 3 through the HTTP API: stats (SRM, expected loss, winner), auto-promote, guardrail metrics."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from banditflags import Client
from banditflags_server.cli import main


def _create(admin: Any, key: str = "btn", **extra: Any) -> dict[str, Any]:
    r = admin.post("/v1/flags", json={"key": key, "variants": ["a", "b", "c"], **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _events(
    sdk: Any, batch_id: str, flag: str, version: int, n: list[int], s: list[float], **extra: Any
) -> dict[str, Any]:
    body = {
        "batch_id": batch_id,
        "exposures": [{"flag": flag, "version": version, "arm": i, "count": c} for i, c in enumerate(n) if c],
        "rewards": [
            {"flag": flag, "version": version, "arm": i, "count": int(c), "sum": c, "sum_sq": c}
            for i, c in enumerate(s)
            if c
        ],
        **extra,
    }
    r = sdk.post("/v1/events", json=body)
    assert r.status_code == 202, r.text
    out: dict[str, Any] = r.json()
    return out


def test_stats_show_estimates_srm_and_winner(app: Any) -> None:
    _create(app.admin, policy={"name": "fixed"})  # 1/3 each
    _events(app.sdk, "batch-s1", "btn", 1, [3300, 3350, 3350], [330, 335, 502])
    body = app.admin.get("/v1/flags/btn/stats").json()
    rows = body["variants"]
    assert [r["n"] for r in rows] == [3300, 3350, 3350]
    for r in rows:
        assert r["ci_low"] < r["mean"] < r["ci_high"]
        assert 0 <= r["p_best"] <= 1 and r["expected_loss"] >= 0
    assert rows[2]["p_best"] > 0.99 and rows[2]["expected_loss"] < rows[0]["expected_loss"]
    assert body["srm"]["mismatch"] is False and body["srm"]["p_value"] > 0.001
    assert body["periods"][0]["weights"] == pytest.approx([1 / 3] * 3, abs=1e-4)
    assert body["winner"]["variant"] == "c" and body["winner"]["threshold"] == 0.95
    # A biased split: far fewer exposures on "a" than its third of the traffic.
    _events(app.sdk, "batch-s2", "btn", 1, [1000, 0, 0], [100, 0, 0])
    _events(app.sdk, "batch-s3", "btn", 1, [0, 2000, 2000], [0, 200, 300])
    body = app.admin.get("/v1/flags/btn/stats").json()
    assert body["srm"]["mismatch"] is True and body["srm"]["p_value"] < 1e-6
    # Not enough data per arm yet: no winner.
    _create(app.admin, "small", policy={"name": "fixed"})
    _events(app.sdk, "batch-s4", "small", 1, [200, 200, 200], [1, 1, 100])
    assert app.admin.get("/v1/flags/small/stats").json()["winner"]["variant"] is None


def test_auto_promote_rolls_out_the_winner(app: Any) -> None:
    _create(
        app.admin, policy={"name": "thompson", "auto_promote": True, "winner_min_n": 500}, exploration=0.5
    )
    _events(app.sdk, "batch-p1", "btn", 1, [2000, 2000, 2000], [100, 300, 100])
    flag = app.admin.post("/v1/flags/btn/recompute").json()
    assert flag["policy"]["name"] == "fixed" and flag["policy"]["weights"] == [0.0, 1.0, 0.0]
    assert flag["weights"] == [0.0, 1.0, 0.0] and flag["exploration"] == 1.0
    history = app.admin.get("/v1/flags/btn/history").json()["versions"]
    assert history[-1]["reason"] == "promoted"
    # Without auto_promote the winner is only signalled.
    _create(app.admin, "manual", policy={"name": "thompson", "winner_min_n": 500})
    _events(app.sdk, "batch-p2", "manual", 1, [2000, 2000, 2000], [100, 300, 100])
    flag = app.admin.post("/v1/flags/manual/recompute").json()
    assert flag["policy"]["name"] == "thompson"
    assert app.admin.get("/v1/flags/manual/stats").json()["winner"]["variant"] == "b"


def test_metric_rows_are_validated_and_old_batches_still_work(app: Any) -> None:
    _create(app.admin, guardrails=[{"metric": "errors"}])
    old = _events(app.sdk, "batch-m1", "btn", 1, [10, 10, 10], [1, 2, 3])  # an older SDK: no metric
    assert old["rewards"] == 3 and old["ignored"] == []
    row = {"flag": "btn", "version": 1, "arm": 0, "count": 2, "sum": 2.0, "sum_sq": 2.0}
    r = app.sdk.post("/v1/events", json={"batch_id": "batch-m2", "rewards": [{**row, "metric": "Bad Name"}]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "rewards[0].metric"
    body = _events(app.sdk, "batch-m3", "btn", 1, [], [], rewards=[
        {**row, "metric": "errors"}, {**row, "metric": "latency"}, {**row, "metric": "errors", "sum": 5.0},
        {**row, "metric": None},
    ])  # fmt: skip
    assert body["rewards"] == 2
    assert body["ignored"] == [
        {"field": "rewards[1]", "reason": "unknown metric"},
        {"field": "rewards[2]", "reason": "binary metric sum out of range"},
    ]
    stats = app.admin.get("/v1/flags/btn/stats").json()["variants"]
    assert stats[0]["rewards"] == 1 + 2  # the metric rows did not touch the objective
    bad = app.admin.post("/v1/flags", json={"key": "x", "variants": ["a", "b"],
                                             "guardrails": [{"metric": "e", "tolerance": -1}]})  # fmt: skip
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "guardrails[0].tolerance"
    r = app.admin.patch("/v1/flags/btn", json={"disabled": ["a"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "disabled[0]"  # the control


def test_guardrail_disables_a_harmful_arm_end_to_end(server: Any, admin: httpx.Client) -> None:
    """SDK decisions and track(metric=...) over HTTP; a recompute disables the arm; operator re-enables."""
    _create(admin, "g", policy={"name": "fixed"},
            guardrails=[{"metric": "errors", "direction": "minimize", "tolerance": 0.2}])  # fmt: skip
    error_rate = {"a": 0.02, "b": 0.30, "c": 0.02}
    rnd = random.Random(5)
    with Client(server.url, sdk_key=server.sdk_key, flush_interval=60) as client:
        assert client.wait_until_ready(10)
        for i in range(3000):
            d = client.decide("g", f"user-{i}")
            assert d.reason == "split"
            assert client.track(d, reward=1.0 if rnd.random() < 0.1 else 0.0)
            if rnd.random() < error_rate[d.variant]:
                assert client.track(d, reward=1, metric="errors")
        assert not client.track("g", "user-1", reward=1, metric="Not A Metric")
        assert client.flush(10)
    flag = admin.post("/v1/flags/g/recompute").json()
    assert flag["weights"][1] == 0.0 and flag["bandit_weights"][1] == 0.0
    assert flag["weights"][0] > 0.4 and flag["weights"][2] > 0.4
    (record,) = flag["disabled"]
    assert record["variant"] == "b" and record["by"] == "guardrail" and "errors" in record["reason"]
    assert admin.get("/v1/flags/g/history").json()["versions"][-1]["reason"] == "guardrail"
    # The operator re-enables it; the guardrail does not override the operator afterwards.
    flag = admin.patch("/v1/flags/g", json={"disabled": []}).json()
    assert flag["disabled"] == [] and flag["weights"][1] > 0.3
    flag = admin.post("/v1/flags/g/recompute").json()
    assert flag["disabled"] == [] and flag["weights"][1] > 0.3
    # And can disable an arm by hand.
    flag = admin.patch("/v1/flags/g", json={"disabled": ["c"]}).json()
    assert flag["weights"][2] == 0.0 and flag["disabled"][0]["by"] == "operator"


def test_simulate_command_runs_a_small_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "aa.svg"
    rc = main(["simulate", "--scenario", "aa", "-r", "3", "--steps", "8", "--batch", "300",
               "--policies", "thompson,banditflags", "--plot", str(plot), "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "| banditflags |" in out and "| thompson |" in out and "max share" in out
    assert plot.read_text().startswith("<svg") and "</svg>" in plot.read_text()
    rc = main(["simulate", "--scenario", "switch", "-r", "2", "--steps", "10", "--no-progress",
               "--policies", 'uniform,mine={"name": "ucb1"}', "--arms", "0.1,0.2"])  # fmt: skip
    assert rc == 0 and "| mine |" in capsys.readouterr().out
    for bad in (["--arms", "0.1"], ["--policies", "nope"], ["--policies", 'x={"floor": 9}'], ["-r", "0"],
                ["--plot", "x.gif"]):  # fmt: skip
        assert main(["simulate", "--no-progress", *bad]) == 2
        assert "banditflags simulate:" in capsys.readouterr().err


def test_simulate_refuses_a_png_without_matplotlib_before_running(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    from banditflags_server.cli import simulate

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a)
    )
    ran: list[object] = []
    monkeypatch.setattr(simulate, "simulate", lambda *a, **k: ran.append(a))
    assert main(["simulate", "--no-progress", "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "needs matplotlib" in err and "banditflags[sim]" in err and not ran
    assert not (tmp_path / "x.png").exists()


def test_simulate_segments_compares_global_independent_pooled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "seg.svg"
    rc = main(["simulate", "--scenario", "segments", "-r", "2", "--steps", "4", "--batch", "400",
               "--draws", "200", "--plot", str(plot), "--no-progress"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "9 segments (7 share the population's best arm)" in out
    for name in ("global", "independent", "pooled"):
        assert f"| {name} |" in out
    assert "vs independent" in out and plot.read_text().startswith("<svg")
    for bad in (["--policies", "thompson"], ["--arms", "0.1,0.2"], ["--delay", "1"], ["-r", "0"]):
        assert main(["simulate", "--scenario", "segments-alike", "--no-progress", *bad]) == 2
        assert "banditflags simulate:" in capsys.readouterr().err
