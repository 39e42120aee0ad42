"""`banditflags simulate`: the real bandit engine against synthetic arms, compared with uniform and an oracle.

Every replication runs the server's own :func:`~banditflags_server.bandit.compute_weights` in this process,
the way the server's recompute loop does: users arrive in batches (one batch per update, ``--batch`` users);
each update is one allocation version (a period), with its age, the previous weights (for ``max_step``)
and only the rewards that have *arrived* by then (``--delay``: conversions arrive a geometric number of
updates after the exposure, credited to the exposure's period, as the SDK does). The true means may
drift or switch over time. The oracle always serves the arm that is best at that moment; regret is the
expected reward the policy lost against it.

Scenarios (``--scenario``): ``bernoulli``, ``gaussian``, ``revenue`` (stationary); ``drift``, ``switch``
(non-stationary); ``seasonal`` (a base rate that moves with the time of day, the same for every arm);
``aa`` (3 identical arms). ``--arms 0.04,0.05,0.07`` replaces the arms of the scenario.

Policies (``--policies``): ``uniform``, ``thompson`` (plain Thompson sampling the way GrowthBook and
MABWiser run it: pooled history, 1% floor, burn-in 100), ``ucb1`` and ``epsilon_greedy`` (MABWiser's),
``banditflags`` (this engine's defaults: Thompson sampling on stratified estimates), ``banditflags-stable``
(with the stability guard at 0.85), ``banditflags-balance`` (with the balance guard at 0.59),
``banditflags-ns`` (the defaults with a one-day half-life), ``top_two``; or ``NAME={json policy}`` for any
parameters.

Example::

    banditflags simulate --scenario switch --replications 100 --plot switch.svg
    banditflags simulate --arms 0.04,0.05,0.07 --steps 50 --policies thompson,banditflags
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from banditflags_server.engine import ParamError, PolicyParams, compute_weights

FloatArray = npt.NDArray[np.float64]

#: Policies by name: the ``policy`` object of a flag (None: the uniform split).
POLICY_PRESETS: dict[str, dict[str, Any] | None] = {
    "uniform": None,
    "thompson": {"name": "thompson", "stratify": False, "stability": 0.0},
    "ucb1": {"name": "ucb1", "stratify": False, "stability": 0.0},
    "epsilon_greedy": {"name": "epsilon_greedy", "stratify": False, "stability": 0.0},
    "top_two": {"name": "top_two_thompson"},
    "banditflags": {"name": "thompson"},
    "banditflags-stable": {"name": "thompson", "stability": 0.85},
    "banditflags-balance": {"name": "thompson", "balance": 0.59},
    "banditflags-ns": {"name": "thompson", "half_life": 86_400.0},
}


@dataclass
class Scenario:
    """True arm means over time and how rewards are drawn and delivered.

    ``means[t, k]`` is arm k's expected reward during update t. ``reward`` is ``bernoulli``, ``gaussian``
    (normal with standard deviation ``sd``) or ``revenue`` (converts with ``means / value`` and then pays
    a log-normal amount of mean ``value``: heavy-tailed). ``delay`` is the mean delay of a reward in
    updates (0: before the next update).

    Example:
        >>> s = make_scenario("switch", steps=10)
        >>> s.means.shape, int(s.means[0].argmax()), int(s.means[-1].argmax())
        ((10, 3), 0, 2)
    """

    name: str
    means: FloatArray
    reward: str = "bernoulli"
    sd: float = 1.0
    value: float = 40.0
    delay: float = 0.0
    batch: int = 1000
    step_seconds: float = 3600.0
    aa: bool = False

    @property
    def steps(self) -> int:
        """Number of updates."""
        return int(self.means.shape[0])

    @property
    def k(self) -> int:
        """Number of arms."""
        return int(self.means.shape[1])

    @property
    def objective(self) -> dict[str, Any]:
        """The flag objective the engine is given."""
        return {"reward": "binary" if self.reward == "bernoulli" else "continuous"}


SCENARIOS = ("bernoulli", "gaussian", "revenue", "drift", "switch", "seasonal", "aa")


def make_scenario(
    name: str,
    *,
    steps: int | None = None,
    arms: Sequence[float] | None = None,
    batch: int | None = None,
    delay: float | None = None,
) -> Scenario:
    """A named scenario, optionally with other arms (stationary means), length, batch size or delay.

    Example:
        >>> make_scenario("bernoulli", arms=[0.1, 0.2], steps=5).means.tolist()[0]
        [0.1, 0.2]
    """
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    t = steps or (200 if name in ("drift", "switch", "seasonal") else 100)
    x = np.linspace(0.0, 1.0, t)[:, None]
    kw: dict[str, Any] = {}
    if name == "bernoulli":
        base = np.array([0.04, 0.05, 0.06])
    elif name == "gaussian":
        base = np.array([1.0, 1.05, 1.1])
        kw = {"reward": "gaussian", "sd": 1.0}
    elif name == "revenue":
        base = np.array([2.0, 2.1, 2.3])
        kw = {"reward": "revenue", "value": 40.0}
    elif name == "aa":
        base = np.array([0.05, 0.05, 0.05])
        kw = {"aa": True}
    elif name == "seasonal":
        base = np.array([0.05, 0.055, 0.06])
    else:
        base = np.array([0.06, 0.045, 0.03])
    if arms is not None:
        base = np.asarray([float(a) for a in arms])
    means = np.repeat(base[None, :], t, axis=0)
    if name == "switch" and arms is None:
        means = np.where(x < 0.5, base[None, :], base[::-1][None, :])
    elif name == "drift" and arms is None:
        # The best and the worst arm trade places linearly; the middle one stays.
        means = base[None, :] + x * (base[::-1] - base)[None, :]
    elif name == "seasonal":
        # A daily cycle of the base rate (x0.5 .. x1.5) with a larger share of traffic at the peak hours.
        hours = np.arange(t)[:, None] % 24
        means = means * (1.0 + 0.5 * np.sin(2 * np.pi * hours / 24.0))
    if name == "seasonal":
        kw["delay"] = 2.0
    if delay is not None:
        kw["delay"] = float(delay)
    return Scenario(name=name, means=np.asarray(means, dtype=np.float64), batch=batch or 1000, **kw)


@dataclass
class Policy:
    """A named policy: a flag's ``policy`` object, or None for the uniform split."""

    name: str
    spec: dict[str, Any] | None


