"""The flag console: server-rendered pages for the on-call engineer (no CDN, no build step).

Log in with an admin key (:mod:`banditflags_server.sessions`: an HttpOnly, SameSite=Strict cookie);
every change is a POST carrying the session's CSRF token and goes through the same
:mod:`banditflags_server.service.flags` as the HTTP API, so it is validated the same way and audited with the
key's name. Pages: the flags list, a flag (variants, charts, version history, audit log, controls), and
a form to create a flag. The only script (``static/console.js``) opens the confirmation dialogs.

Routes (all under ``/console``; ``/`` redirects here)::

    GET  /console/login            POST /console/login          POST /console/logout
    GET  /console/                 GET  /console/new            POST /console/new
    GET  /console/flags/{key}      POST /console/flags/{key}/state | /exploration | /policy
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from banditflags_server.api.context import Context, ctx, iso
from banditflags_server.api.flags import stats_json
from banditflags_server.api.validation import patch_validator, validate_new_flag
from banditflags_server.console import charts, sessions
from banditflags_server.console.sessions import Session
from banditflags_server.engine.planning import params_for
from banditflags_server.errors import ApiError
from banditflags_server.records import Flag
from banditflags_server.service import flags as actions
from banditflags_server.storage import audit as audit_mod
from banditflags_server.storage.reports import read_reports

HERE = Path(__file__).parent
PREFIX = "/console"
COOKIE = "bf_console"
LOGIN_COOKIE = "bf_login"
MAX_FORM = 64 * 1024
#: Flags per page of the list (their P(best) is computed per page view).
PAGE_SIZE = 100
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
POLICY_FIELDS = ("floor", "burn_in", "max_step", "half_life", "draws", "epsilon", "top_two_beta", "weights")
POLICIES = ("thompson", "top_two_thompson", "ucb1", "epsilon_greedy", "fixed")

templates = Jinja2Templates(directory=str(HERE / "templates"))

Handler = Callable[[Request, Session], Awaitable[Response]]


# -- formatting helpers (Jinja filters) -------------------------------------------------------------


def ago(ts: float | None, now: float | None = None) -> str:
    """A short relative time: ``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``.

    >>> ago(100.0, now=112.4), ago(0.0, now=7200.0), ago(None)
    ('12 s ago', '2 h ago', 'never')
    """
    if ts is None:
        return "never"
    d = max(0.0, (time.time() if now is None else now) - ts)
    if d < 90:
        return f"{d:.0f} s ago"
    if d < 5400:
        return f"{d / 60:.0f} min ago"
    if d < 172800:
        return f"{d / 3600:.0f} h ago"
    return f"{d / 86400:.0f} d ago"


def pct(x: float | None, digits: int = 1) -> str:
    """A share as a percentage; ``—`` for None.

    >>> pct(0.3333), pct(None), pct(1.0, 0)
    ('33.3%', '—', '100%')
    """
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x * 100:.{digits}f}%"


def num(x: float | None) -> str:
    """A reward mean or bound, compactly.

    >>> num(0.04567), num(1234.5), num(None)
    ('0.0457', '1.23e+03', '—')
    """
    if x is None:
        return "—"
    return f"{x:.3g}" if abs(x) >= 1000 else f"{x:.4f}".rstrip("0").rstrip(".") if x != 0 else "0"


def compact(value: Any) -> str:
    """A JSON value, short, for tables (the audit log's before and after)."""
    text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "…"


def utc(ts: float | None) -> str:
    """An absolute UTC time for title attributes."""
    return (iso(ts) or "").replace("T", " ").replace("Z", " UTC")


templates.env.filters.update(ago=ago, pct=pct, num=num, compact=compact, utc=utc)
templates.env.globals.update(colour=charts.colour, policies=POLICIES)


# -- plumbing ---------------------------------------------------------------------------------------


def is_console(request: Request) -> bool:
    """Whether an error on this request should be an HTML page rather than JSON."""
    path = request.url.path
    return path == "/" or path == PREFIX or path.startswith(PREFIX + "/")


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """A template response with the console's security headers."""
    context.setdefault("now", time.time())
    resp = templates.TemplateResponse(request, name, context, status_code=status)
    resp.headers.update(SECURITY_HEADERS)
    return resp


def error_page(request: Request, status: int, message: str) -> Response:
    """An HTML error page (404 inside the console, refused CSRF, ...)."""
    return render(request, "error.html", {"status": status, "message": message, "session": None}, status)


def _redirect(url: str) -> Response:
    resp = RedirectResponse(url, status_code=303)
    resp.headers.update(SECURITY_HEADERS)
    return resp


def _set_cookie(request: Request, resp: Response, name: str, value: str, max_age: int) -> None:
    resp.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form body (the console's forms are all urlencoded); last value wins."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM:
            raise ApiError(413, "the form is too large")
    parsed = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


def authed(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Pages and actions need a live session: else the login page (nothing changes). Every POST must
    carry the session's CSRF token: else 403 (nothing changes)."""

    async def endpoint(request: Request) -> Response:
        c = ctx(request)
        session = await run_in_threadpool(sessions.lookup, c.store.engine, request.cookies.get(COOKIE))
        if session is None:
            target = request.url.path if request.method == "GET" else PREFIX + "/"
            return _redirect(f"{PREFIX}/login?next={quote(target)}")
        if request.method == "POST":
            form = await _form(request)
            if not session.csrf_ok(form.get("csrf")):
                return error_page(
                    request,
                    403,
                    "This change was refused: the form's security token is missing or out of date. "
                    "Nothing was changed. Reload the page and try again.",
                )
            request.state.form = form
        return await handler(request, session)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def _safe_next(value: str | None) -> str:
    if value and value.startswith(PREFIX + "/") and "//" not in value and "\\" not in value:
        return value
    return PREFIX + "/"


# -- login ------------------------------------------------------------------------------------------


async def root(request: Request) -> Response:
    """``/`` → the console."""
    return _redirect(PREFIX + "/")


async def login_page(request: Request, *, error: str | None = None, status: int = 200) -> Response:
    """The login form; sets a one-time token cookie that the form echoes (login CSRF)."""
    token = sessions.new_token()
    resp = render(
        request,
        "login.html",
        {
            "session": None,
            "token": token,
            "error": error,
            "next": _safe_next(request.query_params.get("next")),
        },
        status,
    )
    _set_cookie(request, resp, LOGIN_COOKIE, token, 3600)
    return resp


async def login_get(request: Request) -> Response:
    """``GET /console/login``."""
    return await login_page(request, error="Signed out." if request.query_params.get("bye") else None)


async def login_post(request: Request) -> Response:
    """``POST /console/login`` with ``key`` (an admin key), ``token``, ``next``."""
    form = await _form(request)
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not sessions.Session("", expected, 0.0).csrf_ok(form.get("token")):
        return await login_page(request, error="The login form expired. Please try again.", status=403)
    key = form.get("key", "").strip()
    if not key:
        return await login_page(request, error="Enter an admin key.", status=422)
    got = await run_in_threadpool(sessions.login, ctx(request).store.engine, key)
    if got == "not_admin":
        return await login_page(
            request, error="An sdk key cannot sign in: the console needs an admin key.", status=403
        )
    if isinstance(got, str):
        return await login_page(request, error="Unknown key.", status=401)
    sid, _ = got
    resp = _redirect(_safe_next(form.get("next")))
    _set_cookie(request, resp, COOKIE, sid, int(sessions.SESSION_SECONDS))
    resp.delete_cookie(LOGIN_COOKIE, path=PREFIX)
    return resp


@authed
async def logout(request: Request, session: Session) -> Response:
    """``POST /console/logout``: ends the session everywhere (it is in the database)."""
    await run_in_threadpool(sessions.logout, ctx(request).store.engine, request.cookies.get(COOKIE))
    resp = _redirect(f"{PREFIX}/login?bye=1")
    resp.delete_cookie(COOKIE, path=PREFIX)
    return resp


# -- flags list -------------------------------------------------------------------------------------


def _served(flag: Flag, arm: int, weight: float) -> float:
    if flag.state == "killed":
        return 1.0 if arm == flag.control else 0.0
    return weight


def _leader(stats: list[dict[str, Any]]) -> tuple[str | None, float | None]:
    best = max((s for s in stats if s["p_best"] is not None), key=lambda s: s["p_best"], default=None)
    return (best["variant"], best["p_best"]) if best else (None, None)


def _row(flag: Flag, stats: list[dict[str, Any]]) -> dict[str, Any]:
    leader, p_best = _leader(stats)
    weights = flag.allocation.weights if flag.allocation else [0.0] * flag.k
    return {
        "key": flag.key,
        "description": flag.description,
        "state": flag.state,
        "exploration": flag.exploration,
        "variants": [
            {"key": v["key"], "weight": w, "control": i == flag.control}
            for i, (v, w) in enumerate(zip(flag.variants, weights, strict=True))
        ],
        # What SDKs serve now: a killed flag sends everyone to the control whatever its table says.
        "served": [
            {"key": v["key"], "weight": _served(flag, i, w), "control": i == flag.control}
            for i, (v, w) in enumerate(zip(flag.variants, weights, strict=True))
        ],
        "control": flag.variants[flag.control]["key"],
        "exposures": sum(s["n"] for s in stats),
        "leader": leader,
        "p_best": p_best,
        "version": flag.version,
        "policy": flag.policy.get("name", "thompson"),
        "updated_at": flag.updated_at,
    }


def _list(c: Context, query: str, state: str, page: int) -> dict[str, Any]:
    flags = c.store.list_flags()
    counts = {s: sum(1 for f in flags if f.state == s) for s in ("running", "frozen", "killed")}
    shown = [f for f in flags if (not query or query in f.key) and (not state or f.state == state)]
    pages = max(1, math.ceil(len(shown) / PAGE_SIZE))
    page = min(max(1, page), pages)
    chunk = shown[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    periods = c.store.load_periods({f.key: f.k for f in chunk})
    rng = c.rng()
    rows = [_row(f, stats_json(f, periods[f.key], rng)) for f in chunk]
    return {
        "rows": rows,
        "total": len(flags),
        "matching": len(shown),
        "counts": counts,
        "page": page,
        "pages": pages,
        "query": query,
        "state": state,
        "reports": read_reports(c.store.engine),
    }


@authed
async def flags_page(request: Request, session: Session) -> Response:
    """``GET /console/``: every flag with its state, split, exposures and leader."""
    q = request.query_params
    page = int(q["page"]) if q.get("page", "").isdigit() else 1
    state = q.get("state", "") if q.get("state", "") in ("running", "frozen", "killed") else ""
    data = await run_in_threadpool(_list, ctx(request), q.get("q", "").strip()[:64], state, page)
    return render(request, "flags.html", {"session": session, **data})


# -- one flag ---------------------------------------------------------------------------------------


def _detail(c: Context, key: str) -> dict[str, Any] | None:
    flag = c.store.get_flag(key)
    if flag is None:
        return None
    now = time.time()
    periods = c.store.load_periods({key: flag.k})[key]
    rng = c.rng()
    stats = stats_json(flag, periods, rng)
    history = c.store.history(key)
    entries = audit_mod.entries(c.store.engine, key, limit=1000)
    labels = [v["key"] for v in flag.variants]
    state_changes = [
        (e.at, e.after["state"]) for e in reversed(entries) if e.after is not None and "state" in e.after
    ]
    if flag.state == "killed" and not any(s == "killed" for _, s in state_changes):
        state_changes.insert(0, (flag.created_at, "killed"))  # created killed
    allocation = charts.allocation_svg(
        [a.created_at for a in history],
        [a.weights for a in history],
        labels,
        now=now,
        killed=charts.killed_spans(state_changes, now),
    )
    cum_n = np.cumsum(periods.n, axis=0) if periods.n.size else np.zeros((0, flag.k))
    cum_s = np.cumsum(periods.s, axis=0) if periods.s.size else np.zeros((0, flag.k))
    means = [
        [float(s / n) if n > 0 else None for n, s in zip(rn, rs, strict=True)]
        for rn, rs in zip(cum_n, cum_s, strict=True)
    ]
    reward = charts.reward_svg(periods.created_at, means, labels, now=now)
    last_kill = next((e for e in entries if e.action == "kill"), None)
    unkill_to = (
        "frozen"
        if last_kill and last_kill.before and last_kill.before.get("state") == "frozen"
        else "running"
    )
    weights = flag.allocation.weights if flag.allocation else [0.0] * flag.k
    variants = [
        {
            "key": v["key"],
            "value": compact(v["value"]),
            "weight": weights[i],
            "served": _served(flag, i, weights[i]),
            "bandit_weight": flag.bandit_weights[i] if i < len(flag.bandit_weights) else None,
            "control": i == flag.control,
            "stats": stats[i],
        }
        for i, v in enumerate(flag.variants)
    ]
    leader, p_best = _leader(stats)
    return {
        "flag": flag,
        "control": labels[flag.control],
        "variants": variants,
        "leader": leader,
        "p_best": p_best,
        "exposures": sum(s["n"] for s in stats),
        "policy": params_for(flag).to_dict(),
        "history": list(reversed(history))[:50],
        "history_total": len(history),
        "audit": entries[:50],
        "audit_total": len(entries),
        "allocation_svg": allocation,
        "reward_svg": reward,
        "unkill_to": unkill_to,
        "reward_kind": flag.objective.get("reward", "binary"),
        "direction": flag.objective.get("direction", "maximize"),
    }


DONE = {
    "kill": "Killed. Every connected SDK now serves the control variant to every unit.",
    "unkill": "Un-killed. SDKs serve the kept table again: every unit is back on the variant it had.",
    "freeze": "Frozen. The table stays as it is; exposures are still counted.",
    "resume": "Resumed. The bandit updates the weights again at the next recompute.",
    "throttle": "Exploration changed. The served split was recomputed (minimal movement).",
    "policy": "Policy parameters saved. The bandit weights were recomputed.",
    "create": "Flag created. SDKs receive it within a second.",
    "none": "Nothing changed: the flag already had these values.",
}


async def _flag_view(
    request: Request,
    session: Session,
    key: str,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    data = await run_in_threadpool(_detail, ctx(request), key)
    if data is None:
        return error_page(request, 404, f"There is no flag {key!r}. It may have been deleted.")
    done = request.query_params.get("done", "")
    context = {
        "session": session,
        **data,
        "done": DONE.get(done),
        "errors": errors or {},
        "form": form or {},
    }
    return render(request, "flag.html", context, status)


@authed
async def flag_page(request: Request, session: Session) -> Response:
    """``GET /console/flags/{key}``."""
    return await _flag_view(request, session, request.path_params["key"])


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


def _reason(form: dict[str, str]) -> str:
    return form.get("reason", "").strip()[: audit_mod.MAX_REASON]


def _after(key: str, done: str) -> Response:
    return _redirect(f"{PREFIX}/flags/{quote(key)}?done={done}")


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
        return await _flag_view(request, session, key, errors={"state": err.message}, status=err.status)
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
        return await _flag_view(
            request,
            session,
            key,
            errors={"exploration": "must be a number from 0 to 100 (%)"},
            form=form,
            status=422,
        )
    err = await _patch(request, session, {"exploration": round(value / 100.0, 6)}, _reason(form))
    if err is not None:
        return await _flag_view(
            request, session, key, errors=_field_errors(err), form=form, status=err.status
        )
    return _after(key, "throttle")


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


def _field_errors(err: ApiError) -> dict[str, str]:
    out: dict[str, str] = {}
    for field, message in err.errors or [(err.field, err.message)]:
        out.setdefault(field or "_", message)
    if not out:
        out["_"] = err.message
    return out


@authed
async def set_policy(request: Request, session: Session) -> Response:
    """``POST /console/flags/{key}/policy``: policy name and parameters."""
    form: dict[str, str] = request.state.form
    key: str = request.path_params["key"]
    policy, errors = _policy_from_form(form)
    if errors:
        return await _flag_view(request, session, key, errors=errors, form=form, status=422)
    err = await _patch(request, session, {"policy": policy}, _reason(form))
    if err is not None:
        return await _flag_view(
            request, session, key, errors=_field_errors(err), form=form, status=err.status
        )
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


routes: list[BaseRoute] = [
    Route("/", root, methods=["GET"]),
    Route(PREFIX, root, methods=["GET"]),
    Route(PREFIX + "/", flags_page, methods=["GET"]),
    Route(PREFIX + "/login", login_get, methods=["GET"]),
    Route(PREFIX + "/login", login_post, methods=["POST"]),
    Route(PREFIX + "/logout", logout, methods=["POST"]),
    Route(PREFIX + "/new", new_page, methods=["GET"]),
    Route(PREFIX + "/new", new_post, methods=["POST"]),
    Route(PREFIX + "/flags/{key}", flag_page, methods=["GET"]),
    Route(PREFIX + "/flags/{key}/state", set_state, methods=["POST"]),
    Route(PREFIX + "/flags/{key}/exploration", set_exploration, methods=["POST"]),
    Route(PREFIX + "/flags/{key}/policy", set_policy, methods=["POST"]),
    Mount(PREFIX + "/static", StaticFiles(directory=str(HERE / "static")), name="static"),
]
