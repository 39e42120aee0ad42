"""Variant colours (issue 11): a variant named after a colour has it, no other variant of the flag takes a
colour some variant is named after, and the rest are told apart while the palette lasts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from banditflags_server.console.palette import NAMED, PALETTE, colours, named_colour

WORDS = [*NAMED, "control", "treatment", "new", "old", "v2", "checkout", "x"]
KEYS = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map("-".join)


@given(st.lists(KEYS, min_size=1, max_size=12, unique=True))
def test_named_colours_are_kept_and_never_lent(keys: list[str]) -> None:
    out = colours(keys)
    assert len(out) == len(keys) and out == colours(keys)
    families = [named_colour(k) for k in keys]
    named = {f[0] for f in families if f is not None}
    colour_of_family = {NAMED[w][1]: NAMED[w][0] for w in NAMED}
    claimed: set[str] = set()
    from_palette = []
    for key, found, c in zip(keys, families, out, strict=True):
        if found is not None and found[0] not in claimed:
            assert c == found[1], (key, c)  # "green" is green
            claimed.add(found[0])
        else:  # a colour no variant of the flag is named after
            assert colour_of_family.get(c) not in named, (key, c, keys)
            from_palette.append(c)
    usable = len([c for c, fam in PALETTE if fam not in named])
    if len(from_palette) <= usable:
        assert len(set(from_palette)) == len(from_palette)  # told apart while the palette lasts


def test_the_readme_flag() -> None:
    assert colours(["blue", "green", "orange"]) == [NAMED["blue"][1], NAMED["green"][1], NAMED["orange"][1]]
    assert colours(["green", "green-v2"])[1] != NAMED["green"][1]
    assert named_colour("Dark_Green") == NAMED["green"] and named_colour("greenhouse") is None