def parse_policies(text: str) -> list[Policy]:
    """``thompson,banditflags,mine={"name": "ucb1"}`` → policies (presets or JSON policy objects).

    Example:
        >>> [p.name for p in parse_policies('thompson,x={"name": "ucb1"}')]
        ['thompson', 'x']
    """
    out: list[Policy] = []
    depth = 0
    part = ""
    parts: list[str] = []
    for ch in text:  # split on commas outside JSON braces
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(part)
            part = ""
        else:
            part += ch
    parts.append(part)
    for raw in (p.strip() for p in parts):
        if not raw:
            continue
        if "=" in raw:
            name, _, js = raw.partition("=")
            try:
                spec = json.loads(js)
            except ValueError as exc:
                raise ValueError(f"policy {name!r}: not valid JSON: {exc}") from None
            if not isinstance(spec, dict):
                raise ValueError(f"policy {name!r}: must be a JSON object")
            out.append(Policy(name.strip(), spec))
        elif raw in POLICY_PRESETS:
            out.append(Policy(raw, POLICY_PRESETS[raw]))
        else:
            raise ValueError(f"unknown policy {raw!r}; presets: {', '.join(POLICY_PRESETS)}")
    if not out:
        raise ValueError("no policy given")
    return out


@dataclass
class RunResult:
    """One replication of one policy: per-update regret, served shares and the best arm."""

    regret: FloatArray  # (T,) expected regret of each update's batch
    shares: FloatArray  # (T, K) served weights
    best: npt.NDArray[np.int64]  # (T,) the best arm at each update


