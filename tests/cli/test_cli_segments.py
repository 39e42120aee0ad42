"""``banditflags segments ...`` against the real server: create from clauses and unit ids, list, show,
update (add, exclude, remove units; replace clauses), delete, and the exit codes (2 usage, 3 no such
segment, 4 rejected, also a segment that flags' rules still name)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

IN_SEGMENT = {"op": "in_segment", "values": ["dach"]}


def test_create_list_show_update_delete(seg: Any, admin: Any) -> None:
    code, out, err = seg(
        "create", "dach", "--clause", "country in DE,AT, CH", "--clause", "age >= 18",
        "--include", "alice,bob", "--include", "carol", "--exclude", "eve",
        "--description", "German-speaking", "--reason", "launch",
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == "dach: created (2 clauses, 3 included, 1 excluded)"
    stored = admin.get("/v1/segments/dach").json()
    assert stored["clauses"] == [
        {"attribute": "country", "op": "in", "values": ["DE", "AT", "CH"], "negate": False},
        {"attribute": "age", "op": "gte", "values": [18], "negate": False},
    ]
    assert (stored["included"], stored["excluded"]) == (["alice", "bob", "carol"], ["eve"])
    assert stored["description"] == "German-speaking"

    code, out, _ = seg("list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["KEY", "CLAUSES", "INCLUDED", "EXCLUDED", "USED", "BY"]
    assert lines[1].startswith("dach  country in DE, AT, CH AND age gte 18") and lines[1].endswith("-")

    code, out, _ = seg("show", "dach")
    assert code == 0 and "  country in DE, AT, CH\n  age gte 18\n" in out
    assert "included (3): alice, bob, carol" in out and "excluded (1): eve" in out
    assert "used by: no flag" in out

    # --include moves a unit out of excluded, --exclude out of included, --remove out of both.
    code, out, err = seg("update", "dach", "--include", "eve", "--exclude", "bob", "--remove", "carol")
    assert code == 0, err
    stored = admin.get("/v1/segments/dach").json()
    assert (stored["included"], stored["excluded"]) == (["alice", "eve"], ["bob"])
    assert "updated excluded, included" in out
    code, out, _ = seg("update", "dach", "--include", "eve")
    assert code == 0 and "nothing to do" in out
    code, _, err = seg("update", "dach", "--clause", "plan == pro", "--reason", "pro only")
    assert code == 0, err
    assert admin.get("/v1/segments/dach").json()["clauses"] == [
        {"attribute": "plan", "op": "in", "values": ["pro"], "negate": False}
    ]
    assert seg("update", "dach", "--no-clauses")[0] == 0
    assert admin.get("/v1/segments/dach").json()["clauses"] == []

    code, out, _ = seg("show", "dach", "--json")
    assert code == 0 and json.loads(out)["used_by"] == {}
    trail = json.loads(out)["audit"]  # its changes, newest first (the latest five at most)
    assert [e["action"] for e in trail] == ["update", "update", "update", "create"]
    code, out, _ = seg("show", "dach")
    changes = out.split("recent changes:\n")[1].splitlines()
    assert "update   clauses" in changes[1] and changes[1].endswith('"pro only"')
    assert "create" in changes[-1] and changes[-1].endswith('"launch"')
    code, out, _ = seg("delete", "dach", "--reason", "done")
    assert code == 0 and out.strip() == "dach: deleted"
    assert admin.get("/v1/segments/dach").status_code == 404
    code, out, _ = seg("list")
    assert code == 0 and out.strip() == "no segments"


def test_a_segment_in_use_is_not_deleted_and_the_flags_are_listed(seg: Any, admin: Any) -> None:
    assert seg("create", "dach", "--clause", "country in DE")[0] == 0
    rule = {"id": "de", "clauses": [IN_SEGMENT], "serve": {"bandit": True}}
    for key in ("checkout", "pricing"):
        body = {"key": key, "variants": ["a", "b"], "rules": [rule]}
        assert admin.post("/v1/flags", json=body).status_code == 201
    code, out, _ = seg("show", "dach")
    assert code == 0 and "used by: checkout (rules de), pricing (rules de)" in out
    assert "checkout, pricing" in seg("list")[1]

    code, out, err = seg("delete", "dach")
    assert code == 4 and out == ""
    assert "used by the rules of 2 flag(s); not deleted" in err
    assert "\n  checkout\n  pricing\n" in err
    assert admin.get("/v1/segments/dach").status_code == 200  # nothing changed

    for key in ("checkout", "pricing"):
        assert admin.patch(f"/v1/flags/{key}", json={"rules": []}).status_code == 200
    assert seg("delete", "dach")[0] == 0


def test_errors_name_the_field_and_change_nothing(seg: Any, admin: Any) -> None:
    code, _, err = seg("create", "s", "--clause", "age lt ten", "--clause", "country in DE")
    assert code == 4
    assert (
        "clauses[0].values[0]: must be finite numbers" in err and "(clauses[0] is the first --clause)" in err
    )
    code, _, err = seg("create", "s", "--clause", "country bogus DE")
    assert code == 4 and "clauses[0].op: must be one of" in err
    code, _, err = seg("create", "s", "--clause", "country in DE", "--clause", "age")
    assert code == 2 and "clauses[1]" in err and "expected 'ATTRIBUTE [not] OP VALUE,...'" in err
    code, _, err = seg("create", "s", "--clause", "country in_segment x")
    assert code == 2 and "in_segment takes no attribute" in err
    code, _, err = seg("create", "Bad Key")
    assert code == 4 and "key" in err
    assert admin.get("/v1/segments").json()["segments"] == []

    assert seg("create", "s", "--include", "alice")[0] == 0
    code, _, err = seg("create", "s", "--include", "bob")
    assert code == 4 and "exists already" in err
    code, _, err = seg("update", "s")
    assert code == 2 and "nothing to change" in err
    code, _, err = seg("update", "s", "--include", "x", "--exclude", "x")
    assert code == 2 and "both" in err
    code, _, err = seg("update", "s", "--clause", "a in b", "--no-clauses")
    assert code == 2
    code, _, err = seg("update", "s", "--clause", "v semver_gte 1.2.3.4")
    assert code == 4 and "clauses[0].values[0]" in err
    assert admin.get("/v1/segments/s").json()["clauses"] == []  # nothing changed
    assert seg("show", "nope")[0] == 3
    assert seg("update", "nope", "--include", "x")[0] == 3
    assert seg("delete", "nope")[0] == 3
    assert seg()[0] == 2


def test_create_and_update_from_a_file_or_stdin(
    seg: Any, admin: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {
        "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
        "included": ["alice"],
        "description": "from a file",
    }
    path = tmp_path / "seg.json"
    path.write_text(json.dumps(body))
    code, out, err = seg("create", "pro", "--file", str(path), "--exclude", "eve")  # options add to the file
    assert code == 0, err
    stored = admin.get("/v1/segments/pro").json()
    assert stored["included"] == ["alice"] and stored["excluded"] == ["eve"]
    assert stored["description"] == "from a file"

    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"included": ["bob"], "clauses": []})))
    code, out, err = seg("update", "pro", "--file", "-", "--json")
    assert code == 0, err
    assert json.loads(out)["included"] == ["bob"] and json.loads(out)["clauses"] == []
    path.write_text("[1, 2]")
    assert seg("create", "other", "--file", str(path))[0] == 2
    path.write_text("{not json")
    assert seg("update", "pro", "--file", str(path))[0] == 2


@pytest.mark.parametrize("concurrent_edits", [1, 3])
def test_units_added_meanwhile_are_kept_not_overwritten(
    seg: Any, admin: Any, monkeypatch: pytest.MonkeyPatch, concurrent_edits: int
) -> None:
    """Another operator includes a unit between ``update --include``'s read of the segment and its write
    (the whole list, computed from what it read, sent with that ETag): the write is refused with 412,
    and the command reads again and redoes its edit, so both units stay. One that keeps losing the race
    gives up (exit 4) after three reads, having changed nothing."""
    from banditflags_server.cli.api import Api

    assert seg("create", "beta", "--include", "alice")[0] == 0
    call = Api.call
    theirs = iter(range(concurrent_edits))

    def racing(self: Api, method: str, path: str, *a: Any, **kw: Any) -> Any:
        answer = call(self, method, path, *a, **kw)
        if method == "GET" and path == "/v1/segments/beta":
            n = next(theirs, None)
            if n is not None:  # their change lands between our read and our write
                units = [*answer["included"], f"theirs{n}"]
                assert admin.patch("/v1/segments/beta", json={"included": units}).status_code == 200
        return answer

    monkeypatch.setattr(Api, "call", racing)
    code, out, err = seg("update", "beta", "--include", "ours")
    included = admin.get("/v1/segments/beta").json()["included"]
    if concurrent_edits == 1:
        assert code == 0, err
        assert included == ["alice", "theirs0", "ours"] and "beta: updated included" in out
    else:
        assert code == 4 and "changed since it was read" in err
        assert included == ["alice", "theirs0", "theirs1", "theirs2"]
