"""The colour of each variant in the console: stable, and never contradicting a variant's name.

A variant named after a colour (``green``, ``btn-green``, ``dark_blue``) is drawn in that colour; the
others get a colour of the palette picked by a hash of their key, skipping the colours other variants of
the flag are named after or already have. A flag's variants are fixed, so each keeps its colour on every
page and chart (by position, the README's "green" used to be drawn orange). Two variants named after one
colour: the first (in variant order) gets it. The palette is Okabe-Ito's, told apart with the common
colour-vision deficiencies, plus a few named extras.

>>> colours(["blue", "green", "orange"])
['#0072B2', '#009E73', '#E69F00']
>>> colours(["control", "treatment"]) == colours(["control", "treatment"])
True
>>> "#009E73" in colours(["green", "a", "b", "c", "d", "e", "f", "g"])[1:]
False
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

__all__ = ["NAMED", "PALETTE", "colours", "named_colour"]

#: Colour names a variant key may contain -> (family, colour). Aliases share a family.
NAMED: dict[str, tuple[str, str]] = {
    "blue": ("blue", "#0072B2"),
    "navy": ("blue", "#0072B2"),
    "green": ("green", "#009E73"),
    "orange": ("orange", "#E69F00"),
    "red": ("red", "#D62728"),
    "yellow": ("yellow", "#D4B800"),  # darker than Okabe-Ito's #F0E442: it has to show on white
    "gold": ("yellow", "#D4B800"),
    "purple": ("purple", "#7E57C2"),
    "violet": ("purple", "#7E57C2"),
    "pink": ("pink", "#CC79A7"),
    "magenta": ("pink", "#CC79A7"),
    "cyan": ("cyan", "#56B4E9"),
    "teal": ("cyan", "#56B4E9"),
    "brown": ("brown", "#8C564B"),
    "grey": ("grey", "#7F7F7F"),
    "gray": ("grey", "#7F7F7F"),
    "black": ("black", "#222222"),
    "white": ("white", "#C9CED6"),  # light grey: white would not show on the page
}

#: The colours of variants not named after one, with their family. No red: on this console red means
#: killed and errors, and a variant should not look like one by chance.
PALETTE: tuple[tuple[str, str], ...] = (
    ("#0072B2", "blue"),
    ("#E69F00", "orange"),
    ("#009E73", "green"),
    ("#CC79A7", "pink"),
    ("#56B4E9", "cyan"),
    ("#7E57C2", "purple"),
    ("#8C564B", "brown"),
    ("#7F7F7F", "grey"),
    ("#D4B800", "yellow"),
)

_WORD = re.compile(r"[a-z]+")


def named_colour(key: str) -> tuple[str, str] | None:
    """The (family, colour) a variant key names: a colour word in it, between non-letters.

    >>> named_colour("btn-Green_v2"), named_colour("greenish"), named_colour("control")
    (('green', '#009E73'), None, None)
    """
    for word in _WORD.findall(key.lower()):
        if word in NAMED:
            return NAMED[word]
    return None


def _stable_hash(key: str) -> int:
    return zlib.crc32(key.encode("utf-8"))


def colours(keys: Sequence[str]) -> list[str]:
    """One colour per variant key, in order: named ones first, then the palette by hash."""
    named = [named_colour(k) for k in keys]
    out: list[str | None] = [None] * len(keys)
    claimed: set[str] = set()
    for i, found in enumerate(named):
        if found is not None and found[0] not in claimed:
            out[i] = found[1]
            claimed.add(found[0])
    # A family any variant is named after is never another variant's colour, even a second "green".
    banned = {found[0] for found in named if found is not None}
    used = {c for c in out if c is not None}
    for i, key in enumerate(keys):
        if out[i] is not None:
            continue
        free = [c for c, family in PALETTE if family not in banned and c not in used]
        if not free:  # more variants than colours: repeat, still never a named family
            free = [c for c, family in PALETTE if family not in banned] or [c for c, _ in PALETTE]
        pick = free[_stable_hash(key) % len(free)]
        out[i] = pick
        used.add(pick)
    return [c for c in out if c is not None]