def _draw_rewards(
    sc: Scenario, counts: npt.NDArray[np.int64], mu: FloatArray, rng: np.random.Generator
) -> list[tuple[npt.NDArray[np.int64], FloatArray]]:
    """Per arm: (delay of each rewarded user, reward value); users with reward 0 are left out."""
    out = []
    q = sc.delay / (1.0 + sc.delay)  # geometric with mean `delay`
    for k, c in enumerate(counts):
        if sc.reward == "bernoulli":
            hits = int(rng.binomial(int(c), min(max(mu[k], 0.0), 1.0)))
            vals = np.ones(hits)
        elif sc.reward == "gaussian":
            vals = rng.normal(mu[k], sc.sd, int(c))
        else:  # revenue: convert with mu / value, then pay a log-normal amount with mean `value`
            hits = int(rng.binomial(int(c), min(max(mu[k] / sc.value, 0.0), 1.0)))
            sigma = 1.0
            vals = rng.lognormal(math.log(sc.value) - sigma * sigma / 2.0, sigma, hits)
        delays = (
            np.zeros(vals.shape[0], dtype=np.int64)
            if q <= 0
            else rng.geometric(1.0 - q, vals.shape[0]).astype(np.int64) - 1
        )
        out.append((delays, vals))
    return out


def run_once(
    sc: Scenario, spec: dict[str, Any] | None, seed: int | Sequence[int], *, draws: int | None = None
) -> RunResult:
    """One replication: update the weights ``sc.steps`` times with the real engine, serve, reward.

    Example:
        >>> r = run_once(make_scenario("bernoulli", steps=5), {"name": "thompson"}, 1)
        >>> r.regret.shape, r.shares.shape
        ((5,), (5, 3))
    """
    rng_env = np.random.default_rng([*np.atleast_1d(seed).tolist(), 1])
    rng_pol = np.random.default_rng([*np.atleast_1d(seed).tolist(), 2])
    t_max, k = sc.steps, sc.k
    params: PolicyParams | None = None
    if spec is not None:
        params = PolicyParams.from_dict(spec, sc.objective, k)
        if draws is not None:
            params = dataclasses.replace(params, draws=draws)
    n = np.zeros((t_max, k))
    s = np.zeros((t_max, k))
    ss = np.zeros((t_max, k))
    horizon = t_max + 1
    arr_s = np.zeros((horizon, t_max, k))  # rewards arriving at update a, for period p, arm k
    arr_ss = np.zeros((horizon, t_max, k))
    regret = np.zeros(t_max)
    shares = np.zeros((t_max, k))
    best = sc.means.argmax(axis=1)
    previous: tuple[float, ...] | None = None
    uniform = np.full(k, 1.0 / k)
    step = sc.step_seconds
    for t in range(t_max):
        if params is None:
            w = uniform
        else:
            ages = tuple((t - (p + 0.5)) * step for p in range(t)) if t else ()
            if t == 0:
                pn = ps = pss = np.zeros((1, k))
                ages = (0.0,)
            else:
                pn, ps, pss = n[:t], s[:t], ss[:t]
            ctx = dataclasses.replace(params, previous=previous, period_ages=ages)
            w = compute_weights(pn, ps, pss, ctx, rng_pol)
            previous = tuple(float(x) for x in w)
        shares[t] = w
        mu = sc.means[t]
        counts = rng_env.multinomial(sc.batch, w)
        n[t] = counts
        regret[t] = float(counts @ (mu.max() - mu))
        for arm, (delays, vals) in enumerate(_draw_rewards(sc, counts, mu, rng_env)):
            if vals.shape[0] == 0:
                continue
            at = np.minimum(t + delays, horizon - 1)
            np.add.at(arr_s[:, t, arm], at, vals)
            np.add.at(arr_ss[:, t, arm], at, vals * vals)
        # What has arrived by the end of update t counts for the next weights.
        s += arr_s[t]
        ss += arr_ss[t]
    return RunResult(regret, shares, best)


@dataclass
class Summary:
    """Replications of one policy on one scenario, aggregated for the table and the plot."""

    policy: str
    regret: FloatArray  # (R,) total regret per replication
    curve: FloatArray  # (T,) mean cumulative regret
    shares: FloatArray  # (T, K) mean served weights
    best_share_end: FloatArray  # (R,) share to the best arm in the last update
    converge: FloatArray  # (R,) updates until the best arm keeps >= 50% (nan: never)
    max_share: FloatArray  # (R,) the largest share any arm got during the run
    best_share_curve: FloatArray = field(default_factory=lambda: np.zeros(0))  # (T,) mean share to best

    @property
    def mean(self) -> float:
        """Mean total regret."""
        return float(self.regret.mean())

    @property
    def se(self) -> float:
        """Standard error of the mean total regret."""
        r = self.regret.shape[0]
        return float(self.regret.std(ddof=1) / math.sqrt(r)) if r > 1 else 0.0


