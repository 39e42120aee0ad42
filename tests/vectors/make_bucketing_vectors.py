"""Generate tests/vectors/bucketing.json, the golden vectors of DESIGN.md §4 bucketing.

Each case is computed with a plain, independent implementation (murmur3 x86_32 written from the
algorithm in pure Python, cumulative-run table lookup without decoding) and cross-checked against
mmh3 while generating, so the file does not merely echo the SDK.

Run: .venv/bin/python tests/vectors/make_bucketing_vectors.py   (deterministic: fixed seed)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import mmh3

OUT = Path(__file__).with_name("bucketing.json")
TABLE_SIZE = 10_000


def murmur3_x86_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32 (Austin Appleby), unsigned result."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    mask = 0xFFFFFFFF
    h = seed & mask
    n = len(data)
    rounded = n - (n % 4)
    for i in range(0, rounded, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    k = 0
    tail = n & 3
    if tail == 3:
        k ^= data[rounded + 2] << 16
    if tail >= 2:
        k ^= data[rounded + 1] << 8
    if tail >= 1:
        k ^= data[rounded]
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def arm_from_rle(rle: list[list[int]], bucket: int) -> int:
    """Walk the runs (no decoded table): the arm whose run covers ``bucket``."""
    end = 0
    for arm, run in rle:
        end += run
        if bucket < end:
            return arm
    raise ValueError("bucket beyond the table")


def random_table(rng: random.Random, arms: int, runs: int) -> list[list[int]]:
    """An RLE table with ``runs`` runs over ``arms`` arms (every arm appears at least once)."""
    cuts = sorted(rng.sample(range(1, TABLE_SIZE), runs - 1))
    lengths = [b - a for a, b in zip([0, *cuts], [*cuts, TABLE_SIZE], strict=True)]
    order = list(range(arms)) + [rng.randrange(arms) for _ in range(runs - arms)]
    rng.shuffle(order)
    # Adjacent runs of the same arm would be merged by a real encoder; keep them distinct.
    for i in range(1, len(order)):
        if order[i] == order[i - 1]:
            order[i] = (order[i] + 1) % arms
    return [[arm, length] for arm, length in zip(order, lengths, strict=True)]


def unit_ids(rng: random.Random) -> list[str]:
    ids = [
        "",
        "0",
        "1",
        "42",
        "-1",
        "123456789012345678901234567890",
        str(2**63),
        str(-(2**31)),
        "user-1",
        "user-42",
        "alice@example.com",
        " ",
        "\t",
        "a.b.c",
        "flag.salt.lookalike",
        "😀",
        "👩‍👩‍👧‍👦",
        "🇫🇷",
        "日本語のユーザー",
        "用户123",
        "사용자",
        "Ελληνικά",
        "עברית",
        "العربية",
        "e\u0301",
        "\u00e9",
        "a\u0308\u0304",
        "Z\u0335\u0321\u0358a\u0337lgo",
        "\u200b",
        "\x00",
        "\ufeffbom",
        "x" * 10_000,
        "😀" * 2_500,
        "日" * 3_333,
        "ab" * 5_000 + "c",
    ]
    ids += [str(rng.randrange(10**12)) for _ in range(40)]  # numeric ids as their decimal strings
    ids += [f"user-{rng.randrange(10**6)}" for _ in range(40)]
    ids += [
        "".join(
            chr(
                rng.choice(
                    [rng.randrange(0x20, 0x7F), rng.randrange(0xA0, 0xD7FF), rng.randrange(0x1F300, 0x1FAFF)]
                )
            )
            for _ in range(rng.randrange(1, 40))
        )
        for _ in range(40)
    ]
    return ids


def main() -> None:
    rng = random.Random(20261127)
    salts = ["3f0c9a1e5d7b2a4c", "", "s", "salt.with.dots", "ünïcödé-salt", "0000000000000000"]
    tables = [[[0, 10_000]], [[0, 5_000], [1, 5_000]], [[1, 9_000], [0, 1_000]]]
    tables += [
        random_table(rng, arms, rng.randrange(arms, arms + 6)) for arms in range(2, 11) for _ in range(2)
    ]
    cases = []
    for i, unit_id in enumerate(unit_ids(rng)):
        for j in range(2):
            salt = salts[(i + j) % len(salts)]
            table = tables[(i * 2 + j) % len(tables)]
            key = f"{salt}.{unit_id}".encode()
            h = murmur3_x86_32(key)
            assert h == mmh3.hash(key, 0, signed=False), (salt, unit_id)
            assert h == mmh3.hash(f"{salt}.{unit_id}", 0, signed=False)  # mmh3 hashes str as UTF-8
            bucket = (h * TABLE_SIZE) >> 32
            cases.append(
                {
                    "salt": salt,
                    "unit_id": unit_id,
                    "hash": h,
                    "bucket": bucket,
                    "table": table,
                    "arm": arm_from_rle(table, bucket),
                }
            )
    doc = {
        "description": "DESIGN.md §4: key = salt + '.' + unit_id (UTF-8); h = murmur3_x86_32(key, seed 0), "
        "unsigned; bucket = (h * 10000) >> 32; arm = decoded_table[bucket]. Generated by "
        "make_bucketing_vectors.py.",
        "cases": cases,
    }
    OUT.write_text(json.dumps(doc, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
