"""`banditflags simulate`: the real bandit engine against synthetic arms, compared with uniform and an oracle.

The scenarios and policies to choose from are in :mod:`banditflags_server.cli.sim_scenarios`, how a
replication runs and what regret means in :mod:`banditflags_server.cli.sim_runner`, the table and the
plots in :mod:`banditflags_server.cli.sim_report`; this module is the subcommand (its options and
``run``) and re-exports the names the tests and benches use.

The segment scenarios (``--scenario segments``, ``segments-alike``, ``segments-differ``) compare one
global bandit, independent per-segment bandits and pooled per-segment bandits instead
(:mod:`banditflags_server.cli.sim_segments`).

Example::

    banditflags simulate --scenario switch --replications 100 --plot switch.svg
    banditflags simulate --arms 0.04,0.05,0.07 --steps 50 --policies thompson,banditflags
    banditflags simulate --scenario segments --replications 20 --plot segments.svg
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from banditflags_server.cli.sim_report import segment_table, svg_plot, table, write_png
from banditflags_server.cli.sim_runner import RunResult, Summary, run_once, simulate, summarise
from banditflags_server.cli.sim_scenarios import (
    POLICY_PRESETS,
    SCENARIOS,
    Policy,
    Scenario,
    make_scenario,
    parse_policies,
)
from banditflags_server.cli.sim_segments import (
    SEGMENT_POLICIES,
    SEGMENT_SCENARIOS,
    SegmentScenario,
    make_segment_scenario,
    simulate_segments,
)
from banditflags_server.engine import ParamError, PolicyParams

__all__ = [
    "POLICY_PRESETS",
    "SCENARIOS",
    "Policy",
    "RunResult",
    "Scenario",
    "Summary",
    "add_arguments",
    "make_scenario",
    "parse_policies",
    "run",
    "run_once",
    "simulate",
    "summarise",
    "svg_plot",
    "table",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the simulator's options on its ``argparse`` sub-parser."""
    parser.description = (__doc__ or "").split("\n\n")[0]
    parser.add_argument(
        "--scenario",
        default="bernoulli",
        choices=SCENARIOS + SEGMENT_SCENARIOS,
        help="preset (default bernoulli); segments*: a flag with segment bandits",
    )
    parser.add_argument("--arms", help="true means of the arms, e.g. 0.04,0.05,0.07 (stationary)")
    parser.add_argument(
        "--policies",
        help="comma-separated presets or NAME={json policy} (default uniform,thompson,banditflags); "
        f"presets: {', '.join(POLICY_PRESETS)}; segment scenarios: {', '.join(SEGMENT_POLICIES)} "
        "(default all three)",
    )
    parser.add_argument("--replications", "-r", type=int, default=50, help="runs per policy (default 50)")
    parser.add_argument(
        "--steps", type=int, help="updates per run (default 100; 200 for drift, switch, seasonal)"
    )
    parser.add_argument("--batch", type=int, help="users per update (default 1000; segments 2000)")
    parser.add_argument("--delay", type=float, help="mean reward delay in updates (default 0; seasonal 2)")
    parser.add_argument("--draws", type=int, help="Monte-Carlo draws per update (default: the policy's)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--plot", help="write the plot here (.svg; .png needs the 'sim' extra)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _bar(out: TextIO, started: float) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total)
        elapsed = time.monotonic() - started
        eta = elapsed / done * (total - done)
        out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} runs, {eta:4.0f} s left ")
        if done == total:
            out.write("\n")
        out.flush()

    return show


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The ``banditflags simulate`` command; returns the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if args.scenario in SEGMENT_SCENARIOS:
        return _run_segments(args, out, err)
    try:
        arms = None
        if args.arms:
            try:
                arms = [float(a) for a in args.arms.split(",")]
            except ValueError:
                raise ValueError(f"--arms: expected numbers like 0.04,0.05,0.07, got {args.arms!r}") from None
            if len(arms) < 2 or not all(math.isfinite(a) for a in arms):
                raise ValueError("--arms: give at least two finite means")
        for name in ("replications", "steps", "batch"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name}: must be at least 1")
        if args.delay is not None and not 0 <= args.delay <= 1000:
            raise ValueError("--delay: must be in [0, 1000] updates")
        sc = make_scenario(args.scenario, steps=args.steps, arms=arms, batch=args.batch, delay=args.delay)
        if sc.reward == "bernoulli" and not np.all((sc.means >= 0) & (sc.means <= 1)):
            raise ValueError("--arms: conversion rates must be in [0, 1]")
        policies = parse_policies(args.policies or "uniform,thompson,banditflags")
        for p in policies:
            if p.spec is not None:
                PolicyParams.from_dict(p.spec, sc.objective, sc.k)
        if args.draws is not None:
            PolicyParams(draws=args.draws)
        _check_plot(args.plot)
    except (ValueError, ParamError) as exc:
        print(f"banditflags simulate: {exc}", file=err)
        return 2
    print(
        f"scenario {sc.name}: {sc.k} arms, {sc.steps} updates of {sc.batch} users, reward {sc.reward}, "
        f"mean delay {sc.delay:g} updates, {args.replications} replications, seed {args.seed}",
        file=out,
    )
    progress = None if args.no_progress else _bar(err, time.monotonic())
    started = time.monotonic()
    results = simulate(sc, policies, args.replications, args.seed, draws=args.draws, progress=progress)
    print(table(sc, results), file=out)
    print(f"({time.monotonic() - started:.1f} s)", file=out)
    return _write_plot(
        args.plot, sc, results, f"{sc.name}: {sc.k} arms, {args.replications} replications", out, err
    )


