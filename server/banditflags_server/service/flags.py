"""Operator actions shared by the HTTP API, the console and (through the API) the CLI.

Each action validates, writes the change and its audit entry in one transaction, and raises
:class:`~banditflags_server.errors.ApiError` (404, 409, 422) for what the caller must be told. All
functions block: call them from a worker thread in async code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from banditflags_server.engine.planning import new_flag
from banditflags_server.errors import conflict, not_found
from banditflags_server.records import Flag, FlagPatch, NewFlag, Stale
from banditflags_server.service import recompute as rc
from banditflags_server.service.segments import missing_segments_error, stale_error
from banditflags_server.storage.audit import SUMMARY_FIELDS, AuditEntry
from banditflags_server.storage.segments import SegmentsMissing
from banditflags_server.storage.store import FlagExists, FlagLimit, Store


def summary(flag: Flag) -> dict[str, Any]:
    """What the audit log records of a whole flag (creation, deletion)."""
    values = {
        "state": flag.state,
        "exploration": flag.exploration,
        "baseline": flag.baseline,
        "policy": flag.policy,
        "variants": [v["key"] for v in flag.variants],
        "control": flag.variants[flag.control]["key"],
        "objective": flag.objective,
        "description": flag.description,
        "recompute_interval": flag.recompute_interval,
    }
    out = {name: values[name] for name in SUMMARY_FIELDS}
    if flag.targets or flag.rules:  # issue 12: recorded when there are some
        out.update(targets=flag.targets, rules=flag.rules)
    return out


def create_flag(store: Store, spec: NewFlag, rng: np.random.Generator, actor: str, reason: str = "") -> None:
    """Create the flag of a validated spec; 409 if the key is taken or the store is full."""
    now = time.time()
    flag, first = new_flag(spec, rng, now)
    after = summary(flag)
    after["weights"] = first.weights
    entry = AuditEntry(flag.key, now, actor, "create", None, after, reason)
    try:
        store.create_flag(flag, first, audit=entry)
    except FlagExists:
        raise conflict(f"flag {spec.key!r} exists already", field="key") from None
    except FlagLimit:
        raise conflict("the server holds the maximum number of flags") from None
    except SegmentsMissing as exc:
        raise missing_segments_error(exc) from None


def patch_flag(
    store: Store,
    key: str,
    validate: Callable[[Flag], FlagPatch],
    rng: np.random.Generator,
    actor: str,
    reason: str = "",
    if_match: str | None = None,
) -> Flag:
    """Validate a change against the current flag (``validate`` raises the 422) and apply it with its
    audit entry; 404 if there is no such flag, 409 if it keeps changing under us, 412 if ``if_match``
    (the ``If-Match`` header) no longer names the flag's ETag."""
    flag = store.get_flag(key)
    if flag is None:
        raise not_found(f"flag {key!r}")
    patch = validate(flag)  # a bad body is a 422 whatever the ETag (apply_patch checks that, on each read)
    try:
        return rc.apply_patch(store, key, patch, rng, actor=actor, reason=reason, if_match=if_match)
    except Stale as exc:
        raise stale_error(f"flag {key!r}", exc) from None
    except rc.FlagNotFound:
        raise not_found(f"flag {key!r}") from None
    except rc.Conflict:
        raise conflict("the flag is being changed concurrently; try again") from None
    except SegmentsMissing as exc:
        raise missing_segments_error(exc) from None


def delete_flag(store: Store, key: str, actor: str, reason: str = "", if_match: str | None = None) -> None:
    """Delete a flag, recording what it was; 404 if there is none; 412 if ``if_match`` (the
    ``If-Match`` header) no longer names its ETag."""
    flag = store.get_flag(key)
    if flag is None:
        raise not_found(f"flag {key!r}")
    entry = AuditEntry(key, time.time(), actor, "delete", summary(flag), None, reason)
    try:
        gone = store.delete_flag(key, audit=entry, if_match=if_match)
    except Stale as exc:
        raise stale_error(f"flag {key!r}", exc) from None
    if not gone:
        raise not_found(f"flag {key!r}")
