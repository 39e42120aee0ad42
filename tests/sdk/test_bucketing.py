"""Bucketing against the golden vectors, an independent murmur3, and distribution properties."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditflags import Client
from banditflags._bucketing import TABLE_SIZE, arm_of, bucket_of, decode_table, hash_key, table_counts

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "bucketing.json").read_text(encoding="utf-8"))
CASES: list[dict[str, Any]] = VECTORS["cases"]


def murmur3_x86_32(data: bytes, seed: int = 0) -> int:
    """A second plain implementation, from the algorithm (no mmh3)."""
    m = 0xFFFFFFFF

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & m

    def mix(k: int) -> int:
        return (rotl((k * 0xCC9E2D51) & m, 15) * 0x1B873593) & m

    h = seed
    blocks = len(data) // 4
    for i in range(blocks):
        h = rotl(h ^ mix(int.from_bytes(data[4 * i : 4 * i + 4], "little")), 13)
        h = (h * 5 + 0xE6546B64) & m
    tail = data[4 * blocks :]
    if tail:
        h ^= mix(int.from_bytes(tail, "little"))
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)


def test_vectors_cover_the_required_cases() -> None:
    ids = [c["unit_id"] for c in CASES]
    assert len(CASES) >= 300
    assert "" in ids
    assert any(len(u) >= 10_000 for u in ids)
    assert any("😀" in u for u in ids) and any("日本" in u for u in ids) and any("\u0301" in u for u in ids)
    assert any(u.isdigit() for u in ids)
    assert len({c["salt"] for c in CASES}) >= 4
    assert {len({arm for arm, _ in c["table"]}) for c in CASES} >= set(range(2, 11))
    assert max(len(c["table"]) for c in CASES) >= 5


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['salt'][:6]}|{c['unit_id'][:12]!r}")
def test_sdk_reproduces_vector(case: dict[str, Any]) -> None:
    key = f"{case['salt']}.{case['unit_id']}"
    assert hash_key(key) == case["hash"]
    assert bucket_of(case["salt"], case["unit_id"]) == case["bucket"]
    table = decode_table(case["table"])
    assert table[case["bucket"]] == case["arm"]
    assert arm_of(table, case["salt"], case["unit_id"]) == case["arm"]


def test_pure_python_murmur3_agrees_with_vectors() -> None:
    for case in CASES:
        h = murmur3_x86_32(f"{case['salt']}.{case['unit_id']}".encode())
        assert h == case["hash"]
        assert (h * TABLE_SIZE) >> 32 == case["bucket"]


def test_client_variant_matches_vectors(build: Any) -> None:
    cases = [c for c in CASES if c["unit_id"]][:120]
    flags = []
    for i, c in enumerate(cases):
        arms = max(arm for arm, _ in c["table"]) + 1
        flags.append(
            build.flag(
                f"f{i}",
                salt=c["salt"],
                table=c["table"],
                weights=[1.0 / arms] * arms,
                control="v0",
                variants=[{"key": f"v{j}", "value": j} for j in range(arms)],
            )
        )
    client = Client("http://bf.test", "k", background=False, bootstrap=build.config(*flags))
    for i, c in enumerate(cases):
        assert client.variant(f"f{i}", c["unit_id"]) == f"v{c['arm']}"
        d = client.decide(f"f{i}", c["unit_id"])
        assert d.arm == c["arm"]
    client.close()


def test_decode_table_and_counts() -> None:
    table = decode_table([[2, 100], [0, 9000], [1, 900]])
    assert len(table) == TABLE_SIZE
    assert table_counts(table, 3) == (9000, 900, 100)
    with pytest.raises(ValueError):
        decode_table([[0, 9999]])


@settings(max_examples=300)
@given(salt=st.text(max_size=40), unit_id=st.text(max_size=200))
def test_bucket_always_in_range_and_matches_reference(salt: str, unit_id: str) -> None:
    b = bucket_of(salt, unit_id)
    assert 0 <= b < TABLE_SIZE
    try:
        data = f"{salt}.{unit_id}".encode()
    except UnicodeEncodeError:  # lone surrogates: not valid UTF-8 text, no reference to compare with
        return
    assert b == (murmur3_x86_32(data) * TABLE_SIZE) >> 32


@pytest.mark.parametrize("salt", ["3f0c9a1e5d7b2a4c", "s", "ünï"])
def test_bucket_distribution_is_uniform(salt: str) -> None:
    n, bins = 100_000, 100
    counts = [0] * bins
    for i in range(n):
        counts[bucket_of(salt, f"user-{i}") * bins // TABLE_SIZE] += 1
    expected = n / bins
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    assert chi2 < 148.2  # chi-squared critical value, 99 degrees of freedom, p = 0.001


def test_numeric_ids_hash_as_decimal_strings(build: Any) -> None:
    client = Client("http://bf.test", "k", background=False, bootstrap=build.config())
    for n in (0, 7, 123456789, -5, 10**30):
        assert client.decide("btn", n).arm == client.decide("btn", str(n)).arm
    client.close()
