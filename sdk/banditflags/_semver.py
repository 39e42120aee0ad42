"""Semantic versions (SemVer 2.0.0) as sort keys, for the ``semver_*`` targeting operators.

A version becomes a tuple whose ordinary tuple order is SemVer §11 precedence:
``(major, minor, patch, 1, ())`` for a release and ``(major, minor, patch, 0, ids)`` for a pre-release,
so a pre-release sorts below its release; each pre-release identifier is ``(0, int)`` when numeric and
``(1, str)`` when alphanumeric, so numeric identifiers compare numerically and sort below alphanumeric
ones, alphanumeric ones compare in ASCII order, and a shorter list of equal leading identifiers sorts
first. Build metadata is ignored (``1.0.0+a`` equals ``1.0.0+b``).

Two relaxations of the grammar, the forms apps report, apply to clause values and attributes alike: a
leading ``v`` is dropped and missing minor/patch numbers are zeros (``v2``, ``2.1`` → 2.0.0, 2.1.0).
Everything else is strict: no leading zeros in numbers or numeric identifiers, ASCII only, no spaces.

>>> parse_semver("1.0.0-alpha") < parse_semver("1.0.0-alpha.1") < parse_semver("1.0.0-alpha.beta")
True
>>> parse_semver("1.0.0-rc.1") < parse_semver("1.0.0") == parse_semver("v1+build.5")
True
>>> parse_semver("01.2.3"), parse_semver("1.2.3.4"), parse_semver(123)
(None, None, None)
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["MAX_SEMVER_LENGTH", "SemverKey", "parse_semver", "semver_of_str"]

#: Longer strings are not versions (and never reach the parse cache).
MAX_SEMVER_LENGTH = 256

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]

_NUM = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER_RE = re.compile(
    rf"v?({_NUM})(?:\.({_NUM}))?(?:\.({_NUM}))?"
    rf"(?:-({_PRE_ID}(?:\.{_PRE_ID})*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


def _key(text: str) -> SemverKey | None:
    m = _SEMVER_RE.fullmatch(text)
    if m is None:
        return None
    major, minor, patch, pre = m.groups()
    core = (int(major), int(minor or 0), int(patch or 0))
    if pre is None:
        return (*core, 1, ())
    # The grammar admits only ASCII digits in a numeric identifier, so isdigit() is exact here.
    ids = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return (*core, 0, ids)


# Attribute versions repeat (a few app versions across all users): parse each once. lru_cache is
# implemented in C and bounded, so a hit costs one dict lookup and no lock.
_cached_key = lru_cache(maxsize=1024)(_key)


def semver_of_str(text: str) -> SemverKey | None:
    """The sort key of a plain ``str`` (the evaluator's fast path), or None."""
    return _cached_key(text) if len(text) <= MAX_SEMVER_LENGTH else None


def parse_semver(text: object) -> SemverKey | None:
    """The sort key of ``text``, or None if it is not a version string. Never raises."""
    if not isinstance(text, str):
        return None
    # A str subclass is hashed and compared by its plain value, which is also the cache key.
    return semver_of_str(text if text.__class__ is str else str.__str__(text))
