"""The console's changes: the controls on a flag's page (kill, un-kill, freeze, resume, the exploration
throttle, the policy parameters) and the form that creates a flag.

Each reads its form (already CSRF-checked by :func:`~banditflags_server.console.auth.authed`), builds
the same body the HTTP API takes, validates it with the API's validators and applies it through
:mod:`banditflags_server.service.flags` as the session's key, with the form's reason, so it is audited
like an API change. A success redirects to the flag page with ``?done=``; a refusal shows the page or
form again with each error next to its field. The confirmation dialogs are in the templates.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.context import ctx
from banditflags_server.api.validation import patch_validator, validate_new_flag
from banditflags_server.console.auth import authed
from banditflags_server.console.flag_pages import flag_view
from banditflags_server.console.sessions import Session
from banditflags_server.console.templating import PREFIX, error_page, redirect, render
from banditflags_server.errors import ApiError
from banditflags_server.records import Flag
from banditflags_server.service import flags as actions
from banditflags_server.storage import audit as audit_mod

POLICY_FIELDS = ("floor", "burn_in", "max_step", "half_life", "draws", "epsilon", "top_two_beta", "weights")


# -- reading the forms ------------------------------------------------------------------------------


def _reason(form: dict[str, str]) -> str:
    # NUL cannot be stored (PostgreSQL text) and no one means to type it: dropped, as the cap cuts.
    return form.get("reason", "").replace("\x00", "").strip()[: audit_mod.MAX_REASON]


def _number(raw: str, integer: bool = False) -> float | int | None:
    raw = raw.strip()
    if not raw:
        return None
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    if integer:
        if value != int(value):
            raise ValueError(raw)
        return int(value)
    return value


def _policy_from_form(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The policy object of a form, and errors by field for what is not a number."""
    policy: dict[str, Any] = {}
    errors: dict[str, str] = {}
    name = form.get("policy_name", "").strip()
    if name:
        policy["name"] = name
    for field in POLICY_FIELDS:
        if f"policy_{field}" not in form:
            continue
        raw = form[f"policy_{field}"]
        try:
            if field == "weights":
                parts = [p for p in raw.replace(";", ",").split(",") if p.strip()]
                policy[field] = [_number(p) for p in parts] if parts else None
            else:
                policy[field] = _number(raw, integer=field in ("burn_in", "draws"))
        except ValueError:
            errors[f"policy.{field}"] = (
                "must be a number" if field != "weights" else "must be numbers, comma-separated"
            )
    # An empty field means the default; for the nullable parameters (no step limit, no discounting,
    # equal fixed weights) the default is null, which also clears a value set before.
    policy = {k: v for k, v in policy.items() if v is not None or k in ("max_step", "half_life", "weights")}
    return policy, errors


# -- controls on a flag -----------------------------------------------------------------------------


async def _patch(request: Request, session: Session, body: dict[str, Any], reason: str) -> ApiError | None:
    """Apply a change as the session's key; the API error to show, or None."""
    c = ctx(request)
    key: str = request.path_params["key"]

    def work() -> Flag:
        return actions.patch_flag(c.store, key, patch_validator(body), c.rng(), session.key_name, reason)

    try:
        await run_in_threadpool(work)
    except ApiError as exc:
        return exc
    return None


def _after(key: str, done: str) -> Response:
    return redirect(f"{PREFIX}/flags/{quote(key)}?done={done}")


def _field_errors(err: ApiError) -> dict[str, str]:
    out: dict[str, str] = {}
    for field, message in err.errors or [(err.field, err.message)]:
        out.setdefault(field or "_", message)
    if not out:
        out["_"] = err.message
    return out


@authed
async def set_state(request: Request, session: Session) -> Response:
    """``POST /console/flags/{key}/state`` with ``state`` = killed | running | frozen."""
    form: dict[str, str] = request.state.form
    key: str = request.path_params["key"]
    state = form.get("state", "")
    if state not in ("killed", "running", "frozen"):
        return error_page(request, 422, "state must be killed, running or frozen")
    before = await run_in_threadpool(ctx(request).store.get_flag, key)
    if before is None:
        return error_page(request, 404, f"There is no flag {key!r}.")
    err = await _patch(request, session, {"state": state}, _reason(form))
    if err is not None:
        return await flag_view(request, session, key, errors={"state": err.message}, status=err.status)
    if before.state == state:
        return _after(key, "none")
    done = audit_mod.action_for({"state": before.state}, {"state": state})
    return _after(key, done)


