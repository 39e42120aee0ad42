"""The long run of the OpenAPI fuzzer: tests/server/test_fuzz.py with many more examples per operation.

The suite runs the same test bounded (100 examples per operation and key, derandomized: about a minute
per database). This runs it with ``--examples`` per operation (and a quarter of that for the sdk key on
admin operations, which all answer 403), ``--stateful`` link-following scenarios, on SQLite and
PostgreSQL, and prints the figures docs/reliability.md quotes: cases per operation and key, by status,
the total, the duration, and the failures (5xx, answers the document does not allow, refused requests
that changed the database). ``--seed`` draws other examples than the suite's (reproducible with the same
seed); without it the run extends the suite's own sequence.

    python bench/bench_fuzz.py                          # 1,000 examples per operation, both databases
    python bench/bench_fuzz.py --examples 300 --db sqlite
    python bench/bench_fuzz.py --seed 7                 # other examples than the suite's

Needs the dev extra (schemathesis, pytest) and, for PostgreSQL, the server on 127.0.0.1:5432 (else that
part is skipped and says so). Runs pytest in a subprocess; exits non-zero if any case failed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(
    db: str, examples: int, stateful: int, seed: int | None
) -> tuple[int, float, list[dict[str, object]], str]:
    """One pytest run of the fuzz module on ``db``: exit code, seconds, the case counts, the output."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = {
            **os.environ,
            "BF_FUZZ_EXAMPLES": str(examples),
            "BF_FUZZ_STATEFUL": str(stateful),
            "BF_FUZZ_REPORT": str(report),
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "sdk"), str(ROOT / "server"), os.environ.get("PYTHONPATH", "")]
            ),
        }
        if seed is not None:
            env["BF_FUZZ_SEED"] = str(seed)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=0"]
        cmd += ["tests/server/test_fuzz.py", "-k", db]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        counts = json.loads(report.read_text()) if report.exists() else []
    return proc.returncode, seconds, counts, proc.stdout + proc.stderr


def summary(db: str, code: int, seconds: float, counts: list[dict[str, object]], output: str) -> None:
    by_op: dict[tuple[str, str], collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for row in counts:
        by_op[(str(row["operation"]), str(row["key"]))][int(str(row["status"]))] += int(str(row["cases"]))
    total = sum(sum(c.values()) for c in by_op.values())
    server_errors = sum(n for c in by_op.values() for status, n in c.items() if status >= 500)
    tail = output.strip().splitlines()[-1] if output.strip() else ""
    rate = total / max(seconds, 1e-9)
    print(f"\n### {db}: {total} cases in {seconds:.0f} s ({rate:.0f}/s), 5xx: {server_errors}")
    print(f"pytest: {tail}")
    if "skipped" in tail and total == 0:
        return
    print("\n| operation | key | cases | 2xx | 3xx | 4xx | 5xx |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (op, key), statuses in sorted(by_op.items()):
        classes = [sum(n for s, n in statuses.items() if s // 100 == k) for k in (2, 3, 4, 5)]
        print(f"| `{op}` | {key} | {sum(statuses.values())} | " + " | ".join(str(x) for x in classes) + " |")
    if code != 0:
        print("\nFAILURES (pytest output, last 80 lines):")
        print("\n".join(output.splitlines()[-80:]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=1000, help="examples per operation and key (1000)")
    p.add_argument("--stateful", type=int, default=100, help="link-following scenarios (100)")
    p.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--seed", type=int, default=None, help="draw other examples than the suite (reproducibly)")
    args = p.parse_args()
    print(
        f"## bench_fuzz: {args.examples} examples per operation and key, {args.stateful} stateful scenarios, "
        f"seed {args.seed if args.seed is not None else 'none (derandomized)'}; {os.cpu_count()} cores"
    )
    failed = False
    for db in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        code, seconds, counts, output = run(db, args.examples, args.stateful, args.seed)
        summary(db, code, seconds, counts, output)
        failed |= code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
