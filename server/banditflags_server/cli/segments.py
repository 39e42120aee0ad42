"""``banditflags segments ...``: reusable segments (clauses plus included and excluded unit ids) on a
running server, through ``/v1/segments`` (docs/protocol.md, docs/targeting.md).

A unit is in a segment if it is included, or not excluded and matches every clause; flags' rules name
segments with ``in_segment``. ``create`` and ``update`` take clauses as typed (``--clause 'country in
DE,AT'``, :mod:`banditflags_server.cli.clauses`), unit ids (``--include``, ``--exclude``, repeated or
comma-separated) and/or a JSON body (``--file``; options given beside it win). ``update --include``
adds units (and takes them out of ``excluded``), ``--exclude`` the reverse, ``--remove`` takes units out
of both; ``--clause`` replaces every clause (``--no-clauses`` removes them). ``delete`` of a segment that
flags' rules name is refused (exit 4) with the list of those flags.

Exit codes are :mod:`banditflags_server.cli.api`'s (3: no such segment).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from banditflags_server.cli.api import (
    OK,
    REJECTED,
    USAGE,
    Api,
    CliError,
    change,
    common_parsers,
    connect,
    read_json,
    read_modify_write,
)
from banditflags_server.cli.api import table as _table
from banditflags_server.cli.clauses import ClauseSyntaxError, format_clause, format_rule, parse_clauses

__all__ = ["add_parser", "run", "users"]

SHOWN_UNITS = 20
ACTIONS = ("list", "show", "create", "update", "delete")


def users(flags: list[dict[str, Any]], key: str) -> dict[str, list[str]]:
    """The flags whose rules name segment ``key``: flag key → rule ids.

    >>> rule = {"id": "b", "clauses": [{"op": "in_segment", "values": ["x", "beta"]}]}
    >>> users([{"key": "f", "rules": [rule]}, {"key": "g", "rules": []}], "beta")
    {'f': ['b']}
    """
    found: dict[str, list[str]] = {}
    for f in flags:
        for r in f.get("rules") or []:
            if any(
                c.get("op") == "in_segment" and key in (c.get("values") or []) for c in r.get("clauses") or []
            ):
                found.setdefault(f["key"], []).append(r["id"])
    return found


def _unit_list(values: list[str] | None) -> list[str]:
    """``--include a,b --include c`` → ``[a, b, c]``, each once, in order."""
    units = [u.strip() for v in values or [] for u in v.split(",")]
    return list(dict.fromkeys(u for u in units if u))


def _clauses(args: argparse.Namespace) -> list[dict[str, Any]]:
    try:
        return parse_clauses(args.clause or [])
    except ClauseSyntaxError as exc:
        raise CliError(USAGE, str(exc)) from None


def _file(args: argparse.Namespace) -> dict[str, Any]:
    if not args.file:
        return {}
    body = read_json(args.file)
    if not isinstance(body, dict):
        raise CliError(USAGE, "--file: must hold a JSON object (the segment's fields)")
    return body


def _units_text(units: list[str], limit: int = SHOWN_UNITS) -> str:
    if not units:
        return "-"
    more = len(units) - limit
    return ", ".join(units[:limit]) + (f" and {more:,} more" if more > 0 else "")


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _list(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    segs = api.call("GET", "/v1/segments")["segments"]
    if args.json:
        print(json.dumps({"segments": segs}, indent=2), file=out)
        return OK
    if not segs:
        print("no segments", file=out)
        return OK
    flags = api.call("GET", "/v1/flags")["flags"]
    rows = [
        [
            s["key"],
            _short(format_rule(s)) or "-",
            f"{len(s['included']):,}",
            f"{len(s['excluded']):,}",
            ", ".join(users(flags, s["key"])) or "-",
        ]
        for s in segs
    ]
    print(_table(["KEY", "CLAUSES", "INCLUDED", "EXCLUDED", "USED BY"], rows, right={2, 3}), file=out)
    return OK


def _show(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    seg = api.call("GET", f"/v1/segments/{args.key}")
    used = users(api.call("GET", "/v1/flags")["flags"], args.key)
    audit = api.call("GET", f"/v1/segments/{args.key}/audit", params={"limit": "5"})["entries"]
    if args.json:
        print(json.dumps({**seg, "used_by": used, "audit": audit}, indent=2), file=out)
        return OK
    print(f"{seg['key']}  updated {seg['updated_at']}", file=out)
    if seg.get("description"):
        print(f"  {seg['description']}", file=out)
    print("\na unit is in it if included, or not excluded and matching every clause", file=out)
    print(
        "clauses (all must match):" if seg["clauses"] else "clauses: none (only the included units)", file=out
    )
    for c in seg["clauses"]:
        print(f"  {format_clause(c)}", file=out)
    print(f"included ({len(seg['included']):,}): {_units_text(seg['included'])}", file=out)
    print(f"excluded ({len(seg['excluded']):,}): {_units_text(seg['excluded'])}", file=out)
    if used:
        print("used by: " + ", ".join(f"{f} (rules {', '.join(ids)})" for f, ids in used.items()), file=out)
    else:
        print("used by: no flag", file=out)
    if audit:
        print("\nrecent changes:", file=out)
        for e in audit:
            changed = ", ".join(sorted((e.get("after") or {}) if e["action"] == "update" else ()))
            reason = f' "{e["reason"]}"' if e.get("reason") else ""
            print(f"  {e['at']}  {e['actor']:<16} {e['action']:<8} {changed}{reason}", file=out)
    return OK


def _summary(seg: dict[str, Any]) -> str:
    n = len(seg["clauses"])
    return (
        f"{n} clause{'' if n == 1 else 's'}, {len(seg['included']):,} included, "
        f"{len(seg['excluded']):,} excluded"
    )


def _create(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    body = _file(args)
    body["key"] = args.key
    if args.clause:
        body["clauses"] = _clauses(args)
    for name, given in (("included", args.include), ("excluded", args.exclude)):
        if given:
            body[name] = _unit_list(given)
    if args.description is not None:
        body["description"] = args.description
    return change(
        api, args, ("POST", "/v1/segments", body), out, lambda seg: f"{seg['key']}: created ({_summary(seg)})"
    )


@read_modify_write
def _update(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    body = _file(args)
    if args.clause and args.no_clauses:
        raise CliError(USAGE, "--clause and --no-clauses: give one")
    if args.clause:
        body["clauses"] = _clauses(args)
    if args.no_clauses:
        body["clauses"] = []
    include, exclude, remove = _unit_list(args.include), _unit_list(args.exclude), _unit_list(args.remove)
    if not body and not (include or exclude or remove) and args.description is None:
        raise CliError(
            USAGE,
            "nothing to change: give --clause, --no-clauses, --include, --exclude, --remove, "
            "--description or --file",
        )
    before = api.call("GET", f"/v1/segments/{args.key}")
    if include or exclude or remove:
        if set(include) & set(exclude):
            raise CliError(USAGE, "a unit cannot be both --include'd and --exclude'd")
        included = body.get("included", before["included"])
        excluded = body.get("excluded", before["excluded"])
        drop_in, drop_ex = set(exclude) | set(remove), set(include) | set(remove)
        body["included"] = [u for u in included if u not in drop_in] + [
            u for u in include if u not in included
        ]
        body["excluded"] = [u for u in excluded if u not in drop_ex] + [
            u for u in exclude if u not in excluded
        ]
    if args.description is not None:
        body["description"] = args.description
    changes = {k: v for k, v in body.items() if k != "reason" and before.get(k) != v}
    if not changes:
        print(f"{args.key}: no change; nothing to do", file=out)
        return OK
    return change(
        api,
        args,
        ("PATCH", f"/v1/segments/{args.key}", body),
        out,
        lambda seg: f"{seg['key']}: updated {', '.join(sorted(changes))} (now {_summary(seg)})",
        if_match=before.get("etag"),  # computed from what was read: a 412 if it changed since
    )


def _delete(api: Api, args: argparse.Namespace, out: TextIO) -> int:
    body = {"reason": args.reason} if args.reason else None
    try:
        api.call("DELETE", f"/v1/segments/{args.key}", body)
    except CliError as exc:
        in_use = exc.data.get("flags") if isinstance(exc.data, dict) else None
        if exc.code != REJECTED or not in_use:
            raise
        lines = [f"segment {args.key!r} is used by the rules of {len(in_use)} flag(s); not deleted:"]
        lines += [f"  {f}" for f in in_use]
        lines.append("remove it from their rules first (banditflags flags rules FLAG --file ...)")
        raise CliError(REJECTED, "\n".join(lines), exc.data) from None
    print(f"{args.key}: deleted", file=out)
    return OK


def _add_fields(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--clause",
        action="append",
        metavar="'ATTR OP VALUES'",
        help="a clause, e.g. 'country in DE,AT,CH', 'plan == pro', 'age >= 18', 'email not ends_with "
        "@corp.test'; repeat (all must match)",
    )
    p.add_argument("--include", action="append", metavar="UNITS", help="unit ids, comma-separated; repeat")
    p.add_argument("--exclude", action="append", metavar="UNITS", help="unit ids, comma-separated; repeat")
    p.add_argument("--description")
    p.add_argument("--file", help="the segment's JSON fields (- for stdin); options given beside it win")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``segments`` and its actions on the main parser."""
    common, change = common_parsers()
    p = sub.add_parser(
        "segments",
        help="list, show, create, update, delete segments (reusable clauses and unit ids)",
        description="Manage segments on a running server. Exit codes: 0 ok, 1 server or network error, "
        "2 usage (or the key is refused), 3 no such segment, 4 the server rejected the input (also: "
        "deleting a segment that flags' rules name).",
    )
    acts = p.add_subparsers(dest="action", metavar="ACTION")
    acts.add_parser("list", parents=[common], help="every segment: clauses, unit counts, flags using it")
    sp = acts.add_parser("show", parents=[common], help="one segment, and the flags whose rules name it")
    sp.add_argument("key")
    cp = acts.add_parser("create", parents=[common, change], help="create a segment")
    cp.add_argument("key")
    _add_fields(cp)
    up = acts.add_parser(
        "update",
        parents=[common, change],
        help="change a segment: --clause replaces the clauses; --include/--exclude/--remove edit the units",
    )
    up.add_argument("key")
    _add_fields(up)
    up.add_argument("--no-clauses", action="store_true", help="remove every clause")
    up.add_argument(
        "--remove", action="append", metavar="UNITS", help="take units out of included and excluded"
    )
    dp = acts.add_parser(
        "delete", parents=[common, change], help="delete a segment (refused while flags' rules name it)"
    )
    dp.add_argument("key")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``banditflags segments ACTION``; returns the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if not getattr(args, "action", None):
        print(f"banditflags segments: give an action ({', '.join(ACTIONS)})", file=err)
        return USAGE
    api = connect(args, "segments", err)
    if api is None:
        return USAGE
    handlers = {"list": _list, "show": _show, "create": _create, "update": _update, "delete": _delete}
    try:
        return handlers[args.action](api, args, out)
    except CliError as exc:
        note = ""
        if exc.code == REJECTED and getattr(args, "clause", None) and "clauses[" in str(exc):
            note = "\n  (clauses[0] is the first --clause)"
        print(f"banditflags segments {args.action}: {exc}{note}", file=err)
        return exc.code
    finally:
        api.close()
