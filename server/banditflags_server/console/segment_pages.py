"""The console's segment pages (issue 12): the list (``/console/segments``), the new-segment form
(``/console/new-segment``) and a segment's page (``/console/segments/{key}``) with its editor, the flags
whose rules name it, its audit log and the delete button.

The form is plain, with indexed clause rows (:mod:`~banditflags_server.console.clause_form`) and
submit buttons named ``action`` (``save``, ``clauses:add``, ``clauses:remove-1``). Saving validates with
the API's own checks (:func:`~banditflags_server.api.segments.validate_segment`) and applies through
:mod:`banditflags_server.service.segments` as the session's key, so every change is audited as an API
change is; a refusal shows the errors next to their fields and changes nothing. Deleting a segment that
flags' rules name is refused with the list of those flags.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.context import Context, ctx
from banditflags_server.api.segments import validate_segment, validate_segment_patch
from banditflags_server.console import clause_form as cf
from banditflags_server.console.auth import authed
from banditflags_server.console.sessions import Session
from banditflags_server.console.templating import PREFIX, error_page, redirect, render
from banditflags_server.errors import ApiError
from banditflags_server.service import segments as actions
from banditflags_server.storage import audit as audit_mod
from banditflags_server.storage.segments import Segment

__all__ = ["delete_post", "edit_page", "edit_post", "list_page", "new_page", "new_post"]

DONE = {
    "create": "Segment created. SDKs receive it within a second.",
    "update": "Segment saved. SDKs evaluate the flags that name it with the new version within a second.",
    "delete": "Segment deleted.",
}


def _draft(seg: Segment | None) -> dict[str, Any]:
    if seg is None:
        return {"key": "", "base": "", "description": "", "clauses": [], "included": "", "excluded": ""}
    return {
        "key": seg.key,
        "base": cf.digest(seg.audited()),
        "description": seg.description,
        "clauses": cf.clauses_from_json(seg.clauses),
        "included": "\n".join(seg.included),
        "excluded": "\n".join(seg.excluded),
    }


def _draft_from_form(form: dict[str, str], key: str | None) -> dict[str, Any]:
    return {
        "key": key if key is not None else form.get("key", "").strip(),
        "base": form.get("base", ""),
        "description": form.get("description", "").strip(),
        "clauses": cf.clauses_draft(form),
        "included": form.get("included", ""),
        "excluded": form.get("excluded", ""),
    }


def _body(draft: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        "description": draft["description"],
        "clauses": cf.clauses_body(draft["clauses"]),
        "included": cf.lines(draft["included"]),
        "excluded": cf.lines(draft["excluded"]),
        "reason": reason,
    }


def _errors(exc: ApiError, draft: dict[str, Any]) -> dict[str, str]:
    errors = cf.field_errors(list(exc.errors or [(exc.field, exc.message)]), general="segment")
    placed = {"key", "description", "clauses", "included", "excluded"}
    for j, _ in enumerate(draft["clauses"]):
        placed |= {f"clauses-{j}-{n}" for n in ("attribute", "op", "values")}
    others = [f"{n}: {m}" if n != "segment" else m for n, m in errors.items() if n not in placed]
    return {**{n: m for n, m in errors.items() if n in placed}, "segment": " ".join(others)}


# -- pages -------------------------------------------------------------------------------------------


def _rows(c: Context) -> list[dict[str, Any]]:
    return [{"segment": s, "flags": c.store.segment_users(s.key)} for s in c.store.list_segments()]


@authed
async def list_page(request: Request, session: Session) -> Response:
    """``GET /console/segments``: every segment with its size and the flags that name it."""
    rows = await run_in_threadpool(_rows, ctx(request))
    done = DONE.get(request.query_params.get("done", ""))
    return render(request, "segments.html", {"session": session, "rows": rows, "done": done})


def _form(
    request: Request,
    session: Session,
    draft: dict[str, Any],
    *,
    new: bool,
    errors: dict[str, str] | None = None,
    unsaved: bool = False,
    status: int = 200,
    extra: dict[str, Any] | None = None,
) -> Response:
    context = {
        "session": session,
        "draft": draft,
        "new": new,
        "errors": errors or {},
        "unsaved": unsaved,
        "reason": request.state.form.get("reason", "") if request.method == "POST" else "",
        "done": DONE.get(request.query_params.get("done", "")),
        "users": [],
        "audit": [],
        **(extra or {}),
    }
    return render(request, "segment.html", context, status)


def _facts(c: Context, key: str) -> tuple[Segment | None, dict[str, Any]]:
    seg = c.store.get_segment(key)
    audit = audit_mod.entries(c.store.engine, key, limit=50, kind="segment")
    return seg, {"users": c.store.segment_users(key) if seg else [], "audit": audit}


@authed
async def new_page(request: Request, session: Session) -> Response:
    """``GET /console/new-segment``: the empty form (one clause row to start from)."""
    draft = _draft(None)
    draft["clauses"] = [cf.new_clause()]
    return _form(request, session, draft, new=True)


async def _save(request: Request, session: Session, key: str | None) -> Response:
    form: dict[str, str] = request.state.form
    draft = _draft_from_form(form, key)
    c = ctx(request)
    extra: dict[str, Any] = {}
    if key is not None:
        seg, extra = await run_in_threadpool(_facts, c, key)
        if seg is None:
            return error_page(request, 404, f"There is no segment {key!r}. It may have been deleted.")
    action = form.get("action", "save")
    if action != "save":
        cf.edit_clauses(draft["clauses"], action.partition(":")[2])
        return _form(request, session, draft, new=key is None, unsaved=True, extra=extra)
    body = _body(draft, form.get("reason", "").replace("\x00", "").strip()[: audit_mod.MAX_REASON])

    def work() -> None:
        if key is None:
            seg, reason = validate_segment({"key": draft["key"], **body})
            actions.create_segment(c.store, seg, session.key_name, reason)
        else:
            changes, reason = validate_segment_patch(body)
            current = c.store.get_segment(key)
            if current is not None and draft["base"] and cf.digest(current.audited()) != draft["base"]:
                raise ApiError(409, f"The segment {cf.STALE}")
            # The ETag of the read just checked: a change landing between this check and the write
            # fails the write (412, nothing written) instead of being overwritten.
            etag = current.etag if current is not None else None
            try:
                actions.patch_segment(c.store, key, changes, session.key_name, reason, etag)
            except ApiError as exc:
                if exc.status != 412:
                    raise
                raise ApiError(409, f"The segment {cf.STALE}") from None

    try:
        await run_in_threadpool(work)
    except ApiError as exc:
        errors = _errors(exc, draft)
        return _form(request, session, draft, new=key is None, errors=errors, status=exc.status, extra=extra)
    done = "create" if key is None else "update"
    return redirect(f"{PREFIX}/segments/{quote(draft['key'])}?done={done}")


@authed
async def new_post(request: Request, session: Session) -> Response:
    """``POST /console/new-segment``: an editing button, or create."""
    return await _save(request, session, None)


@authed
async def edit_page(request: Request, session: Session) -> Response:
    """``GET /console/segments/{key}``: the segment's form, the flags that name it, its audit log."""
    key: str = request.path_params["key"]
    seg, extra = await run_in_threadpool(_facts, ctx(request), key)
    if seg is None:
        return error_page(request, 404, f"There is no segment {key!r}. It may have been deleted.")
    return _form(request, session, _draft(seg), new=False, extra=extra)


@authed
async def edit_post(request: Request, session: Session) -> Response:
    """``POST /console/segments/{key}``: an editing button, or save the changes."""
    return await _save(request, session, request.path_params["key"])


@authed
async def delete_post(request: Request, session: Session) -> Response:
    """``POST /console/segments/{key}/delete``: delete; refused (409) while flags' rules name it."""
    key: str = request.path_params["key"]
    c = ctx(request)
    reason = request.state.form.get("reason", "").replace("\x00", "").strip()[: audit_mod.MAX_REASON]
    try:
        await run_in_threadpool(actions.delete_segment, c.store, key, session.key_name, reason)
    except ApiError as exc:
        seg, extra = await run_in_threadpool(_facts, c, key)
        if seg is None:
            return error_page(request, exc.status, exc.message)
        in_use = (exc.extra or {}).get("flags", [])
        extra.update(delete_error=exc.message, in_use=in_use)
        return _form(request, session, _draft(seg), new=False, status=exc.status, extra=extra)
    return redirect(f"{PREFIX}/segments?done=delete")
