"""Instants as float epoch seconds, for the ``before`` / ``after`` targeting operators.

An instant is one of:

- a number (int or float, not bool, not NaN): seconds since 1970-01-01T00:00:00Z (an int is kept
  exact);
- an ISO-8601 string in the extended format RFC 3339 uses: ``YYYY-MM-DD``, optionally followed by
  ``T`` (or ``t`` or a space) and ``HH:MM``, ``HH:MM:SS`` or ``HH:MM:SS.fraction`` (1 to 9 digits,
  ``.`` or ``,``), optionally followed by a zone: ``Z``, ``z``, ``±HH:MM``, ``±HHMM`` or ``±HH``.
  **No zone means UTC** (not the machine's local time, which would make a rule mean different things
  on different hosts). A date alone is its midnight, UTC. Hours run 00–23 (no ``24:00``), seconds
  00–59 (no leap second), offsets up to ±23:59;
- (Python attributes only) a ``datetime.datetime`` (naive means UTC) or a ``datetime.date``.

Anything else, including week dates, ordinal dates, the basic format (``20240101T000000Z``) and
numeric strings (``"1700000000"``), is not an instant. Floats carry about a microsecond of resolution
at present-day epochs, which is what comparisons see.

>>> parse_instant("2024-03-01T12:00:00+01:00"), parse_instant("2024-03-01T11:00Z")
(1709290800.0, 1709290800.0)
>>> parse_instant("2024-03-01"), parse_instant(1709251200), parse_instant(True)
(1709251200.0, 1709251200, None)
>>> parse_instant("2024-02-30"), parse_instant("1709251200")
(None, None)
"""

from __future__ import annotations

import datetime as dt
import math
import re
from functools import lru_cache

__all__ = ["MAX_INSTANT_LENGTH", "instant_of_str", "parse_instant"]

#: Longer strings are not instants (and never reach the parse cache).
MAX_INSTANT_LENGTH = 64

_ISO_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]{1,9}))?)?"
    r"(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)?)?"
)
_UNIX_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def _iso(text: str) -> float | None:
    m = _ISO_RE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, _z, sign, off_h, off_m = m.groups()
    try:
        days = dt.date(int(year), int(month), int(day)).toordinal() - _UNIX_EPOCH_ORDINAL
    except ValueError:  # month 13, February 30th, year 0
        return None
    h, mi, s = int(hour or 0), int(minute or 0), int(second or 0)
    if h > 23 or mi > 59 or s > 59:
        return None
    offset = 0
    if sign is not None:
        oh, om = int(off_h), int(off_m or 0)
        if oh > 23 or om > 59:
            return None
        offset = (oh * 3600 + om * 60) * (1 if sign == "+" else -1)
    # Whole seconds as an exact int first, so the fraction is the only rounding.
    seconds = days * 86_400 + h * 3600 + mi * 60 + s - offset
    return seconds + int(frac) / 10 ** len(frac) if frac else float(seconds)


# Attribute timestamps repeat less than versions, but a bounded C cache still saves the regex on
# repeats; a miss costs about a microsecond.
_cached_iso = lru_cache(maxsize=1024)(_iso)


def instant_of_str(text: str) -> float | None:
    """Epoch seconds of a plain ``str`` in the ISO-8601 form above, or None."""
    return _cached_iso(text) if len(text) <= MAX_INSTANT_LENGTH else None


def parse_instant(value: object) -> float | None:
    """Epoch seconds of any instant form above, or None. Never raises."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)  # exact: Python compares int and float without rounding the int
    if isinstance(value, float):
        return None if math.isnan(value) else float(value)
    if isinstance(value, str):
        return instant_of_str(value if value.__class__ is str else str.__str__(value))
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
        try:
            return aware.timestamp()
        except Exception:  # a tzinfo of the caller's that fails, a year out of range
            return None
    if isinstance(value, dt.date):
        return float((value.toordinal() - _UNIX_EPOCH_ORDINAL) * 86_400)
    return None