def _converge_time(res: RunResult, threshold: float = 0.5) -> float:
    """Updates after the last change of the best arm until its share stays >= threshold to the end."""
    best = res.best
    changes = np.flatnonzero(best[1:] != best[:-1])
    start = int(changes[-1]) + 1 if changes.shape[0] else 0
    share = res.shares[np.arange(best.shape[0]), best][start:]
    below = np.flatnonzero(share < threshold)
    if below.shape[0] == 0:
        return 0.0
    last = int(below[-1])
    if last == share.shape[0] - 1:
        return math.nan
    return float(last + 1)


def summarise(policy: str, runs: Sequence[RunResult]) -> Summary:
    """Aggregate the replications of one policy."""
    regret = np.array([r.regret.sum() for r in runs])
    curve = np.mean([np.cumsum(r.regret) for r in runs], axis=0)
    shares = np.mean([r.shares for r in runs], axis=0)
    idx = [np.arange(r.best.shape[0]) for r in runs]
    best_curve = np.mean([r.shares[i, r.best] for r, i in zip(runs, idx, strict=True)], axis=0)
    return Summary(
        policy=policy,
        regret=regret,
        curve=curve,
        shares=shares,
        best_share_end=np.array([r.shares[-1, r.best[-1]] for r in runs]),
        converge=np.array([_converge_time(r) for r in runs]),
        max_share=np.array([r.shares.max() for r in runs]),
        best_share_curve=best_curve,
    )


def simulate(
    sc: Scenario,
    policies: Sequence[Policy],
    replications: int,
    seed: int = 0,
    *,
    draws: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Summary]:
    """Run every policy ``replications`` times on the same seeds (common random numbers)."""
    total = replications * len(policies)
    done = 0
    out = []
    for pol in policies:
        runs = []
        for r in range(replications):
            runs.append(run_once(sc, pol.spec, [seed, r], draws=draws))
            done += 1
            if progress is not None:
                progress(done, total)
        out.append(summarise(pol.name, runs))
    return out


# ---------------------------------------------------------------------------------------------------------
# Output


