"""``/v1/flags``: create, list, read, change controls, delete, history, stats, recompute (admin keys)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
from msgspec import Meta
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from banditflags_server.api.auth import actor, requires
from banditflags_server.api.config import rule_allocations_json
from banditflags_server.api.context import audit_log, ctx, flag_key, if_match, iso, read_body
from banditflags_server.api.operations import ApiRoute, Operation, Param
from banditflags_server.api.response_schemas import AuditLog, FlagList, FlagOut, History, Stats
from banditflags_server.api.responses import json_response
from banditflags_server.api.schemas import DeleteBody, FlagKey, NewFlagBody, PatchBody, Reason
from banditflags_server.api.validation import new_flag_from_json, patch_from_json, reason_from_json
from banditflags_server.engine import arm_estimates, srm_check, winner
from banditflags_server.engine.planning import params_for, with_context
from banditflags_server.engine.stattests import SRM_P
from banditflags_server.errors import ApiError, ValidationError, conflict, not_found
from banditflags_server.records import Flag, Periods
from banditflags_server.service import flags as actions
from banditflags_server.service import recompute as rc
from banditflags_server.storage import audit as audit_mod
from banditflags_server.storage.store import Store


def _num(x: Any) -> float | None:
    """A JSON-safe float (None for missing or non-finite)."""
    if x is None:
        return None
    f = float(x)
    return f if np.isfinite(f) else None


def stats_json(
    flag: Flag, periods: Periods, rng: np.random.Generator, *, sum_sq: bool = False
) -> list[dict[str, Any]]:
    """Per-variant totals over all versions plus the engine's estimates (mean, interval, P(best));
    ``clamped``: binary rewards above exposures left out (see :func:`warnings_json`)."""
    params = with_context(params_for(flag), flag, periods, time.time())
    k = flag.k
    clamped = periods.clamped_per_arm() if periods.n.shape[0] else np.zeros(k)
    if periods.n.shape[0] == 0:
        n = r = s = ss = np.zeros(k)
        estimates = arm_estimates(np.zeros(k), np.zeros(k), np.zeros(k), params, rng)
    else:
        n, r, s, ss = (a.sum(axis=0) for a in (periods.n, periods.r, periods.s, periods.ss))
        estimates = arm_estimates(periods.n, periods.s, periods.ss, params, rng)
    out = []
    for i, variant in enumerate(flag.variants):
        est = estimates[i]
        row: dict[str, Any] = {
            "variant": variant["key"],
            "n": int(n[i]),
            "rewards": int(r[i]),
            "sum": float(s[i]),
            "mean": _num(est.mean),
            "ci_low": _num(est.ci_low),
            "ci_high": _num(est.ci_high),
            "p_best": _num(est.p_best),
            "expected_loss": _num(est.expected_loss),
            "clamped": float(clamped[i]),
        }
        if sum_sq:
            row["sum_sq"] = float(ss[i])
        out.append(row)
    return out


def warnings_json(stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What an operator should know about the numbers: variants whose binary rewards outnumber their
    exposures in some version (repeats sent without decision ids), clamped to one per exposure."""
    return [
        {
            "code": "rewards_above_exposures",
            "variant": row["variant"],
            "clamped": row["clamped"],
            "message": f"{row['clamped']:g} conversions of variant {row['variant']!r} are more than its "
            "exposures (in some version) and were left out: conversions tracked more than once without "
            "decision ids (an older SDK, bf1 tokens), or exposures another process has not reported yet",
        }
        for row in stats
        if row.get("clamped")
    ]


def rules_report(
    flag: Flag, rule_periods: dict[str, Periods], rng: np.random.Generator, *, sum_sq: bool = False
) -> list[dict[str, Any]]:
    """Per rule (issue 12): each of the flag's rules in order, ``target`` if it has targets, then rule ids
    that only rows still name (rules deleted since); a bandit rule with its current version and weights
    (served from its own table), every rule with its stats in the flag's ``stats`` shape."""
    ids = [r["id"] for r in flag.rules] + (["target"] if flag.targets else [])
    ids += sorted(set(rule_periods) - set(ids))
    bandits = set(flag.bandit_rules)
    out = []
    for rule in ids:
        a = flag.rule_allocations.get(rule) if rule in bandits else None
        p = rule_periods.get(rule) or Periods([], [], *(np.zeros((0, flag.k)) for _ in range(4)))
        out.append(
            {
                "id": rule,
                "bandit": rule in bandits,
                "version": a.version if a else None,
                "weights": a.weights if a else None,
                "stats": stats_json(flag, p, rng, sum_sq=sum_sq),
            }
        )
    return out


