"""A console save that another operator's change overtakes *after* the console checked its form against
the stored flag or segment (between that check and the write) is refused with the stale-form message,
and the other change is kept: the write carries the ETag of the checked read (412 inside the store,
shown as the console's 409). Run in-process (the app's store is patched to let the other change land
at exactly that moment)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tests.console.helpers import fields

from banditflags_server.api.validation import patch_from_json
from banditflags_server.service import recompute as rc


def _signed_in(app: Any) -> Any:
    client = app.raw
    page = client.get("/console/login")
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token is not None
    resp = client.post(
        "/console/login", data={"key": app.admin_key, "token": token[1]}, follow_redirects=False
    )
    assert resp.status_code == 303, resp.text
    return client


def test_a_segment_changed_between_check_and_write_is_not_overwritten(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert app.admin.post("/v1/segments", json={"key": "beta", "included": ["alice"]}).status_code == 201
    console = _signed_in(app)
    page = console.get("/console/segments/beta").text
    form = {
        "csrf": re.search(r'name="csrf" value="([^"]+)"', page)[1],  # type: ignore[index]
        "base": re.search(r'name="base" value="([^"]+)"', page)[1],  # type: ignore[index]
        "description": "ours",
        "included": "alice",
        "excluded": "",
        "action": "save",
    }
    store = app.store
    update = store.update_segment

    def theirs_first(seg: Any, audit: Any, if_match: str | None = None) -> bool:
        current = store.get_segment("beta")
        current.included = ["alice", "theirs"]
        assert update(current, None)  # another operator's write lands now
        return bool(update(seg, audit, if_match))

    monkeypatch.setattr(store, "update_segment", theirs_first)
    resp = console.post("/console/segments/beta", data=form, follow_redirects=False)
    assert resp.status_code == 409 and "changed by someone else" in resp.text
    seg = app.admin.get("/v1/segments/beta").json()
    assert seg["included"] == ["alice", "theirs"] and seg["description"] == ""


def test_a_flags_rules_changed_between_check_and_write_are_not_overwritten(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert app.admin.post("/v1/flags", json={"key": "shop", "variants": ["a", "b"]}).status_code == 201
    console = _signed_in(app)
    page = console.get("/console/flags/shop").text
    form = {
        **fields(page),
        "rules-0-id": "ours",
        "rules-0-clauses-0-attribute": "country",
        "rules-0-clauses-0-op": "in",
        "rules-0-clauses-0-values": "DE",
        "rules-0-serve": "variant",
        "rules-0-variant": "b",
        "action": "save",
    }
    theirs = {"rules": [{"id": "theirs", "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
                         "serve": {"variant": "a"}}]}  # fmt: skip
    store = app.store
    update = store.update_flag
    landed = []

    def theirs_first(flag: Any, *args: Any, **kwargs: Any) -> bool:
        if not landed:  # another operator's write lands between the console's check and its write
            landed.append(True)
            validate, _ = patch_from_json(json.dumps(theirs).encode())
            rc.apply_patch(store, "shop", validate(store.get_flag("shop")), app.raw.app.state.ctx.rng())
        return bool(update(flag, *args, **kwargs))

    monkeypatch.setattr(store, "update_flag", theirs_first)
    resp = console.post("/console/flags/shop/targeting", data=form, follow_redirects=False)
    assert landed and resp.status_code == 409 and "changed by someone else" in resp.text, resp.text[:300]
    assert [r["id"] for r in app.admin.get("/v1/flags/shop").json()["rules"]] == ["theirs"]
