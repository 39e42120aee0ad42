"""A flag's targets and rules in the console (issue 12): what the flag page shows of them (each rule's
clauses and what it serves; a bandit rule's weights and per-arm estimates from the flag's
``rules_report``), and the editor behind ``POST /console/flags/{key}/targeting``.

The editor is one plain form with indexed fields (:mod:`~banditflags_server.console.clause_form`) and
submit buttons named ``action``: ``save``, or an edit of the draft (``rules:add``, ``rules:up-2``,
``rules-0-clauses:remove-1``, ``targets:add``, ...) that shows the form again, unsaved. Saving sends the
whole ``targets`` and ``rules`` lists through the API's PATCH validator and
:func:`~banditflags_server.service.flags.patch_flag` as the session's key, so it is checked and audited
as an API change is; a refusal shows each error next to its field and changes nothing. The form carries
a digest of the lists it was loaded from: if they changed since, the save is refused (409).
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.context import ctx
from banditflags_server.api.schemas import MAX_RULES, MAX_VARIANTS
from banditflags_server.api.validation import patch_validator
from banditflags_server.console import clause_form as cf
from banditflags_server.console.auth import authed
from banditflags_server.console.flag_pages import flag_view
from banditflags_server.console.rules_view import digest
from banditflags_server.console.sessions import Session
from banditflags_server.console.templating import PREFIX, redirect
from banditflags_server.errors import ApiError
from banditflags_server.records import Flag, FlagPatch
from banditflags_server.service import flags as actions
from banditflags_server.storage import audit as audit_mod

__all__ = ["save_targeting"]


def _draft_from_form(form: dict[str, str]) -> dict[str, Any]:
    targets = [
        {"variant": t.get("variant", ""), "units": t.get("units", "")} for t in cf.indexed(form, "targets")
    ]
    rules = [
        {
            "id": r.get("id", "").strip(),
            "serve": r.get("serve", "variant"),
            "variant": r.get("variant", ""),
            "weights": r.get("weights", ""),
            "clauses": cf.clauses_draft(r),
        }
        for r in cf.indexed(form, "rules")
    ]
    return {"base": form.get("base", ""), "targets": targets, "rules": rules}


def _weight(raw: str) -> Any:
    try:
        value = float(raw)
    except ValueError:
        return raw  # the server names it: "rules[0].serve.weights[1]: expected a number"
    return value if math.isfinite(value) else raw


def _body(draft: dict[str, Any]) -> dict[str, Any]:
    """The PATCH body of a draft: the whole ``targets`` and ``rules`` lists."""
    rules = []
    for r in draft["rules"]:
        if r["serve"] == "bandit":
            serve: dict[str, Any] = {"bandit": True}
        elif r["serve"] == "weights":
            serve = {"weights": [_weight(w.strip()) for w in r["weights"].split(",") if w.strip()]}
        else:
            serve = {"variant": r["variant"]}
        rules.append({"id": r["id"], "clauses": cf.clauses_body(r["clauses"]), "serve": serve})
    targets = [{"variant": t["variant"], "units": cf.lines(t["units"])} for t in draft["targets"]]
    return {"targets": targets, "rules": rules}


def _new_rule(draft: dict[str, Any], variants: list[str]) -> dict[str, Any]:
    ids = {r["id"] for r in draft["rules"]}
    n = next(n for n in range(1, MAX_RULES + 2) if f"rule-{n}" not in ids)
    return {
        "id": f"rule-{n}",
        "serve": "variant",
        "variant": variants[0],
        "weights": "",
        "clauses": [cf.new_clause()],
    }


def _edit(draft: dict[str, Any], action: str, variants: list[str]) -> bool:
    """Apply an editing button to the draft; False if ``action`` is not one."""
    where, _, verb = action.partition(":")
    if where == "targets":
        if verb == "add" and len(draft["targets"]) >= MAX_VARIANTS:
            return True
        return cf.edit_list(draft["targets"], verb, lambda: {"variant": variants[0], "units": ""})
    if where == "rules":
        if verb == "add" and len(draft["rules"]) >= MAX_RULES:
            return True
        return cf.edit_list(draft["rules"], verb, lambda: _new_rule(draft, variants))
    head, _, i = where.partition("-")
    rule, _, tail = i.partition("-")
    if head == "rules" and tail == "clauses" and rule.isdigit() and int(rule) < len(draft["rules"]):
        return cf.edit_clauses(draft["rules"][int(rule)]["clauses"], verb)
    return False


def _placed(draft: dict[str, Any]) -> set[str]:
    """The fields the editor shows errors next to (others go to the notice at its top)."""
    names = {"targets", "rules"}
    for i, _ in enumerate(draft["targets"]):
        names |= {f"targets-{i}-variant", f"targets-{i}-units"}
    for i, r in enumerate(draft["rules"]):
        names |= {f"rules-{i}-{n}" for n in ("id", "serve", "variant", "weights", "clauses")}
        for j, _ in enumerate(r["clauses"]):
            names |= {f"rules-{i}-clauses-{j}-{n}" for n in ("attribute", "op", "values")}
    return names


def _errors(exc: ApiError, draft: dict[str, Any]) -> dict[str, str]:
    errors = cf.field_errors(list(exc.errors or [(exc.field, exc.message)]), general="targeting")
    placed = _placed(draft)
    others = [
        f"{name}: {msg}" if name != "targeting" else msg for name, msg in errors.items() if name not in placed
    ]
    out = {name: msg for name, msg in errors.items() if name in placed}
    out["targeting"] = " ".join(others) if others else ""
    return out


# -- the handler -------------------------------------------------------------------------------------


def _stale_check(base: str, body: dict[str, Any]) -> Any:
    validate = patch_validator(body)

    def check(flag: Flag) -> FlagPatch:
        if base and digest(flag) != base:
            raise ApiError(
                409,
                f"The flag's targets or rules {cf.STALE}",
            )
        return validate(flag)

    return check


@authed
async def save_targeting(request: Request, session: Session) -> Response:
    """``POST /console/flags/{key}/targeting``: an editing button (the form again, unsaved) or ``save``."""
    form: dict[str, str] = request.state.form
    key: str = request.path_params["key"]
    c = ctx(request)
    flag = await run_in_threadpool(c.store.get_flag, key)
    if flag is None:
        return await flag_view(request, session, key)  # the 404 page
    variants = [v["key"] for v in flag.variants]
    draft = _draft_from_form(form)
    action = form.get("action", "save")
    if action != "save":
        _edit(draft, action, variants)
        editor = {"draft": draft, "errors": {}, "unsaved": True, "reason": form.get("reason", "")}
        return await flag_view(request, session, key, editor=editor)
    body = _body(draft)
    reason = form.get("reason", "").replace("\x00", "").strip()[: audit_mod.MAX_REASON]

    def work() -> None:
        # The draft is checked against the flag as patch_flag reads it (_stale_check), and the write
        # carries the ETag of a read made before that check: a change landing in between fails the
        # write (412, nothing written) instead of being overwritten.
        current = c.store.get_flag(key)
        etag = current.etag if current is not None else None
        check = _stale_check(draft["base"], body)
        try:
            actions.patch_flag(c.store, key, check, c.rng(), session.key_name, reason, etag)
        except ApiError as exc:
            if exc.status != 412:
                raise
            raise ApiError(409, f"The flag's targets or rules {cf.STALE}") from None

    try:
        await run_in_threadpool(work)
    except ApiError as exc:
        errors = _errors(exc, draft)
        editor = {"draft": draft, "errors": errors, "unsaved": True, "reason": form.get("reason", "")}
        return await flag_view(request, session, key, editor=editor, status=exc.status)
    return redirect(f"{PREFIX}/flags/{quote(key)}?done=targeting#targeting")
