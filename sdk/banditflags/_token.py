"""Decision tokens: a compact string naming the exact (flag, version, arm) of a decision.

A token lets a reward be credited to the arm a unit was actually served even when the reward is
observed in another process (a webhook, a worker): hand ``decision.token`` over, then call
``client.track(token, reward=...)`` there. Flag keys never contain ``:`` (they match
``^[a-z0-9][a-z0-9_.-]{0,63}$``), so the format needs no escaping.

>>> make_token("checkout-button", 3, 1)
'bf1:checkout-button:3:1'
>>> parse_token("bf1:checkout-button:3:1")
Token(flag='checkout-button', version=3, arm=1)
>>> parse_token("garbage") is None
True
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["TOKEN_PREFIX", "Token", "make_token", "parse_token"]

TOKEN_PREFIX = "bf1"

# Anchored with \Z so a trailing newline is garbage too; digits are ASCII only (int() would accept
# other scripts' digits and surrounding whitespace).
_TOKEN_RE = re.compile(r"bf1:([a-z0-9][a-z0-9_.-]{0,63}):([1-9][0-9]{0,17}):([0-9]{1,3})\Z")


class Token(NamedTuple):
    """The parsed form of a decision token."""

    flag: str
    version: int
    arm: int


def make_token(flag: str, version: int, arm: int) -> str:
    """Return the token string for a decision."""
    return f"{TOKEN_PREFIX}:{flag}:{version}:{arm}"


def parse_token(token: object) -> Token | None:
    """Parse a token; return ``None`` for anything that is not a well-formed token. Never raises."""
    if type(token) is not str or len(token) > 100:
        return None
    m = _TOKEN_RE.match(token)
    if m is None:
        return None
    arm = int(m.group(3))
    if arm >= 100:  # a flag has at most 100 variants
        return None
    return Token(m.group(1), int(m.group(2)), arm)
