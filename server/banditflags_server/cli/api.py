"""What ``banditflags flags`` and ``banditflags segments`` share: the admin API client with exit-code-aware
errors, the connection options, and plain-text tables.

Needs only httpx (an SDK dependency), not the server extra. The server and key come from
``--url``/``BANDITFLAGS_URL`` (default ``http://127.0.0.1:8080``) and ``--admin-key``/
``BANDITFLAGS_ADMIN_KEY``.

Exit codes, for scripts:

====  ====================================================================================
0     done (or nothing to do: the flag already was in that state)
1     server or network error (unreachable, timeout, 5xx, an answer that is not the API's)
2     usage: bad options, no admin key, or the key is unknown or not an admin key (401/403)
3     not found: no such flag or segment (404)
4     rejected input: the server refused the values (400, 409, 413, 415, 422); nothing changed
====  ====================================================================================

>>> print(table(["KEY", "N"], [["a", "1"], ["bb", "22"]], right={1}))
KEY   N
a     1
bb   22
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx

__all__ = [
    "DEFAULT_URL",
    "FAILED",
    "NOT_FOUND",
    "OK",
    "REJECTED",
    "USAGE",
    "Api",
    "CliError",
    "change",
    "common_parsers",
    "connect",
    "read_json",
    "table",
]

DEFAULT_URL = "http://127.0.0.1:8080"
OK, FAILED, USAGE, NOT_FOUND, REJECTED = 0, 1, 2, 3, 4


class CliError(Exception):
    """A failure with its exit code; the message is printed to stderr. ``data`` is the server's JSON
    answer, when there was one (a 409 for a segment in use carries its ``flags``)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class Stale(CliError):
    """A 412: the resource changed since this command read it (its ``If-Match`` no longer matched);
    nothing was changed. Commands that read, modify and write read again and retry."""


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int] | None = None) -> str:
    """A plain-text table: columns padded to their widest cell; ``right`` aligns columns right."""
    right = right or set()
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


class Api:
    """The admin API with exit-code-aware errors."""

    def __init__(self, url: str, key: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One request; raises :class:`CliError` with the right exit code on anything but 2xx
        (:class:`Stale` for a 412)."""
        try:
            resp = self.http.request(method, path, json=body, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise CliError(FAILED, f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from None
        if resp.status_code == 204:
            return None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if 200 <= resp.status_code < 300 and data is not None:
            return data
        err = data.get("error", {}) if isinstance(data, dict) else {}
        message = err.get("message") or f"HTTP {resp.status_code}"
        if resp.status_code in (401, 403):
            raise CliError(USAGE, f"the server refused the key: {message}")
        if resp.status_code == 404:
            raise CliError(NOT_FOUND, message, data)
        if resp.status_code == 412:
            raise Stale(REJECTED, f"rejected: {message}", data)
        if resp.status_code in (400, 409, 413, 415, 422):
            # The message names the first problem ("rules[0].op: must be ..."); the others follow.
            problems = err.get("errors") or []
            lines = [f"  {p.get('field') or '-'}: {p.get('message')}" for p in problems]
            raise CliError(REJECTED, "\n".join([f"rejected: {message}", *lines[1:]]), data)
        raise CliError(FAILED, f"server error: {message}", data)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()


def change(
    api: Api,
    args: argparse.Namespace,
    request: tuple[str, str, dict[str, Any]],
    out: TextIO,
    done: Callable[[dict[str, Any]], str],
    if_match: str | None = None,
) -> int:
    """Send a change ``(method, path, body)`` with ``--reason`` (and ``If-Match: if_match``: the ETag
    the change was computed from); print the answer (``--json``) or ``done(answer)``."""
    method, path, body = request
    if args.reason:
        body["reason"] = args.reason
    headers = {"If-Match": if_match} if if_match else None
    answer: dict[str, Any] = api.call(method, path, body, headers=headers)
    print(json.dumps(answer, indent=2) if args.json else done(answer), file=out)
    return OK


Edit = Callable[[Api, argparse.Namespace, TextIO], int]
ATTEMPTS = 3  # reads of the resource a read-modify-write makes before it gives up


def read_modify_write(edit: Edit) -> Edit:
    """An edit computed from a resource (a flag, a segment) as read and sent with its ETag: when another
    operator changed it in between (412, nothing written), read it again and redo the edit on what is
    there now, instead of overwriting their change; give up (exit 4) after ``ATTEMPTS`` reads."""

    @functools.wraps(edit)
    def run(api: Api, args: argparse.Namespace, out: TextIO) -> int:
        for _ in range(ATTEMPTS - 1):
            try:
                return edit(api, args, out)
            except Stale:
                pass  # read again and redo it
        return edit(api, args, out)  # the last read: a 412 now is the command's answer

    return run


def common_parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parent parsers of every action: connection and output options, and ``--reason`` for changes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"server URL (env BANDITFLAGS_URL, default {DEFAULT_URL})")
    common.add_argument("--admin-key", help="admin key (env BANDITFLAGS_ADMIN_KEY; prefer the environment)")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default 10)")
    common.add_argument("--json", action="store_true", help="print the server's JSON instead of a table")
    change = argparse.ArgumentParser(add_help=False)
    change.add_argument("--reason", help="why (recorded in the audit log with the key's name)")
    return common, change


def connect(args: argparse.Namespace, command: str, err: TextIO) -> Api | None:
    """The API client from ``--url``/``--admin-key`` or the environment; None (with the problem printed
    to ``err``) when they are missing or malformed."""
    url = args.url or os.environ.get("BANDITFLAGS_URL") or DEFAULT_URL
    key = args.admin_key or os.environ.get("BANDITFLAGS_ADMIN_KEY", "").split(",")[0].strip()
    if not key:
        print(
            f"banditflags {command}: no admin key (set BANDITFLAGS_ADMIN_KEY or pass --admin-key)", file=err
        )
        return None
    if not url.startswith(("http://", "https://")):
        print(f"banditflags {command}: --url must start with http:// or https://, got {url!r}", file=err)
        return None
    return Api(url, key, args.timeout)


def read_json(path: str, option: str = "--file") -> Any:
    """A JSON document from a file, or from stdin when ``path`` is ``-``; a usage error if it cannot be
    read or parsed."""
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return json.loads(raw)
    except (OSError, ValueError) as exc:
        raise CliError(USAGE, f"{option}: {exc}") from None
