"""``banditflags flags ...`` against the real server: tables, every action, and the exit codes scripts
rely on (0 ok, 1 server/network, 2 usage or refused key, 3 not found, 4 rejected input)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from banditflags_server.cli import main


def test_create_list_show(cli: Any, admin: Any) -> None:
    code, out, _ = cli(
        "create", "checkout-button", "--variant", 'blue="#00f"', "--variant", "green", "--control", "blue",
        "--param", "burn_in=50", "--description", "button colour", "--reason", "launch",
    )  # fmt: skip
    assert code == 0 and "checkout-button: created (running)" in out
    flag = admin.get("/v1/flags/checkout-button").json()
    assert flag["variants"][0] == {"key": "blue", "value": "#00f"} and flag["policy"]["burn_in"] == 50
    code, out, _ = cli("list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["KEY", "STATE", "EXPLORE"]
    assert lines[1].split()[:3] == ["checkout-button", "running", "100%"]
    code, out, _ = cli("list", "--state", "killed")
    assert code == 0 and out.strip() == "no flags"
    code, out, _ = cli("show", "checkout-button")
    assert code == 0 and "checkout-button  [running]" in out and "blue (control)" in out
    assert "create" in out and "launch" in out
    code, out, _ = cli("show", "checkout-button", "--json")
    assert code == 0 and json.loads(out)["audit"][0]["action"] == "create"


def test_controls_and_audit(cli: Any, admin: Any, server: Any) -> None:
    assert admin.post("/v1/flags", json={"key": "f", "variants": ["a", "b"]}).status_code == 201
    code, out, _ = cli("throttle", "f", "20%", "--reason", "sale")
    assert code == 0 and "exploration 100% -> 20%" in out
    assert admin.get("/v1/flags/f").json()["exploration"] == 0.2
    assert cli("freeze", "f")[0] == 0
    code, out, _ = cli("kill", "f", "--reason", "errors")
    assert code == 0 and "killed (was frozen)" in out and "'a'" in out
    assert cli("kill", "f")[1].strip() == "f: already killed; nothing to do"
    code, out, _ = cli("unkill", "f")
    assert code == 0 and "frozen (was killed)" in out  # back to the state before the kill
    assert cli("unkill", "f")[1].strip() == "f: not killed (frozen); nothing to do"
    assert cli("resume", "f")[0] == 0
    assert cli("kill", "f")[0] == 0
    assert cli("unkill", "f", "--to", "frozen")[0] == 0
    assert admin.get("/v1/flags/f").json()["state"] == "frozen"
    audit = admin.get("/v1/flags/f/audit").json()["entries"]
    actions = [e["action"] for e in reversed(audit)]
    assert actions == ["create", "throttle", "freeze", "kill", "unkill", "resume", "kill", "unkill"]
    assert {e["actor"] for e in audit} == {"env-admin"}
    assert [e["reason"] for e in audit if e["reason"]] == ["errors", "sale"]
    assert server.admin_key not in json.dumps(audit)


def test_exit_codes(cli: Any, admin: Any, server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert admin.post("/v1/flags", json={"key": "f", "variants": ["a", "b"]}).status_code == 201
    code, _, err = cli("show", "nope")
    assert code == 3 and "not found" in err
    assert cli("kill", "nope")[0] == 3
    code, _, err = cli("create", "f", "--variant", "a")
    assert code == 4 and "exists already" in err
    code, _, err = cli("create", "Bad", "--variant", "a", "--variant", "a")
    assert code == 4 and "key" in err and "variants[1].key" in err
    code, _, err = cli("throttle", "f", "1.5")
    assert code == 4 and "exploration" in err
    assert admin.get("/v1/flags/f").json()["exploration"] == 1.0  # nothing changed
    assert cli("throttle", "f", "lots")[0] == 2
    assert cli("create", "g")[0] == 2  # no variants
    assert cli("list", "--admin-key", server.sdk_key)[0] == 2  # refused: an sdk key
    assert cli("list", "--admin-key", "bf_admin_wrong")[0] == 2
    assert cli("list", "--url", "ftp://x")[0] == 2
    code, _, err = cli("list", "--url", "http://127.0.0.1:9", "--timeout", "2")
    assert code == 1 and "cannot reach" in err
    monkeypatch.delenv("BANDITFLAGS_ADMIN_KEY")
    code, _, err = cli("list")
    assert code == 2 and "no admin key" in err
    assert cli()[0] == 2
    with pytest.raises(SystemExit) as exc:
        main(["flags", "bogus"])
    assert exc.value.code == 2


def test_create_from_a_file_and_the_installed_command(cli: Any, server: Any, tmp_path: Any) -> None:
    spec = tmp_path / "flag.json"
    spec.write_text(json.dumps({"variants": ["a", "b"], "policy": {"name": "fixed", "weights": [9, 1]}}))
    code, out, _ = cli("create", "rollout", "--file", str(spec))
    assert code == 0 and "a=90% b=10%" in out
    # The real entry point, as a script would call it: the exit code comes through.
    env = {"BANDITFLAGS_URL": server.url, "BANDITFLAGS_ADMIN_KEY": server.admin_key, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "banditflags_server", "flags", "show", "missing"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 3 and "not found" in proc.stderr


def test_throttle_takes_a_share_or_a_percentage_and_explains_the_range(cli: Any, admin: Any) -> None:
    assert admin.post("/v1/flags", json={"key": "t", "variants": ["a", "b"]}).status_code == 201
    for typed, share in (("15%", 0.15), ("0.15", 0.15), (" 40 % ", 0.4), ("100%", 1.0), ("0", 0.0)):
        code, _, err = cli("throttle", "t", typed)
        assert code == 0, err
        assert admin.get("/v1/flags/t").json()["exploration"] == pytest.approx(share)
    code, _, err = cli("throttle", "t", "150%")
    assert code == 4 and "out of range" in err and "0% to 100%" in err and "share of traffic" in err
    code, _, err = cli("throttle", "t", "15")
    assert code == 4 and "did you mean 15%?" in err
    assert admin.get("/v1/flags/t").json()["exploration"] == 0.0  # nothing changed
    code, _, err = cli("throttle", "t", "lots")
    assert code == 2 and "20%" in err


def test_show_and_list_a_killed_flag_say_what_is_served(cli: Any, admin: Any) -> None:
    body = {
        "key": "k",
        "variants": ["a", "b"],
        "control": "b",
        "policy": {"name": "fixed", "weights": [3, 1]},
    }
    assert admin.post("/v1/flags", json=body).status_code == 201
    code, out, _ = cli("show", "k")
    assert code == 0 and "WEIGHT" in out and "SERVED" not in out
    assert cli("kill", "k")[0] == 0
    code, out, _ = cli("show", "k")
    assert code == 0 and "every unit is served the control 'b'" in out and "(a=75% b=25%)" in out
    rows = {line.split()[0]: line.split()[-2:] for line in out.splitlines() if line.startswith(("a ", "b "))}
    assert rows == {"a": ["0.0%", "75.0%"], "b": ["100.0%", "25.0%"]}  # SERVED, KEPT
    code, out, _ = cli("list")
    assert code == 0 and "a=0% b=100% (killed)" in out
    code, out, _ = cli("throttle", "k", "50%")
    assert code == 0 and "kept split" in out and "served until unkill" in out


def test_one_variant_makes_a_plain_flag(cli: Any, admin: Any) -> None:
    code, _, err = cli("create", "plain", "--variant", "on")
    assert code == 0, err
    assert admin.get("/v1/flags/plain").json()["policy"]["name"] == "fixed"
    code, _, err = cli("create", "nope", "--variant", "on", "--policy", "thompson")
    assert code == 4 and "plain flag, not an experiment" in err
