"""Console sessions, kept in the database so that every replica honours them.

A session is created by logging in with an admin key. The browser holds a random session id in an
HttpOnly, SameSite=Strict cookie; the database holds only its sha256, the sha256 of the admin key that
logged in (so rotating or removing that key ends its sessions), the key's *name* (for the audit log) and
the CSRF token that every form must carry.

>>> len(new_token()) >= 43
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from banditflags_server.storage import schema as db
from banditflags_server.storage.schema import api_keys, console_sessions

#: A session ends 12 hours after login (an on-call shift) or after 30 minutes without a page view or a
#: change, whichever comes first; then the console asks for the key again.
SESSION_SECONDS = 12 * 3600.0
IDLE_SECONDS = 30 * 60.0
#: The idle deadline (``expires_at``) slides forward on use, written at most once a minute per session.
SLIDE_EVERY = 60.0


@dataclass(frozen=True)
class Session:
    """A live console session."""

    key_name: str
    csrf: str
    expires_at: float

    def csrf_ok(self, token: str | None) -> bool:
        """Constant-time check of a form's CSRF token.

        >>> Session("env-admin", "abc", 0.0).csrf_ok("abc"), Session("env-admin", "abc", 0.0).csrf_ok(None)
        (True, False)
        """
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


def new_token() -> str:
    """A random URL-safe token (256 bits)."""
    return secrets.token_urlsafe(32)


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def login(engine: Engine, key: str, *, now: float | None = None) -> tuple[str, Session] | str:
    """Start a session for ``key``: ``(session id for the cookie, session)``, or the reason it is
    refused (``"unknown"`` or ``"not_admin"``). Expired sessions are swept on the way."""
    now = time.time() if now is None else now
    key_sha = _sha(key)
    with db.write_tx(engine) as conn:
        row = conn.execute(
            sa.select(api_keys.c.kind, api_keys.c.name).where(api_keys.c.sha256 == key_sha)
        ).first()
        if row is None:
            return "unknown"
        if row[0] != "admin":
            return "not_admin"
        conn.execute(sa.delete(console_sessions).where(console_sessions.c.expires_at < now))
        sid = new_token()
        session = Session(key_name=str(row[1]), csrf=new_token(), expires_at=_deadline(now, now))
        conn.execute(
            sa.insert(console_sessions).values(
                sid_sha256=_sha(sid),
                key_sha256=key_sha,
                key_name=session.key_name,
                csrf=session.csrf,
                created_at=now,
                expires_at=session.expires_at,
            )
        )
    return sid, session


def _deadline(created_at: float, now: float) -> float:
    """When a session used at ``now`` ends if it is not used again: idle or absolute, the earlier."""
    return min(now + IDLE_SECONDS, created_at + SESSION_SECONDS)


def lookup(engine: Engine, sid: str | None, *, now: float | None = None) -> Session | None:
    """The live session for a cookie value: None if unknown, expired (idle or absolute), or its admin key
    is gone (rotated or revoked). A live one's idle deadline slides forward."""
    if not sid or len(sid) > 200:
        return None
    now = time.time() if now is None else now
    c = console_sessions.c
    stmt = (
        sa.select(c.key_name, c.csrf, c.expires_at, c.created_at)
        .select_from(console_sessions.join(api_keys, api_keys.c.sha256 == c.key_sha256))
        .where(c.sid_sha256 == _sha(sid), c.expires_at > now, api_keys.c.kind == "admin")
    )
    with db.read_tx(engine) as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return None
    expires_at = float(row[2])
    deadline = _deadline(float(row[3]), now)
    if deadline - expires_at >= SLIDE_EVERY:
        with db.write_tx(engine) as conn:
            conn.execute(
                sa.update(console_sessions)
                .where(c.sid_sha256 == _sha(sid), c.expires_at > now)
                .values(expires_at=deadline)
            )
        expires_at = deadline
    return Session(str(row[0]), str(row[1]), expires_at)


def logout(engine: Engine, sid: str | None) -> None:
    """End a session (nothing happens for an unknown one)."""
    if not sid:
        return
    with db.write_tx(engine) as conn:
        conn.execute(sa.delete(console_sessions).where(console_sessions.c.sid_sha256 == _sha(sid)))
