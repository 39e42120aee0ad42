"""Decision ids and the two-generation stores of ``_units``."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from banditflags._units import Conversions, UnitMemory, did_hex, new_did, unit_did

DID = re.compile(r"[0-9a-f]{16}")


@given(st.text(max_size=20), st.text(min_size=1, max_size=40))
def test_unit_ids_are_16_lower_hex_digits_and_stable(salt: str, unit: str) -> None:
    did = unit_did(salt, unit)
    assert DID.fullmatch(did) and did == unit_did(salt, unit)


def test_decision_ids_are_16_lower_hex_digits_and_unique() -> None:
    ids = {did_hex(new_did()) for _ in range(10_000)}
    assert len(ids) == 10_000 and all(DID.fullmatch(d) for d in ids)


def test_memory_and_conversions_are_bounded() -> None:
    mem = UnitMemory(True, cap=100)
    for i in range(1_000):
        mem.put(f"u{i}", (1, 0, 0.0, None, None))
    assert len(mem) <= 100 and mem.get("u999") is not None and mem.get("u0") is None
    conv = Conversions(100)
    for i in range(1_000):
        assert conv.first(("f", 0, f"{i:016x}"), 60.0, 0.0)
    assert len(conv.cur) <= 100
    assert not conv.first(("f", 0, f"{999:016x}"), 60.0, 1.0)  # still remembered: a duplicate
    assert conv.first(("f", 0, f"{0:016x}"), 60.0, 1.0)  # forgotten: counted again (the server has the id)


def test_a_full_memory_is_trimmed_once_however_many_threads_see_it_full() -> None:
    """Two track() calls that both see the conversion memory over its cap trim it once: the second
    must not replace the dict the first made (and a third thread may already have written to)."""
    c = Conversions(4)
    for k in ("a", "b", "c", "d", "e"):
        assert c.first(k, 60.0, 0.0)  # the fifth is over the cap: the newest two are kept
    assert list(c.cur) == ["d", "e"]
    full = {"x": 0.0, **c.cur}
    c.cur = full
    c.trim(full)
    trimmed = c.cur
    trimmed["f"] = 1.0  # another thread's insert into the new dict
    c.trim(full)  # a racing thread that saw `full` over the cap, late
    assert c.cur is trimmed and list(trimmed) == ["d", "e", "f"]
    assert not any(c.first(k, 60.0, 1.0) for k in ("d", "e", "f"))  # all still remembered
    assert c._trims == {}
