"""The console's read-only pages: the flags list (``/console/``) and one flag (``/console/flags/{key}``)
with its variants and estimates, the allocation and reward charts, the version history and the audit
log. The flag page is also where a refused change is shown again, with its errors (:func:`flag_view`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.context import Context, ctx
from banditflags_server.api.flags import rules_report, stats_json, warnings_json
from banditflags_server.console import charts
from banditflags_server.console.auth import authed
from banditflags_server.console.palette import colours
from banditflags_server.console.rules_view import draft_from_flag, targeting_view
from banditflags_server.console.sessions import Session
from banditflags_server.console.templating import PREFIX, compact, error_page, redirect, render
from banditflags_server.engine.planning import params_for
from banditflags_server.records import Flag
from banditflags_server.storage import audit as audit_mod
from banditflags_server.storage.reports import read_reports

#: Flags per page of the list (their P(best) is computed per page view).
PAGE_SIZE = 100

#: What the flag page says after a change redirected to it with ``?done=``.
DONE = {
    "kill": "Killed. Every connected SDK now serves the control variant to every unit.",
    "unkill": "Un-killed. SDKs serve the kept table again: every unit is back on the variant it had.",
    "freeze": "Frozen. The table stays as it is; exposures are still counted.",
    "resume": "Resumed. The bandit updates the weights again at the next recompute.",
    "throttle": "Exploration changed. The served split was recomputed (minimal movement).",
    "policy": "Policy parameters saved. The bandit weights were recomputed.",
    "create": "Flag created. SDKs receive it within a second.",
    "targeting": "Targets and rules saved. SDKs evaluate them within a second.",
    "none": "Nothing changed: the flag already had these values.",
}


async def root(request: Request) -> Response:
    """``/`` → the console."""
    return redirect(PREFIX + "/")


def _served(flag: Flag, arm: int, weight: float) -> float:
    if flag.state == "killed":
        return 1.0 if arm == flag.control else 0.0
    return weight


def _leader(stats: list[dict[str, Any]]) -> tuple[str | None, float | None]:
    best = max((s for s in stats if s["p_best"] is not None), key=lambda s: s["p_best"], default=None)
    return (best["variant"], best["p_best"]) if best else (None, None)


# -- flags list -------------------------------------------------------------------------------------


def _row(flag: Flag, stats: list[dict[str, Any]]) -> dict[str, Any]:
    leader, p_best = _leader(stats)
    weights = flag.allocation.weights if flag.allocation else [0.0] * flag.k
    palette = colours([v["key"] for v in flag.variants])
    return {
        "key": flag.key,
        "description": flag.description,
        "state": flag.state,
        "exploration": flag.exploration,
        "variants": [
            {"key": v["key"], "weight": w, "control": i == flag.control, "colour": palette[i]}
            for i, (v, w) in enumerate(zip(flag.variants, weights, strict=True))
        ],
        # What SDKs serve now: a killed flag sends everyone to the control whatever its table says.
        "served": [
            {
                "key": v["key"],
                "weight": _served(flag, i, w),
                "control": i == flag.control,
                "colour": palette[i],
            }
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
    raw = q.get("page", "")
    # isascii and a length cap: int() refuses "²" and numbers of more than 4300 digits (both were 500s).
    page = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else 1
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
    binary = flag.objective.get("reward", "binary") == "binary"
    reward = charts.reward_svg(periods.created_at, means, labels, now=now, percent=binary)
    last_kill = next((e for e in entries if e.action == "kill"), None)
    unkill_to = (
        "frozen"
        if last_kill and last_kill.before and last_kill.before.get("state") == "frozen"
        else "running"
    )
    weights = flag.allocation.weights if flag.allocation else [0.0] * flag.k
    palette = colours(labels)
    variants = [
        {
            "key": v["key"],
            "colour": palette[i],
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
    report = rules_report(flag, c.store.load_rule_periods({key: flag.k})[key], rng)
    return {
        "flag": flag,
        "targeting": targeting_view(flag, report, palette),
        "editor": {"draft": draft_from_flag(flag), "errors": {}, "unsaved": False, "reason": ""},
        "segment_keys": [s.key for s in c.store.list_segments()],
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
        "warnings": warnings_json(stats),
    }


async def flag_view(
    request: Request,
    session: Session,
    key: str,
    *,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    editor: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    """The flag page; after a refused change, with its ``errors`` by field and the submitted ``form``;
    ``editor``: the targeting editor's unsaved rows and their errors (:mod:`.targeting`)."""
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
    if editor is not None:
        context["editor"] = editor
    return render(request, "flag.html", context, status)


@authed
async def flag_page(request: Request, session: Session) -> Response:
    """``GET /console/flags/{key}``."""
    return await flag_view(request, session, request.path_params["key"])