class _Est:
    """The fields :func:`winner` reads, from a stats row."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.n = int(row["n"])
        self.p_best = row["p_best"]


def flag_json(flag: Flag, stats: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The flag as ``GET /v1/flags/{key}`` shows it."""
    a = flag.allocation
    out: dict[str, Any] = {
        "key": flag.key,
        "etag": flag.etag,
        "description": flag.description,
        "salt": flag.salt,
        "variants": flag.variants,
        "control": flag.variants[flag.control]["key"],
        "objective": flag.objective,
        "policy": params_for(flag).to_dict(),
        "state": flag.state,
        "exploration": flag.exploration,
        "baseline": flag.baseline,
        "recompute_interval": flag.recompute_interval,
        "version": flag.version,
        "weights": a.weights if a else None,
        "bandit_weights": flag.bandit_weights,
        "created_at": iso(flag.created_at),
        "updated_at": iso(flag.updated_at),
        "recomputed_at": iso(flag.recomputed_at),
        "guardrails": flag.guardrails,
        "disabled": [
            {"variant": key, **{k: (iso(v) if k == "at" else v) for k, v in rec.items()}}
            for key, rec in flag.disabled.items()
        ],
        "targets": flag.targets,
        "rules": flag.rules,
        "rule_allocations": rule_allocations_json(flag),
    }
    if stats is not None:
        out["stats"] = stats
        out["warnings"] = warnings_json(stats)
    return out


def _full(store: Store, flag: Flag, rng: np.random.Generator) -> dict[str, Any]:
    periods = store.load_periods({flag.key: flag.k})[flag.key]
    out = flag_json(flag, stats_json(flag, periods, rng))
    out["rules_report"] = rules_report(flag, store.load_rule_periods({flag.key: flag.k})[flag.key], rng)
    return out


def _get(store: Store, key: str, rng: np.random.Generator) -> dict[str, Any]:
    flag = store.get_flag(key)
    if flag is None:
        raise not_found(f"flag {key!r}")
    return _full(store, flag, rng)


@requires("admin")
async def list_flags(request: Request) -> Response:
    """``GET /v1/flags``; ``?stats=true`` adds per-variant stats (computed per flag, so opt-in)."""
    c = ctx(request)
    with_stats = _flag_param(request, "stats")

    def work() -> dict[str, Any]:
        flags = c.store.list_flags()
        if not with_stats:
            return {"flags": [flag_json(f, None) for f in flags]}
        periods = c.store.load_periods({f.key: f.k for f in flags})
        rng = c.rng()
        return {"flags": [flag_json(f, stats_json(f, periods[f.key], rng)) for f in flags]}

    return json_response(await run_in_threadpool(work))


@requires("admin")
async def create_flag(request: Request) -> Response:
    """``POST /v1/flags`` → 201 with the flag; 409 if the key is taken."""
    c = ctx(request)
    spec, reason = new_flag_from_json(await read_body(request), c.settings.recompute_interval)
    who = await actor(request)

    def work() -> dict[str, Any]:
        rng = c.rng()
        actions.create_flag(c.store, spec, rng, who, reason)
        return _get(c.store, spec.key, rng)

    body = await run_in_threadpool(work)
    return json_response(body, status=201, headers={"Location": f"/v1/flags/{spec.key}"})


@requires("admin")
async def get_flag(request: Request) -> Response:
    """``GET /v1/flags/{key}`` with fresh stats."""
    c = ctx(request)
    body = await run_in_threadpool(_get, c.store, flag_key(request), c.rng())
    return json_response(body, headers={"ETag": body["etag"]})


@requires("admin")
async def patch_flag(request: Request) -> Response:
    """``PATCH /v1/flags/{key}``: controls, policy, description, interval; all validated before writing.

    An optional ``reason`` goes to the audit log with the acting key's name."""
    c = ctx(request)
    key = flag_key(request)
    validate, reason = patch_from_json(await read_body(request))
    who = await actor(request)
    precondition = if_match(request)

    def work() -> dict[str, Any]:
        rng = c.rng()
        updated = actions.patch_flag(c.store, key, validate, rng, who, reason, precondition)
        return _full(c.store, updated, rng)

    body = await run_in_threadpool(work)
    return json_response(body, headers={"ETag": body["etag"]})


