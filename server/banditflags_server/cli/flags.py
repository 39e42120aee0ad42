"""``banditflags flags ...``: the operator's actions from a terminal, through the HTTP API.

Needs only httpx (an SDK dependency), not the server extra. The server and key come from
``--url``/``BANDITFLAGS_URL`` (default ``http://127.0.0.1:8080``) and ``--admin-key``/
``BANDITFLAGS_ADMIN_KEY``. Every change accepts ``--reason``, which goes to the audit log. The client,
the exit codes and the tables are :mod:`banditflags_server.cli.api`'s; targets and rules (``show``,
``rules``, ``set-rule``, ``remove-rule``, ``target``, ``untarget``) are
:mod:`banditflags_server.cli.targeting`'s.

Exit codes, for scripts:

====  ====================================================================================
0     done (or nothing to do: the flag already was in that state)
1     server or network error (unreachable, timeout, 5xx, an answer that is not the API's)
2     usage: bad options, no admin key, or the key is unknown or not an admin key (401/403)
3     not found: no such flag (404)
4     rejected input: the server refused the values (400, 409, 413, 415, 422); nothing changed
====  ====================================================================================
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from banditflags_server.cli import targeting
from banditflags_server.cli.api import (
    NOT_FOUND,
    OK,
    REJECTED,
    USAGE,
    Api,
    CliError,
    common_parsers,
    connect,
    read_json,
    table,
)

__all__ = ["NOT_FOUND", "add_parser", "run", "table"]


def _pct(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{float(x) * 100:.{digits}f}%"


def _num(x: Any) -> str:
    return "-" if x is None else f"{float(x):.4g}"


def _served(flag: dict[str, Any]) -> list[float]:
    """What SDKs serve now: a killed flag sends every unit to the control, whatever its kept table says."""
    if flag["state"] == "killed":
        return [1.0 if v["key"] == flag["control"] else 0.0 for v in flag["variants"]]
    return list(flag.get("weights") or [])


def _split(flag: dict[str, Any], weights: list[float] | None = None) -> str:
    """The split as ``a=50% b=50%``: the served one (marked when killed) unless ``weights`` are given."""
    shown = _served(flag) if weights is None else weights
    text = " ".join(f"{v['key']}={_pct(w, 0)}" for v, w in zip(flag["variants"], shown, strict=False))
    return text + (" (killed)" if weights is None and flag["state"] == "killed" else "")


def _leader(flag: dict[str, Any]) -> tuple[str, str]:
    stats = [s for s in flag.get("stats") or [] if s.get("p_best") is not None]
    if not stats:
        return "-", "-"
    best = max(stats, key=lambda s: s["p_best"])
    return best["variant"], _pct(best["p_best"])


# -- commands ---------------------------------------------------------------------------------------


def _list(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    data = api.call("GET", "/v1/flags", params={"stats": "true"})
    flags = [f for f in data["flags"] if not args.state or f["state"] == args.state]
    if args.json:
        print(json.dumps({"flags": flags}, indent=2), file=out)
        return OK
    if not flags:
        print("no flags", file=out)
        return OK
    rows = []
    for f in flags:
        leader, p_best = _leader(f)
        exposures = sum(s["n"] for s in f.get("stats") or [])
        rows.append(
            [
                f["key"],
                f["state"],
                _pct(f["exploration"], 0),
                _split(f),
                f"{exposures:,}",
                leader,
                p_best,
                str(f["version"]),
                str(len(f.get("rules") or [])),
            ]
        )
    headers = ["KEY", "STATE", "EXPLORE", "SPLIT", "EXPOSURES", "LEADER", "P(BEST)", "VERSION", "RULES"]
    print(table(headers, rows, right={2, 4, 6, 7, 8}), file=out)
    return OK


def _show(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    flag = api.call("GET", f"/v1/flags/{args.key}")
    audit = api.call("GET", f"/v1/flags/{args.key}/audit", params={"limit": "5"})
    if args.json:
        print(json.dumps({**flag, "audit": audit["entries"]}, indent=2), file=out)
        return OK
    p = flag["policy"]
    print(f"{flag['key']}  [{flag['state']}]  version {flag['version']}", file=out)
    if flag.get("description"):
        print(f"  {flag['description']}", file=out)
    print(
        f"  control {flag['control']} · policy {p['name']} · exploration {_pct(flag['exploration'], 0)}"
        f" · baseline {flag['baseline']} · recompute every {flag['recompute_interval']:g} s",
        file=out,
    )
    killed = flag["state"] == "killed"
    if killed:
        print(
            f"  killed: every unit is served the control {flag['control']!r}; the kept split "
            f"({_split(flag, flag.get('weights') or [])}) is served again on unkill",
            file=out,
        )
    for w in flag.get("warnings") or []:
        print(f"  warning: {w['message']}", file=out)
    served = _served(flag)
    rows = []
    for i, (v, s) in enumerate(zip(flag["variants"], flag["stats"], strict=True)):
        ci = "-" if s["ci_low"] is None else f"{_num(s['ci_low'])}..{_num(s['ci_high'])}"
        weight = flag["weights"][i] if flag.get("weights") else None
        name = v["key"] + (" (control)" if v["key"] == flag["control"] else "")
        row = [name, f"{s['n']:,}", _num(s["mean"]), ci, _pct(s["p_best"])]
        rows.append([*row, _pct(served[i]), _pct(weight)] if killed else [*row, _pct(weight)])
    headers = ["VARIANT", "N", "MEAN", "95% CI", "P(BEST)", *(["SERVED", "KEPT"] if killed else ["WEIGHT"])]
    print("", file=out)
    print(table(headers, rows, right=set(range(1, len(headers)))), file=out)
    targeting.print_targeting(flag, out)
    if audit["entries"]:
        print("\nrecent changes:", file=out)
        for e in audit["entries"]:
            change = ", ".join(
                f"{k} {targeting.audited(k, (e.get('before') or {}).get(k))} -> {targeting.audited(k, v)}"
                for k, v in (e.get("after") or {}).items()
                if k not in ("weights", "version") and e["action"] not in ("create", "delete")
            )
            reason = f' "{e["reason"]}"' if e.get("reason") else ""
            print(f"  {e['at']}  {e['actor']:<16} {e['action']:<8} {change}{reason}", file=out)
    return OK


def _read_spec(args: argparse.Namespace) -> dict[str, Any]:
    if args.file:
        given = read_json(args.file)
        if not isinstance(given, dict):
            raise CliError(USAGE, "--file: must hold a JSON object")
        given.setdefault("key", args.key)
        return given
    if not args.variant:
        raise CliError(USAGE, "give the variants (--variant NAME, twice or more) or --file spec.json")
    spec: dict[str, Any] = {"key": args.key, "variants": []}
    for v in args.variant:
        name, sep, value = v.partition("=")
        if not sep:
            spec["variants"].append(v)
            continue
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        spec["variants"].append({"key": name, "value": parsed})
    if args.control:
        spec["control"] = args.control
    spec["objective"] = {"reward": args.reward, "direction": args.direction, "unit": args.unit}
    # Without --policy the server chooses: thompson, or fixed for a one-variant (plain) flag.
    policy: dict[str, Any] = {"name": args.policy} if args.policy else {}
    for item in args.param or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise CliError(USAGE, f"--param {item!r}: expected NAME=VALUE")
        try:
            policy[name] = json.loads(value)
        except ValueError:
            policy[name] = value
    if policy:
        spec["policy"] = policy
    if args.exploration is not None:
        spec["exploration"] = _exploration(args.exploration)
    if args.description:
        spec["description"] = args.description
    return spec


def _create(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    spec = _read_spec(args)
    if args.reason:
        spec["reason"] = args.reason
    flag = api.call("POST", "/v1/flags", spec)
    if args.json:
        print(json.dumps(flag, indent=2), file=out)
    else:
        print(f"{flag['key']}: created ({flag['state']}), split {_split(flag)}", file=out)
    return OK


def _exploration(raw: str) -> float:
    """A share as typed: ``0.15`` or ``15%``; out of range is rejected input (exit 4), with the range."""
    text = raw.strip()
    percent = text.endswith("%")
    try:
        value = float(text[:-1].strip() if percent else text)
    except ValueError:
        raise CliError(
            USAGE, f"exploration {raw!r}: expected a share like 0.2 or a percentage like 20%"
        ) from None
    share = value / 100.0 if percent else value
    if not 0.0 <= share <= 1.0:  # (NaN too)
        hint = f"; did you mean {value:g}%?" if not percent and 1.0 < value <= 100.0 else ""
        raise CliError(
            REJECTED,
            f"exploration {raw!r} is out of range: it is the share of traffic the bandit may allocate "
            f"(the rest goes to the baseline), from 0 to 1 or 0% to 100%{hint}",
        )
    return share


WHAT = {
    "killed": "every SDK serves the control variant {control!r} to every unit",
    "frozen": "the current split is kept and exposures are still counted; weights stop changing",
    "running": "the bandit learns and updates the weights again",
}


def _set_state(api: Api, args: argparse.Namespace, out: TextIO, state: str | None) -> int:
    before = api.call("GET", f"/v1/flags/{args.key}")
    if state is None:  # unkill: back to the state before the kill, unless told
        if before["state"] != "killed":
            print(f"{args.key}: not killed ({before['state']}); nothing to do", file=out)
            return OK
        state = args.to or _pre_kill_state(api, args.key)
    if before["state"] == state:
        print(f"{args.key}: already {state}; nothing to do", file=out)
        return OK
    body: dict[str, Any] = {"state": state}
    if args.reason:
        body["reason"] = args.reason
    flag = api.call("PATCH", f"/v1/flags/{args.key}", body)
    if args.json:
        print(json.dumps(flag, indent=2), file=out)
        return OK
    what = WHAT[state].format(control=flag["control"])
    print(f"{args.key}: {flag['state']} (was {before['state']}): {what}", file=out)
    return OK


def _pre_kill_state(api: Api, key: str) -> str:
    entries: list[dict[str, Any]] = api.call("GET", f"/v1/flags/{key}/audit", params={"limit": "100"})[
        "entries"
    ]
    for e in entries:
        if e["action"] == "kill":
            was = (e.get("before") or {}).get("state")
            return "frozen" if was == "frozen" else "running"
    return "running"


def _throttle(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    value = _exploration(args.exploration)
    before = api.call("GET", f"/v1/flags/{args.key}")
    body: dict[str, Any] = {"exploration": value}
    if args.reason:
        body["reason"] = args.reason
    flag = api.call("PATCH", f"/v1/flags/{args.key}", body)
    if args.json:
        print(json.dumps(flag, indent=2), file=out)
        return OK
    killed = flag["state"] == "killed"
    kept = "kept split" if killed else "split"
    print(
        f"{args.key}: exploration {_pct(before['exploration'], 0)} -> {_pct(flag['exploration'], 0)}; "
        f"{kept} {_split(before, before.get('weights') or [])} -> {_split(flag, flag.get('weights') or [])} "
        f"(version {flag['version']})"
        + (f"; killed: the control {flag['control']!r} is served until unkill" if killed else ""),
        file=out,
    )
    return OK


# -- parser -----------------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``flags`` and its actions on the main parser."""
    common, change = common_parsers()
    p = sub.add_parser(
        "flags",
        help="list, show, create, kill, unkill, freeze, resume, throttle flags; targets and rules",
        description="Manage flags on a running server. Exit codes: 0 ok, 1 server or network error, "
        "2 usage (or the key is refused), 3 no such flag, 4 the server rejected the input.",
    )
    acts = p.add_subparsers(dest="action", metavar="ACTION")
    lp = acts.add_parser("list", parents=[common], help="every flag: state, exploration, split, leader")
    lp.add_argument("--state", choices=["running", "frozen", "killed"], help="only flags in this state")
    sp = acts.add_parser(
        "show", parents=[common], help="one flag: variants, estimates, targets and rules, recent changes"
    )
    sp.add_argument("key")
    cp = acts.add_parser("create", parents=[common, change], help="create a flag")
    cp.add_argument("key")
    cp.add_argument(
        "--variant", action="append", help="NAME or NAME=VALUE (JSON or text); repeat (one: a plain flag)"
    )
    cp.add_argument("--control", help="the control variant (default: the first)")
    cp.add_argument("--reward", choices=["binary", "continuous"], default="binary")
    cp.add_argument("--direction", choices=["maximize", "minimize"], default="maximize")
    cp.add_argument("--unit", choices=["decision", "user"], default="decision")
    cp.add_argument(
        "--policy",
        help="thompson (default), top_two_thompson, ucb1, epsilon_greedy, fixed (default for one variant)",
    )
    cp.add_argument("--param", action="append", help="policy parameter NAME=VALUE (JSON), e.g. floor=0.02")
    cp.add_argument("--exploration", help="0..1 or a percentage (default 1)")
    cp.add_argument("--description")
    cp.add_argument("--file", help="the whole JSON body of POST /v1/flags (- for stdin)")
    for name, help_text in (
        ("kill", "serve the control variant to everyone, now"),
        ("unkill", "serve the kept table again (back to the state before the kill)"),
        ("freeze", "keep the current split; stop changing weights"),
        ("resume", "let the bandit change weights again"),
    ):
        ap = acts.add_parser(name, parents=[common, change], help=help_text)
        ap.add_argument("key")
        if name == "unkill":
            ap.add_argument(
                "--to", choices=["running", "frozen"], help="the state after (default: before the kill)"
            )
    tp = acts.add_parser("throttle", parents=[common, change], help="set the exploration share")
    tp.add_argument("key")
    tp.add_argument("exploration", help="0..1 or 0%%..100%%, e.g. 0.2 or 20%%")
    targeting.add_parsers(acts, common, change)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``banditflags flags ACTION``; returns the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if not getattr(args, "action", None):
        print(
            "banditflags flags: give an action (list, show, create, kill, unkill, freeze, resume, "
            "throttle, rules, set-rule, remove-rule, target, untarget)",
            file=err,
        )
        return USAGE
    api = connect(args, "flags", err)
    if api is None:
        return USAGE
    try:
        if args.action == "list":
            return _list(api, args, out)
        if args.action == "show":
            return _show(api, args, out)
        if args.action == "create":
            return _create(api, args, out)
        if args.action == "throttle":
            return _throttle(api, args, out)
        if args.action in ("rules", "set-rule", "remove-rule", "target", "untarget"):
            action: Callable[[Api, argparse.Namespace, TextIO], int] = getattr(
                targeting, args.action.replace("-", "_")
            )
            return action(api, args, out)
        state = {"kill": "killed", "freeze": "frozen", "resume": "running", "unkill": None}[args.action]
        return _set_state(api, args, out, state)
    except CliError as exc:
        print(f"banditflags flags {args.action}: {exc}", file=err)
        return exc.code
    finally:
        api.close()