@authed
async def set_exploration(request: Request, session: Session) -> Response:
    """``POST /console/flags/{key}/exploration`` with ``exploration`` in percent (0..100)."""
    form: dict[str, str] = request.state.form
    key: str = request.path_params["key"]
    raw = form.get("exploration", "").strip().rstrip("%").strip()
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        return await flag_view(
            request,
            session,
            key,
            errors={"exploration": "must be a number from 0 to 100 (%)"},
            form=form,
            status=422,
        )
    err = await _patch(request, session, {"exploration": round(value / 100.0, 6)}, _reason(form))
    if err is not None:
        return await flag_view(request, session, key, errors=_field_errors(err), form=form, status=err.status)
    return _after(key, "throttle")


@authed
async def set_policy(request: Request, session: Session) -> Response:
    """``POST /console/flags/{key}/policy``: policy name and parameters."""
    form: dict[str, str] = request.state.form
    key: str = request.path_params["key"]
    policy, errors = _policy_from_form(form)
    if errors:
        return await flag_view(request, session, key, errors=errors, form=form, status=422)
    err = await _patch(request, session, {"policy": policy}, _reason(form))
    if err is not None:
        return await flag_view(request, session, key, errors=_field_errors(err), form=form, status=err.status)
    return _after(key, "policy")


# -- new flag ---------------------------------------------------------------------------------------


def parse_variants(text: str) -> list[Any]:
    """Variants from the form's textarea: one per line, ``key`` or ``key = value`` (JSON, else text).

    >>> parse_variants("blue = #00f\\ngreen\\n\\nbig = 42")
    [{'key': 'blue', 'value': '#00f'}, 'green', {'key': 'big', 'value': 42}]
    """
    out: list[Any] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            out.append(line)
            continue
        value = value.strip()
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        out.append({"key": key.strip(), "value": parsed})
    return out


NEW_DEFAULTS = {
    "key": "",
    "description": "",
    "variants": "",
    "control": "",
    "reward": "binary",
    "direction": "maximize",
    "unit": "decision",
    "policy_name": "thompson",
    "policy_floor": "",
    "policy_burn_in": "",
    "policy_weights": "",
    "exploration": "100",
    "recompute_interval": "",
    "reason": "",
}


def _new_body(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    body: dict[str, Any] = {
        "key": form.get("key", "").strip(),
        "variants": parse_variants(form.get("variants", "")),
        "objective": {
            "reward": form.get("reward", "binary"),
            "direction": form.get("direction", "maximize"),
            "unit": form.get("unit", "decision"),
        },
    }
    if form.get("description", "").strip():
        body["description"] = form["description"].strip()
    if form.get("control", "").strip():
        body["control"] = form["control"].strip()
    policy, perrors = _policy_from_form({k: v for k, v in form.items() if k != "policy_weights" or v.strip()})
    errors.update(perrors)
    body["policy"] = policy
    for field, scale, integer in (("exploration", 100.0, False), ("recompute_interval", 1.0, False)):
        try:
            value = _number(form.get(field, "").rstrip("%"), integer)
        except ValueError:
            errors[field] = "must be a number"
            continue
        if value is not None:
            body[field] = value / scale
    return body, errors


def _form_errors(err: ApiError) -> dict[str, str]:
    """Map the API's field paths to the form's fields (``variants[1].key`` → ``variants``)."""
    names = {
        "objective.reward": "reward",
        "objective.direction": "direction",
        "objective.unit": "unit",
        "policy.name": "policy_name",
        "policy": "policy_name",
    }
    out: dict[str, str] = {}
    for field, message in err.errors or [(err.field, err.message)]:
        f = field or "_"
        if f.startswith("variants["):
            index, _, rest = f[len("variants[") :].partition("]")
            where = f"line {int(index) + 1}" if index.isdigit() else f
            name, msg = "variants", f"{where}{' ' + rest.lstrip('.') if rest else ''}: {message}"
        elif f == "variants":
            name, msg = "variants", message
        elif f.startswith("policy.") and f not in names:
            name, msg = "policy_" + f.split(".", 1)[1], message
        else:
            name, msg = names.get(f, f), message
        out.setdefault(name, msg)
    return out


@authed
async def new_page(request: Request, session: Session) -> Response:
    """``GET /console/new``: the form."""
    return render(request, "new.html", {"session": session, "form": NEW_DEFAULTS, "errors": {}})


@authed
async def new_post(request: Request, session: Session) -> Response:
    """``POST /console/new``: create, or the form again with each error next to its field."""
    form = {**NEW_DEFAULTS, **request.state.form}
    body, errors = _new_body(form)
    c = ctx(request)

    def work() -> None:
        spec = validate_new_flag(body, c.settings.recompute_interval)
        if not errors:  # a field the form could not read is reported with the server's findings
            actions.create_flag(c.store, spec, c.rng(), session.key_name, _reason(form))

    try:
        await run_in_threadpool(work)
        if not errors:
            return _after(body["key"], "create")
    except ApiError as exc:
        errors = {**_form_errors(exc), **errors}
    return render(request, "new.html", {"session": session, "form": form, "errors": errors}, 422)