def _check_plot(plot: str | None) -> None:
    if plot and not plot.endswith((".svg", ".png")):
        raise ValueError("--plot: the file name must end in .svg or .png")
    if plot and plot.endswith(".png") and importlib.util.find_spec("matplotlib") is None:
        # Before the simulation, not after minutes of it.
        raise ValueError(
            "--plot: a PNG needs matplotlib (pip install 'banditflags[sim]'); an .svg needs nothing"
        )


def _write_plot(
    plot: str | None,
    sc: Scenario | SegmentScenario,
    results: Sequence[Summary],
    title: str,
    out: TextIO,
    err: TextIO,
) -> int:
    if not plot:
        return 0
    path = Path(plot)
    if path.suffix == ".png":
        try:
            write_png(path, sc, results, title)
        except ImportError:
            print("banditflags simulate: PNG needs matplotlib: pip install 'banditflags[sim]'", file=err)
            return 2
    else:
        path.write_text(svg_plot(sc, results, title), encoding="utf-8")
    print(f"plot written to {path}", file=out)
    return 0


def _run_segments(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``simulate --scenario segments*``: global, independent and pooled bandits on one flag's segments."""
    try:
        for name in ("arms", "delay"):
            if getattr(args, name) is not None:
                raise ValueError(f"--{name}: not supported by the segment scenarios")
        for name in ("replications", "steps", "batch"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name}: must be at least 1")
        policies = [p.strip() for p in (args.policies or ",".join(SEGMENT_POLICIES)).split(",") if p.strip()]
        for p in policies:
            if p not in SEGMENT_POLICIES:
                raise ValueError(f"--policies: {p!r} is not one of {', '.join(SEGMENT_POLICIES)}")
        if not policies:
            raise ValueError("--policies: no policy given")
        if args.draws is not None:
            PolicyParams(draws=args.draws)
        _check_plot(args.plot)
        sc = make_segment_scenario(args.scenario, steps=args.steps, batch=args.batch)
    except (ValueError, ParamError) as exc:
        print(f"banditflags simulate: {exc}", file=err)
        return 2
    print(
        f"scenario {sc.name}: {sc.segments} segments ({int(sc.aligned.sum())} share the population's best "
        f"arm), {sc.k} arms, {sc.steps} updates of {sc.batch} users, {args.replications} replications, "
        f"seed {args.seed}",
        file=out,
    )
    progress = None if args.no_progress else _bar(err, time.monotonic())
    started = time.monotonic()
    results = simulate_segments(
        sc, policies, args.replications, args.seed, draws=args.draws, progress=progress
    )
    print(segment_table(results), file=out)
    print(f"({time.monotonic() - started:.1f} s)", file=out)
    title = f"{sc.name}: {sc.segments} segments, {sc.k} arms, {args.replications} replications"
    return _write_plot(args.plot, sc, [r.summary for r in results], title, out, err)
