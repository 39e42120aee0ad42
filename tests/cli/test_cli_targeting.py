"""``banditflags flags show|rules|target|untarget`` against the real server: targets and rules replaced
from a JSON document (file or stdin) and printed back, units pinned and released, each bandit rule's
weights and estimates in ``show`` after real SDK traffic, and the server's 4xx naming the field."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
from typing import Any

import pytest

from banditflags import Client

RULES: dict[str, list[dict[str, Any]]] = {
    "targets": [{"variant": "green", "units": ["alice", "bob"]}],
    "rules": [
        {
            "id": "dach",
            "clauses": [{"attribute": "country", "op": "in", "values": ["DE", "AT", "CH"]}],
            "serve": {"bandit": True},
        },
        {
            "id": "staff",
            "clauses": [
                {"attribute": "email", "op": "ends_with", "values": ["@corp.test"]},
                {"attribute": "age", "op": "gte", "values": [18], "negate": True},
            ],
            "serve": {"weights": [1, 3, 0]},
        },
    ],
}


@pytest.fixture
def flag(admin: Any) -> str:
    body = {"key": "checkout", "variants": ["blue", "green", "orange"], "policy": {"burn_in": 20}}
    assert admin.post("/v1/flags", json=body).status_code == 201
    return "checkout"


def test_rules_replace_print_and_round_trip(cli: Any, admin: Any, flag: str, tmp_path: Any) -> None:
    code, out, _ = cli("rules", flag)
    assert code == 0 and json.loads(out) == {"targets": [], "rules": []}
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(RULES))
    code, out, err = cli("rules", flag, "--file", str(path), "--reason", "dach test")
    assert code == 0, err
    assert out.strip() == (
        "checkout: targets and rules replaced; now 2 rules (dach, staff), 1 target (2 units)"
    )
    stored = admin.get(f"/v1/flags/{flag}").json()
    assert [r["id"] for r in stored["rules"]] == ["dach", "staff"] and stored["targets"] == RULES["targets"]

    code, out, _ = cli("show", flag)
    assert code == 0
    assert "targets (before the rules):\n  green: alice, bob\n" in out
    rows = [line.split(None, 2) for line in out.splitlines() if line.startswith(("  1  ", "  2  "))]
    assert rows[0][:2] == ["1", "dach"] and "country in DE, AT, CH" in rows[0][2]
    assert "its own bandit (v1)" in rows[0][2]
    assert "email ends_with @corp.test AND age not gte 18" in rows[1][2]
    assert "split blue=25% green=75% orange=0%" in rows[1][2]
    assert "rule 'dach': its own bandit, allocation v1" in out
    assert "rules [] -> [dach, staff], targets [] -> [green: 2 units]" in out  # the audit, short
    assert '"dach test"' in out

    # What `rules` prints goes back in unchanged: edit, re-apply.
    code, out, _ = cli("rules", flag)
    exported = json.loads(out)
    exported["rules"].reverse()
    path.write_text(json.dumps(exported))
    assert cli("rules", flag, "--file", str(path))[0] == 0
    assert [r["id"] for r in admin.get(f"/v1/flags/{flag}").json()["rules"]] == ["staff", "dach"]


def test_rules_from_stdin_and_rejections_change_nothing(
    cli: Any, admin: Any, flag: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = [
        {
            "id": "x",
            "clauses": [{"attribute": "age", "op": "lt", "values": ["ten"]}],
            "serve": {"variant": "red"},
        }
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(bad)))  # a list: the rules
    code, out, err = cli("rules", flag, "--file", "-")
    assert code == 4 and out == ""
    assert "rejected: rules[0].clauses[0].values[0]: must be finite numbers" in err
    assert "  rules[0].serve.variant: must be one of the flag's variants, got 'red'" in err
    unknown = [{"id": "s", "clauses": [{"op": "in_segment", "values": ["nope"]}], "serve": {"bandit": True}}]
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(unknown)))
    code, _, err = cli("rules", flag, "--file", "-")
    assert code == 4 and "rules[0].clauses[0].values[0]: unknown segment 'nope'" in err
    assert admin.get(f"/v1/flags/{flag}").json()["rules"] == []  # nothing changed

    for doc in ("{}", '{"rules": [], "segments": []}', "7", "{oops"):
        monkeypatch.setattr("sys.stdin", io.StringIO(doc))
        assert cli("rules", flag, "--file", "-")[0] == 2, doc
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"rules": RULES["rules"]})))
    code, out, _ = cli("rules", flag, "--file", "-")
    assert code == 0 and "rules replaced; now 2 rules (dach, staff), 0 targets" in out
    assert cli("rules", "nope")[0] == 3
    monkeypatch.setattr("sys.stdin", io.StringIO("[]"))
    assert cli("rules", "nope", "--file", "-")[0] == 3


def test_target_and_untarget(cli: Any, admin: Any, flag: str) -> None:
    code, out, err = cli("target", flag, "green", "alice", "bob", "alice")
    assert code == 0, err
    assert out.strip() == "checkout: alice, bob -> green; now 0 rules, 1 target (2 units)"
    code, out, _ = cli("target", flag, "orange", "bob", "carol", "--reason", "vip")  # bob moves
    assert code == 0
    targets = admin.get(f"/v1/flags/{flag}").json()["targets"]
    assert targets == [
        {"variant": "green", "units": ["alice"]},
        {"variant": "orange", "units": ["bob", "carol"]},
    ]
    code, out, _ = cli("target", flag, "orange", "carol")
    assert code == 0 and "nothing to do" in out
    code, _, err = cli("target", flag, "purple", "dan")
    assert code == 4 and "'purple' is not a variant of checkout (blue, green, orange)" in err
    code, out, _ = cli("untarget", flag, "alice", "zed")
    assert code == 0 and "released alice (zed were not targeted)" in out
    assert admin.get(f"/v1/flags/{flag}").json()["targets"] == [
        {"variant": "orange", "units": ["bob", "carol"]}
    ]
    code, out, _ = cli("untarget", flag, "zed")
    assert code == 0 and "nothing to do" in out
    assert cli("target", "nope", "green", "a")[0] == 3
    actions = [e["action"] for e in admin.get(f"/v1/flags/{flag}/audit").json()["entries"]]
    assert len(actions) == 4  # create, two targets, one untarget: the no-ops left no entry


def test_show_reports_a_bandit_rule_learning_from_real_traffic(
    cli: Any, admin: Any, server: Any, flag: str
) -> None:
    assert admin.patch(f"/v1/flags/{flag}", json={"rules": RULES["rules"][:1]}).status_code == 200
    rng = random.Random(5)
    with Client(server.url, sdk_key=server.sdk_key, refresh_interval=0.2, flush_interval=0.2) as client:
        assert client.wait_until_ready(timeout=10.0)
        for i in range(600):
            d = client.decide(flag, f"u{i}", attributes={"country": "DE"})
            assert d.rule == "dach" and d.arm is not None
            if rng.random() < (0.6 if d.variant == "orange" else 0.05):
                assert client.track(d)
        assert client.flush(timeout=30.0)
    assert admin.post(f"/v1/flags/{flag}/recompute").status_code == 200

    code, out, _ = cli("show", flag)
    assert code == 0
    block = out.split("rule 'dach': its own bandit, allocation v", 1)[1]
    assert int(block.split()[0]) >= 2  # the rule's own version moved
    rows = {line.split()[0]: line.split() for line in block.splitlines()[2:5]}
    assert sum(int(r[1].replace(",", "")) for r in rows.values()) == 600
    weights = {k: float(r[-1].rstrip("%")) for k, r in rows.items()}
    assert max(weights, key=weights.__getitem__) == "orange", out
    assert rows["orange"][-2] != "-"  # P(best) is shown
    assert "  1  dach" in out and "600" in out.split("  1  dach", 1)[1].splitlines()[0]

    # A removed rule's rows are still reported, under its id.
    assert cli("remove-rule", flag, "dach")[0] == 0
    code, out, _ = cli("show", flag)
    assert code == 0 and "rules (in order" not in out and "its own bandit" not in out
    assert "rule 'dach' (removed): 600 exposures (blue=" in out


def test_set_rule_and_remove_rule(cli: Any, admin: Any, flag: str) -> None:
    code, out, err = cli(
        "set-rule", flag, "dach", "--clause", "country in DE,AT,CH", "--clause", "age >= 18", "--bandit"
    )
    assert code == 0, err
    assert out.strip() == "checkout: rule 'dach' added; now 1 rule (dach), 0 targets (0 units)"
    code, out, err = cli("set-rule", flag, "pro", "--clause", "plan == pro", "--split", "1,3,0", "--first")
    assert code == 0 and "rule 'pro' added; now 2 rules (pro, dach)" in out, err
    code, out, _ = cli(
        "set-rule", flag, "staff", "--clause", "email ends_with @corp.test", "--variant", "green"
    )
    assert code == 0 and "now 3 rules (pro, dach, staff)" in out
    rules = admin.get(f"/v1/flags/{flag}").json()["rules"]
    assert rules[1] == {
        "id": "dach",
        "clauses": [
            {"attribute": "country", "op": "in", "values": ["DE", "AT", "CH"], "negate": False},
            {"attribute": "age", "op": "gte", "values": [18], "negate": False},
        ],
        "serve": {"bandit": True},
    }
    assert rules[0]["serve"] == {"weights": [1.0, 3.0, 0.0]} and rules[2]["serve"] == {"variant": "green"}

    code, out, _ = cli("set-rule", flag, "pro", "--clause", "plan == pro", "--split", "1,3,0")
    assert code == 0 and "nothing to do" in out  # the same rule in the same place
    code, out, _ = cli(
        "set-rule", flag, "pro", "--clause", "plan == pro", "--split", "1,3,0", "--before", "staff"
    )
    assert code == 0 and "rule 'pro' moved; now 3 rules (dach, pro, staff)" in out
    code, out, _ = cli("set-rule", flag, "pro", "--clause", "plan in pro,team", "--variant", "orange")
    assert code == 0 and "rule 'pro' replaced; now 3 rules (dach, pro, staff)" in out  # in place

    code, _, err = cli("set-rule", flag, "x", "--clause", "plan == pro", "--variant", "purple")
    assert code == 4 and "rules[3].serve.variant: must be one of the flag's variants" in err
    code, _, err = cli("set-rule", flag, "x", "--clause", "age lt ten", "--bandit")
    assert code == 4 and "rules[3].clauses[0].values[0]" in err
    assert cli("set-rule", flag, "x", "--variant", "blue")[0] == 2  # no clause
    assert cli("set-rule", flag, "x", "--clause", "age", "--variant", "blue")[0] == 2
    assert cli("set-rule", flag, "x", "--clause", "a in b", "--split", "1,x")[0] == 2
    code, _, err = cli("set-rule", flag, "x", "--clause", "a in b", "--bandit", "--before", "nope")
    assert code == 2 and "not another rule of checkout (dach, pro, staff)" in err
    with pytest.raises(SystemExit):  # one of --bandit, --variant, --split
        cli("set-rule", flag, "x", "--clause", "a in b")
    assert [r["id"] for r in admin.get(f"/v1/flags/{flag}").json()["rules"]] == ["dach", "pro", "staff"]

    code, out, _ = cli("remove-rule", flag, "pro", "--reason", "done")
    assert code == 0 and "rule 'pro' removed; now 2 rules (dach, staff)" in out
    code, out, _ = cli("remove-rule", flag, "pro")
    assert code == 0 and "nothing to do" in out
    assert cli("remove-rule", "nope", "pro")[0] == 3
    audit = admin.get(f"/v1/flags/{flag}/audit").json()["entries"]
    assert audit[0]["reason"] == "done" and len(audit) == 7  # create + 6 changes; no-ops left none


def test_printing_into_a_closed_pipe_is_not_an_error(server: Any, admin: Any, flag: str) -> None:
    units = [f"unit-{i:05d}-{'x' * 100}" for i in range(2_000)]  # ~240 KB of JSON: more than a pipe holds
    targets = [{"variant": "green", "units": units[:1000]}, {"variant": "blue", "units": units[1000:2000]}]
    assert admin.patch(f"/v1/flags/{flag}", json={"targets": targets}).status_code == 200
    env = {**os.environ, "BANDITFLAGS_URL": server.url, "BANDITFLAGS_ADMIN_KEY": server.admin_key}
    script = (
        f'{sys.executable} -m banditflags_server flags rules {flag} | head -c 1; echo " ${{PIPESTATUS[0]}}"'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.stdout == "{ 0\n" and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("concurrent_edits", [1, 3])
def test_an_edit_made_meanwhile_is_kept_not_overwritten(
    cli: Any, admin: Any, flag: str, monkeypatch: pytest.MonkeyPatch, concurrent_edits: int
) -> None:
    """Another operator adds a rule between this command's read of the flag and its write: the write
    (sent with the ETag it read) is refused with 412, and the command reads again and redoes its edit
    on what is there now, so both rules survive. One that keeps losing the race gives up (exit 4)
    after its three reads, having changed nothing."""
    from banditflags_server.cli.api import Api

    call = Api.call
    theirs = iter(range(concurrent_edits))

    def racing(self: Api, method: str, path: str, *a: Any, **kw: Any) -> Any:
        answer = call(self, method, path, *a, **kw)
        if method == "GET" and path == f"/v1/flags/{flag}":
            n = next(theirs, None)
            if n is not None:  # another operator's change lands between our read and our write
                rules = answer["rules"] + [
                    {"id": f"theirs{n}", "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
                     "serve": {"variant": "blue"}}
                ]  # fmt: skip
                assert admin.patch(f"/v1/flags/{flag}", json={"rules": rules}).status_code == 200
        return answer

    monkeypatch.setattr(Api, "call", racing)
    code, out, err = cli("set-rule", flag, "ours", "--clause", "country in DE", "--variant", "green")
    ids = [r["id"] for r in admin.get(f"/v1/flags/{flag}").json()["rules"]]
    if concurrent_edits == 1:
        assert code == 0, err
        assert ids == ["theirs0", "ours"] and "rule 'ours' added" in out
    else:
        assert code == 4 and "changed since it was read" in err
        assert ids == ["theirs0", "theirs1", "theirs2"]
