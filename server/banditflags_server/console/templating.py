"""How the console answers: the Jinja2 templates with their filters, the security headers every page and
redirect carries, and the HTML error page (which ``app.py`` also uses for errors on console URLs).

The filters (``ago``, ``pct``, ``num``, ``compact``, ``utc``) format values for people; the templates get
the policy names as a global (each variant carries its colour: :mod:`~banditflags_server.console.palette`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from banditflags_server.api.context import iso
from banditflags_server.console.clause_form import OPERATORS

HERE = Path(__file__).parent
PREFIX = "/console"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
POLICIES = ("thompson", "top_two_thompson", "ucb1", "epsilon_greedy", "fixed")

templates = Jinja2Templates(directory=str(HERE / "templates"))


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
templates.env.globals.update(
    policies=POLICIES, operators=OPERATORS, segment_operators=[o for o in OPERATORS if o != "in_segment"]
)


# -- responses --------------------------------------------------------------------------------------


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


def redirect(url: str) -> Response:
    """A 303 (see other) to ``url`` with the console's security headers."""
    resp = RedirectResponse(url, status_code=303)
    resp.headers.update(SECURITY_HEADERS)
    return resp
