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
    assert 50 <= len(conv) <= 100
    assert not conv.first(("f", 0, f"{999:016x}"), 60.0, 1.0)  # still remembered: a duplicate
    assert conv.first(("f", 0, f"{0:016x}"), 60.0, 1.0)  # forgotten: counted again (the server has the id)


def test_a_full_generation_is_rotated_once_however_many_threads_see_it_full() -> None:
    """Two track() calls that both see the conversions' current generation full rotate it once: the
    second must not rotate the new generation (which a third thread may already have written to), and
    an entry added to the full generation meanwhile is still found in ``old``."""
    c = Conversions(8)
    for k in ("a", "b", "c", "d"):
        assert c.first(k, 60.0, 0.0)  # the fourth fills half the cap: a new generation starts
    assert list(c.old) == ["a", "b", "c", "d"] and c.cur == {}
    assert c.first("e", 60.0, 0.0)
    full = c.cur
    full["x"] = full["y"] = full["z"] = 0.0  # a generation that another thread saw full
    c.rotate(full)
    rotated = c.cur
    rotated["f"] = 1.0  # another thread's insert into the new generation
    full["late"] = 1.0  # and one that still held the full one
    c.rotate(full)  # a racing thread that saw `full` full, late
    assert c.cur is rotated and c.old is full and list(rotated) == ["f"]
    assert not any(c.first(k, 60.0, 1.0) for k in ("e", "late", "f"))  # all still remembered
    assert c.first("a", 60.0, 1.0)  # two generations ago: forgotten (the server has the id)
    assert c._rotating == {}


def test_a_repeat_found_in_the_generation_before_keeps_its_credit_time_and_takes_no_room() -> None:
    c = Conversions(4)
    assert c.first("a", 10.0, 0.0)
    assert c.first("b", 10.0, 0.0)
    assert "a" in c.old
    assert not c.first("a", 10.0, 5.0)  # a duplicate, found in old
    assert "a" not in c.cur and c.old["a"] == 0.0  # it takes no room; its window runs from its credit
    assert not c.first("a", 10.0, 9.0)
    assert c.first("a", 10.0, 10.5)  # over: counts again


@given(st.lists(st.tuples(st.integers(0, 30), st.floats(0, 5)), max_size=200), st.integers(2, 20))
def test_first_matches_an_unbounded_model_for_the_latest_half_cap(
    calls: list[tuple[int, float]], cap: int
) -> None:
    """Against an unbounded model: a key credited within the last ``cap // 2`` credits is answered as
    the model answers; an older one may be forgotten and count again, never refused when it should
    count; the memory never holds more than ``cap`` (2 for a cap of 1)."""
    c = Conversions(cap)
    credited: dict[int, tuple[float, int]] = {}  # key -> (time of credit, credit number)
    credits = 0
    now = 0.0
    window = 3.0
    for key, dt in calls:
        now += dt
        prior = credited.get(key)
        expected = prior is None or now - prior[0] > window
        got = c.first(key, window, now)
        if prior is None or credits - prior[1] < cap // 2:
            assert got == expected
        else:
            assert got or not expected
        if got:
            credits += 1
            credited[key] = (now, credits)
        assert len(c) <= max(cap, 2)