@requires("admin")
async def delete_flag(request: Request) -> Response:
    """``DELETE /v1/flags/{key}`` → 204; removes its allocations and stats too (the audit log stays).

    The optional reason comes as ``?reason=...`` or as a JSON body ``{"reason": "..."}`` (which wins).
    With ``If-Match``, a 412 (nothing deleted) if the flag changed since that ETag was read."""
    key = flag_key(request)
    precondition = if_match(request)
    reason = request.query_params.get("reason", "")
    # Both are checked (a bad one is a 422 even when the other is given); the body's wins when it has one.
    problem = audit_mod.validate_reason(reason)
    if problem is not None:
        raise ValidationError([("reason", problem)])
    raw = await read_body(request, optional=True)
    if raw.strip():
        reason = reason_from_json(raw) or reason
    who = await actor(request)
    await run_in_threadpool(actions.delete_flag, ctx(request).store, key, who, reason.strip(), precondition)
    return Response(status_code=204)


@requires("admin")
async def audit(request: Request) -> Response:
    """``GET /v1/flags/{key}/audit``: the flag's audit entries, newest first (``?limit=``, ``?before=``
    an entry id to page back). Kept after the flag is deleted."""
    return await audit_log(request, flag_key(request), "flag", ctx(request).store.get_flag)


StatsParam = Annotated[bool, Meta(description="true or false (the default)")]


def _flag_param(request: Request, name: str) -> bool:
    """A boolean query parameter: ``true`` or ``false`` (absent: false); 422 for anything else."""
    raw = request.query_params.get(name, "false")
    if raw not in ("true", "false"):
        raise ValidationError([(name, "must be true or false")])
    return raw == "true"


@requires("admin")
async def history(request: Request) -> Response:
    """``GET /v1/flags/{key}/history``: every allocation version, oldest first."""
    c = ctx(request)
    key = flag_key(request)

    def work() -> dict[str, Any]:
        if c.store.get_flag(key) is None:
            raise not_found(f"flag {key!r}")
        versions = [
            {
                "version": a.version,
                "created_at": iso(a.created_at),
                "weights": a.weights,
                "bandit_weights": a.bandit_weights,
                "reason": a.reason,
                "moved": a.moved,
            }
            for a in c.store.history(key)
        ]
        rules = {
            rule: [
                {"version": a.version, "created_at": iso(a.created_at), "weights": a.weights,
                 "bandit_weights": a.bandit_weights, "reason": a.reason, "moved": a.moved}
                for a in allocs
            ]
            for rule, allocs in c.store.rule_history(key).items()
        }  # fmt: skip
        return {"key": key, "versions": versions, "rules": rules}

    return json_response(await run_in_threadpool(work))


@requires("admin")
async def stats(request: Request) -> Response:
    """``GET /v1/flags/{key}/stats``: per-variant estimates and the raw counts per period."""
    c = ctx(request)
    key = flag_key(request)

    def work() -> dict[str, Any]:
        flag = c.store.get_flag(key)
        if flag is None:
            raise not_found(f"flag {key!r}")
        p = c.store.load_periods({key: flag.k})[key]
        periods = [
            {
                "version": v,
                "n": [int(x) for x in p.n[i]],
                "rewards": [int(x) for x in p.r[i]],
                "s": [float(x) for x in p.s[i]],
                "ss": [float(x) for x in p.ss[i]],
                "clamped": [float(x) for x in p.clamped[i]] if p.clamped is not None else [0.0] * flag.k,
            }
            for i, v in enumerate(p.versions)
        ]
        variants = stats_json(flag, p, c.rng(), sum_sq=True)
        served = {a.version: a.weights for a in c.store.history(key)}
        weights = [served.get(v, [0.0] * flag.k) for v in p.versions]
        for row, w in zip(periods, weights, strict=True):
            row["weights"] = w
        srm = (
            srm_check(p.n, weights) if p.versions else srm_check(np.zeros((1, flag.k)), np.ones((1, flag.k)))
        )
        params = params_for(flag)
        est = [_Est(v) for v in variants]
        win = winner(est, params.winner_p, params.winner_min_n)  # type: ignore[arg-type]
        by_rule = c.store.load_rule_periods({key: flag.k})[key]
        return {
            "key": key,
            "version": flag.version,
            "rules": rules_report(flag, by_rule, c.rng(), sum_sq=True),
            "variants": variants,
            "warnings": warnings_json(variants),
            "periods": periods,
            "srm": {
                "chi2": _num(srm.chi2),
                "df": srm.df,
                "p_value": srm.p_value,
                "mismatch": srm.mismatch,
                "threshold": SRM_P,
            },
            "winner": {
                "variant": None if win is None else flag.variants[win]["key"],
                "threshold": params.winner_p,
                "min_n": params.winner_min_n,
                "auto_promote": params.auto_promote,
            },
        }

    return json_response(await run_in_threadpool(work))