def table(sc: Scenario, results: Sequence[Summary]) -> str:
    """The comparison table (plain text, also valid Markdown)."""
    uni = next((r for r in results if r.policy == "uniform"), None)
    rows = [
        "| policy | regret (mean ± s.e.) | % of uniform | share to best at end | updates to converge "
        "(median) | max share of any arm (95th pct) | runs with max share < 0.6 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        pct = f"{100.0 * r.mean / uni.mean:.0f}%" if uni is not None and uni.mean > 0 else "-"
        conv = r.converge
        never = int(np.isnan(conv).sum())
        med = "never" if never * 2 > conv.shape[0] else f"{float(np.nanmedian(conv)):.0f}"
        if never and med != "never":
            med += f" ({never} never)"
        end = f"{float(r.best_share_end.mean()):.2f}"
        if sc.aa:  # no best arm: only the balance matters
            med = end = "-"
        rows.append(
            f"| {r.policy} | {r.mean:,.1f} ± {r.se:,.1f} | {pct} | {end} | "
            f"{med} | {float(np.percentile(r.max_share, 95)):.2f} | "
            f"{100.0 * float((r.max_share < 0.6).mean()):.0f}% |"
        )
    return "\n".join(rows)


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def svg_plot(sc: Scenario, results: Sequence[Summary], title: str = "") -> str:
    """Two panels: mean cumulative regret, and the mean share served to the best arm, over the updates."""
    width, height, pad = 900, 360, 55
    pw = (width - 3 * pad) / 2
    ph = height - 2 * pad
    t = sc.steps
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20 * len(results)}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="100%" height="100%" fill="white"/><text x="{pad}" y="20" font-size="14">'
        f"{_esc(title or sc.name)}</text>",
    ]

    def panel(x0: float, label: str, ys: list[FloatArray], ymax: float) -> None:
        ymax = ymax if ymax > 0 else 1.0
        parts.append(
            f'<rect x="{x0:.1f}" y="{pad}" width="{pw:.1f}" height="{ph}" fill="none" stroke="#999"/>'
        )
        parts.append(f'<text x="{x0:.1f}" y="{pad - 8}">{_esc(label)}</text>')
        for frac in (0.0, 0.5, 1.0):
            y = pad + ph * (1 - frac)
            parts.append(
                f'<text x="{x0 - 5:.1f}" y="{y + 4:.1f}" text-anchor="end">{ymax * frac:,.3g}</text>'
            )
        parts.append(
            f'<text x="{x0 + pw / 2:.1f}" y="{pad + ph + 30}" text-anchor="middle">update (of {t})</text>'
        )
        for i, series in enumerate(ys):
            pts = " ".join(
                f"{x0 + pw * j / max(t - 1, 1):.1f},{pad + ph * (1 - float(v) / ymax):.1f}"
                for j, v in enumerate(series.tolist())
            )
            colour = _COLOURS[i % len(_COLOURS)]
            parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.6"/>')

    curves = [r.curve for r in results]
    panel(pad, "cumulative regret (mean)", curves, max(float(c.max()) for c in curves) * 1.05)
    panel(2 * pad + pw, "share served to the best arm (mean)", [r.best_share_curve for r in results], 1.0)
    for i, r in enumerate(results):
        y = height + 20 * i
        colour = _COLOURS[i % len(_COLOURS)]
        parts.append(f'<rect x="{pad}" y="{y - 10}" width="14" height="4" fill="{colour}"/>')
        parts.append(f'<text x="{pad + 20}" y="{y - 5}">{_esc(r.policy)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _png(path: Path, sc: Scenario, results: Sequence[Summary], title: str) -> None:
    import matplotlib  # the optional "sim" extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        a.plot(r.curve, label=r.policy)
        b.plot(r.best_share_curve, label=r.policy)
    a.set_title("cumulative regret (mean)")
    b.set_title("share served to the best arm (mean)")
    b.set_ylim(0, 1)
    for ax in (a, b):
        ax.set_xlabel("update")
    a.legend()
    fig.suptitle(title or sc.name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the simulator's options on its ``argparse`` sub-parser."""
    parser.description = (__doc__ or "").split("\n\n")[0]
    parser.add_argument(
        "--scenario", default="bernoulli", choices=SCENARIOS, help="preset (default bernoulli)"
    )
    parser.add_argument("--arms", help="true means of the arms, e.g. 0.04,0.05,0.07 (stationary)")
    parser.add_argument(
        "--policies",
        default="uniform,thompson,banditflags",
        help="comma-separated presets or NAME={json policy} (default uniform,thompson,banditflags); "
        f"presets: {', '.join(POLICY_PRESETS)}",
    )
    parser.add_argument("--replications", "-r", type=int, default=50, help="runs per policy (default 50)")
    parser.add_argument(
        "--steps", type=int, help="updates per run (default 100; 200 for drift, switch, seasonal)"
    )
    parser.add_argument("--batch", type=int, help="users per update (default 1000)")
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
        policies = parse_policies(args.policies)
        for p in policies:
            if p.spec is not None:
                PolicyParams.from_dict(p.spec, sc.objective, sc.k)
        if args.draws is not None:
            PolicyParams(draws=args.draws)
        if args.plot and not args.plot.endswith((".svg", ".png")):
            raise ValueError("--plot: the file name must end in .svg or .png")
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
    if args.plot:
        path = Path(args.plot)
        title = f"{sc.name}: {sc.k} arms, {args.replications} replications"
        if path.suffix == ".png":
            try:
                _png(path, sc, results, title)
            except ImportError:
                print("banditflags simulate: PNG needs matplotlib: pip install 'banditflags[sim]'", file=err)
                return 2
        else:
            path.write_text(svg_plot(sc, results, title), encoding="utf-8")
        print(f"plot written to {path}", file=out)
    return 0
