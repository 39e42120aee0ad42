"""API keys: stored by their sha256 only, each with a kind (``admin`` or ``sdk``) and a name (what the
audit log shows). Keys given through settings are stored as ``env-*``; a new database gets one generated
admin and one sdk key.

>>> hash_key("bf_sdk_example")[:16]
'51f914414a457053'
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from banditflags_server.storage import schema as db
from banditflags_server.storage.schema import api_keys


def hash_key(key: str) -> str:
    """The sha256 hex digest under which a key is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeysMixin:
    """The part of :class:`~banditflags_server.storage.store.Store` that reads and writes ``api_keys``."""

    engine: Engine

    def key_kind(self, key_hash: str) -> str | None:
        """``admin``, ``sdk`` or None for the key with this sha256."""
        with db.read_tx(self.engine) as conn:
            kind = conn.execute(sa.select(api_keys.c.kind).where(api_keys.c.sha256 == key_hash)).scalar()
        return None if kind is None else str(kind)

    def key_identity(self, key_hash: str) -> tuple[str, str] | None:
        """``(kind, name)`` of the key with this sha256, or None. The name is what the audit log shows."""
        with db.read_tx(self.engine) as conn:
            row = conn.execute(
                sa.select(api_keys.c.kind, api_keys.c.name).where(api_keys.c.sha256 == key_hash)
            ).first()
        return None if row is None else (str(row[0]), str(row[1]))

    def all_keys(self) -> dict[str, str]:
        """sha256 -> kind for every stored key."""
        with db.read_tx(self.engine) as conn:
            return {r.sha256: r.kind for r in conn.execute(sa.select(api_keys.c.sha256, api_keys.c.kind))}

    def sync_settings_keys(self, admin: Sequence[str], sdk: Sequence[str]) -> None:
        """Make the stored ``env-*`` keys exactly the ones given through settings.

        Rotating a key in the environment thus revokes the old one. Keys of a kind given through settings
        also replace the generated key of that kind (``admin-initial``, ``sdk-initial``): the first start
        prints it in clear, so configuring keys must be a way to revoke it. A kind not given keeps it.
        """
        wanted: dict[str, tuple[str, str]] = {}
        for kind, keys in (("admin", admin), ("sdk", sdk)):
            for i, key in enumerate(keys, start=1):
                name = f"env-{kind}" if (kind == "admin" and len(keys) == 1) else f"env-{kind}-{i}"
                wanted[hash_key(key)] = (name, kind)
        now = time.time()
        with db.write_tx(self.engine) as conn:
            # Replicas starting together on one database each run this: in turn, or both insert.
            db.serialize(conn, db.KEYS_LOCK)
            conn.execute(sa.delete(api_keys).where(api_keys.c.name.like("env-%")))
            for kind, keys in (("admin", admin), ("sdk", sdk)):
                if keys:
                    conn.execute(sa.delete(api_keys).where(api_keys.c.name == f"{kind}-initial"))
            # A key given through settings may also be stored under another name (e.g. generated).
            if wanted:
                conn.execute(sa.delete(api_keys).where(api_keys.c.sha256.in_(list(wanted))))
                conn.execute(
                    sa.insert(api_keys),
                    [
                        {"name": name, "kind": kind, "sha256": h, "created_at": now}
                        for h, (name, kind) in wanted.items()
                    ],
                )

    def ensure_initial_keys(self) -> tuple[str, str] | None:
        """With no key stored, make and store one admin and one sdk key; return them (else None)."""
        admin = "bf_admin_" + secrets.token_urlsafe(24)
        sdk = "bf_sdk_" + secrets.token_urlsafe(24)
        now = time.time()
        with db.write_tx(self.engine) as conn:
            db.serialize(conn, db.KEYS_LOCK)  # else two replicas both see none and both make a pair
            if conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one():
                return None
            conn.execute(
                sa.insert(api_keys),
                [
                    {"name": "admin-initial", "kind": "admin", "sha256": hash_key(admin), "created_at": now},
                    {"name": "sdk-initial", "kind": "sdk", "sha256": hash_key(sdk), "created_at": now},
                ],
            )
        return admin, sdk