@requires("admin")
async def recompute_now(request: Request) -> Response:
    """``POST /v1/flags/{key}/recompute`` → 200 with the flag; 409 for frozen or killed flags."""
    c = ctx(request)
    key = flag_key(request)

    def work() -> dict[str, Any]:
        rng = c.rng()
        try:
            rc.recompute_flag(c.store, key, rng, force=True)
        except rc.FlagNotFound:
            raise not_found(f"flag {key!r}") from None
        except rc.NotRunning:
            raise conflict("the flag is frozen or killed: it is not recomputed", field="state") from None
        except rc.Conflict:
            raise ApiError(409, "the flag is being changed concurrently; try again") from None
        return _get(c.store, key, rng)

    return json_response(await run_in_threadpool(work))


KEY = Param("key", "path", FlagKey, "the flag's key", required=True)
_ETAG_DOC = ("the flag's ETag: changes with what operators set, not with recomputes", True)
IF_MATCH = Param(
    "If-Match", "header", str, "an ETag of it (or *): 412, and nothing changed, if it no longer is"
)
_REASON = Param("reason", "query", Reason, "why, for the audit log (or in the body)")
#: The paging parameters of an audit route (flags' and segments').
AUDIT_PAGE = (
    Param("limit", "query", Annotated[int, Meta(ge=1, le=1000)], "entries at most (100)"),
    Param("before", "query", Annotated[int, Meta(ge=1, le=2**62)], "an entry id: older ones"),
)
#: What ``POST /v1/flags`` links to: each takes the new flag's ``key``.
ON_A_FLAG = ("getFlag", "patchFlag", "deleteFlag", "flagHistory", "flagStats", "flagAudit", "recomputeFlag")

routes = [
    ApiRoute(
        "/v1/flags",
        list_flags,
        "GET",
        Operation(
            "listFlags",
            "Every flag",
            "admin",
            "flags",
            answer=FlagList,
            params=(Param("stats", "query", StatsParam, "add per-variant stats (computed per flag)"),),
        ),
    ),
    ApiRoute(
        "/v1/flags",
        create_flag,
        "POST",
        Operation(
            "createFlag",
            "Create a flag",
            "admin",
            "flags",
            ok=201,
            answer=FlagOut,
            body=NewFlagBody,
            also=(409,),
            headers={201: {"Location": ("the new flag's URL", True)}},
            links=ON_A_FLAG,
        ),
    ),
    ApiRoute(
        "/v1/flags/{key}",
        get_flag,
        "GET",
        Operation(
            "getFlag",
            "A flag with fresh stats",
            "admin",
            "flags",
            answer=FlagOut,
            params=(KEY,),
            headers={200: {"ETag": _ETAG_DOC}},
        ),
    ),
    ApiRoute(
        "/v1/flags/{key}",
        patch_flag,
        "PATCH",
        Operation(
            "patchFlag",
            "Change a flag's controls; only the fields given change",
            "admin",
            "flags",
            answer=FlagOut,
            body=PatchBody,
            params=(KEY, IF_MATCH),
            also=(409, 412),
            headers={200: {"ETag": _ETAG_DOC}},
        ),
    ),
    ApiRoute(
        "/v1/flags/{key}",
        delete_flag,
        "DELETE",
        Operation(
            "deleteFlag",
            "Delete a flag with its allocations and stats (its audit log stays)",
            "admin",
            "flags",
            ok=204,
            body=DeleteBody,
            body_optional=True,
            params=(KEY, _REASON, IF_MATCH),
            also=(412,),
        ),
    ),
    ApiRoute(
        "/v1/flags/{key}/history",
        history,
        "GET",
        Operation("flagHistory", "Every allocation version", "admin", "flags", answer=History, params=(KEY,)),
    ),
    ApiRoute(
        "/v1/flags/{key}/stats",
        stats,
        "GET",
        Operation(
            "flagStats", "Estimates and raw counts per version", "admin", "flags", answer=Stats, params=(KEY,)
        ),
    ),
    ApiRoute(
        "/v1/flags/{key}/audit",
        audit,
        "GET",
        Operation(
            "flagAudit",
            "The flag's audit entries, newest first (kept after it is deleted)",
            "admin",
            "flags",
            answer=AuditLog,
            params=(KEY, *AUDIT_PAGE),
        ),
    ),
    ApiRoute(
        "/v1/flags/{key}/recompute",
        recompute_now,
        "POST",
        Operation(
            "recomputeFlag",
            "Recompute the weights now (409 for frozen or killed flags)",
            "admin",
            "flags",
            answer=FlagOut,
            params=(KEY,),
            also=(409,),
        ),
    ),
]

__all__ = ["AUDIT_PAGE", "flag_json", "routes", "rules_report", "stats_json", "warnings_json"]
