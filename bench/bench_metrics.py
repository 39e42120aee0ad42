"""The server's metrics in-process: ``record_ingest`` for one 6-row batch (3 exposure + 3 reward rows, as
bench_server.py sends) and ``render`` of ``/metrics`` with 100 flags x 3 variants (their per-flag gauges,
plus exposure and reward series for every one), without HTTP and without the database (a stub store
answers ``config_snapshot`` with flags made once).

``--against REV`` also loads ``server/banditflags_server/service/metrics.py`` as it was at git revision
REV (for example the hand-written registry before issue 10: ``--against d475d22``) and times both,
interleaved (bench/_common.py). Not a test: it prints numbers, it asserts nothing.

    python bench/bench_metrics.py [--against REV] [--batches 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import batch_timer, compare

from banditflags_server.records import Allocation, EventBatch, EventRow, Flag, IngestResult
from banditflags_server.service import metrics as current

MODULE = "server/banditflags_server/service/metrics.py"
VARIANTS = ["blue", "green", "red"]


def load_at(rev: str) -> ModuleType:
    """The metrics module as it was at ``rev``, as a module of its own (its instruments are its own)."""
    root = Path(__file__).resolve().parent.parent
    text = subprocess.run(
        ["git", "show", f"{rev}:{MODULE}"], cwd=root, check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "metrics_at_rev.py"
    path.write_bytes(text)
    spec = importlib.util.spec_from_file_location("metrics_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flag(i: int) -> Flag:
    alloc = Allocation(3, 0.0, [0.5, 0.3, 0.2], [0.45, 0.35, 0.2], [[0, 5000], [1, 3000], [2, 2000]], "", 0)
    return Flag(
        key=f"flag-{i:03d}",
        description="",
        salt="s",
        variants=[{"key": v, "value": v} for v in VARIANTS],
        control=0,
        objective={},
        policy={"name": "thompson"},
        state="running",
        exploration=1.0,
        baseline="",
        recompute_interval=60.0,
        bandit_weights=[0.45, 0.35, 0.2],
        version=3,
        row_version=1,
        created_at=0.0,
        updated_at=0.0,
        recomputed_at=None,
        allocation=alloc,
    )


class StubStore:
    def __init__(self, n_flags: int) -> None:
        self.flags = [flag(i) for i in range(n_flags)]

    def config_snapshot(self) -> tuple[int, list[Flag]]:
        return 42, self.flags


def batch(key: str) -> EventBatch:
    exposures = [EventRow(f"exposures[{a}]", key, 3, a, 10 + a) for a in range(3)]
    rewards = [EventRow(f"rewards[{a}]", key, 3, a, 2, True, 1.0, 1.0) for a in range(3)]
    return EventBatch("b" * 16, exposures, rewards, "bench", 0)


def timers(module: ModuleType, store: StubStore) -> tuple[Any, Any]:
    names = {f.key: VARIANTS for f in store.flags}
    ok = IngestResult("b" * 16, False)
    for f in store.flags:  # every flag has its series, as on a server that has taken events for all
        module.record_ingest(batch(f.key), ok, (None, None), names, 42, 0.003)
    one = batch(store.flags[0].key)
    report = (41, 2.5)

    def ingest(_: int) -> None:
        module.record_ingest(one, ok, report, names, 42, 0.003)

    def render(_: int) -> None:
        module.render(store)

    return batch_timer(ingest, 2000), batch_timer(render, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REV", help="also time the module as it was at this revision")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--flags", type=int, default=100)
    args = parser.parse_args()
    store = StubStore(args.flags)
    modules = {"now": current}
    if args.against:
        modules = {args.against: load_at(args.against), **modules}
    ingest: dict[str, Any] = {}
    render: dict[str, Any] = {}
    for label, module in modules.items():
        ingest[label], render[label] = timers(module, store)
    print(f"python {sys.version.split()[0]}; {args.flags} flags x {len(VARIANTS)} variants")
    rows = [
        ("record_ingest, 6-row batch", "us", 1e3, compare(ingest, args.batches)),
        (
            f"render /metrics, {args.flags * 3} variants",
            "ms",
            1e6,
            compare(render, max(20, args.batches // 5)),
        ),
    ]
    for what, unit, scale, found in rows:
        for label, (median, p99) in found.items():
            print(
                f"{what:<32} {label:>8}: median {median / scale:7.3f} {unit}, p99 {p99 / scale:7.3f} {unit}"
            )
    for label, module in modules.items():
        body = module.render(store)
        size = len(body[0] if isinstance(body, tuple) else body.encode())
        print(f"page size {label:>10}: {size} bytes")


if __name__ == "__main__":
    main()
