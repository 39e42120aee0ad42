"""Segment actions shared by the HTTP API and the console (issue 12): create, change, delete, each
with its audit entry (``kind`` segment) in the write's transaction; 404, 409 and 422 as
:class:`~banditflags_server.errors.ApiError`. All functions block: call them from a worker thread.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from banditflags_server.errors import ApiError, ValidationError, conflict, not_found
from banditflags_server.records import Stale
from banditflags_server.storage.audit import AuditEntry
from banditflags_server.storage.segments import Segment, SegmentExists, SegmentInUse, SegmentsMissing
from banditflags_server.storage.store import Store

__all__ = ["create_segment", "delete_segment", "missing_segments_error", "patch_segment", "stale_error"]


def stale_error(what: str, exc: Stale) -> ApiError:
    """The 412 of a write whose ``If-Match`` no longer names the resource's ETag (``what``: e.g.
    ``"segment 'beta'"``); it carries the current ETag."""
    return ApiError(
        412,
        f"{what} changed since it was read (its ETag is now {exc.args[0]}); read it again",
        field="If-Match",
        headers={"ETag": exc.args[0]},
    )


def missing_segments_error(exc: SegmentsMissing) -> ValidationError:
    """The 422 of a flag whose rules name segments that do not exist, at each ``values[k]``."""
    problems: list[tuple[str | None, str]] = [
        (where, f"unknown segment {key!r:.80}") for where, key in exc.refs
    ]
    return ValidationError(problems[:50])


def create_segment(store: Store, seg: Segment, actor: str, reason: str = "") -> Segment:
    """Create a validated segment; 409 if the key is taken."""
    now = time.time()
    seg = dataclasses.replace(seg, created_at=now, updated_at=now)
    entry = AuditEntry(seg.key, now, actor, "create", None, seg.audited(), reason, kind="segment")
    try:
        store.create_segment(seg, entry)
    except SegmentExists:
        raise conflict(
            f"segment {seg.key!r} exists already (or the server holds the maximum)", field="key"
        ) from None
    return seg


def patch_segment(
    store: Store,
    key: str,
    changes: dict[str, Any],
    actor: str,
    reason: str = "",
    if_match: str | None = None,
) -> Segment:
    """Apply validated changes (the fields given, each replaced whole); 404 if there is no such segment;
    412 if ``if_match`` (the ``If-Match`` header) no longer names its ETag."""
    seg = store.get_segment(key)
    if seg is None:
        raise not_found(f"segment {key!r}")
    now = time.time()
    new = dataclasses.replace(seg, **changes, updated_at=now)
    before, after = seg.audited(), new.audited()
    changed = [name for name in after if after[name] != before[name]]
    entry = None
    if changed:
        old, new_values = {n: before[n] for n in changed}, {n: after[n] for n in changed}
        entry = AuditEntry(key, now, actor, "update", old, new_values, reason, kind="segment")
    try:
        written = store.update_segment(new, entry, if_match)
    except Stale as exc:
        raise stale_error(f"segment {key!r}", exc) from None
    if not written:
        raise not_found(f"segment {key!r}")
    return new


def delete_segment(store: Store, key: str, actor: str, reason: str = "", if_match: str | None = None) -> None:
    """Delete a segment; 409 listing the flags whose rules name it; 404 if there is none; 412 if
    ``if_match`` no longer names its ETag."""
    seg = store.get_segment(key)
    if seg is None:
        raise not_found(f"segment {key!r}")
    entry = AuditEntry(key, time.time(), actor, "delete", seg.audited(), None, reason, kind="segment")
    try:
        gone = store.delete_segment(key, entry, if_match)
    except Stale as exc:
        raise stale_error(f"segment {key!r}", exc) from None
    except SegmentInUse as exc:
        raise ApiError(
            409,
            f"segment {key!r} is used by the rules of flags: {', '.join(exc.flags)}",
            extra={"flags": exc.flags},
        ) from None
    if not gone:
        raise not_found(f"segment {key!r}")
