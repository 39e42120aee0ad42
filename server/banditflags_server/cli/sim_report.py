"""The simulator's output: the comparison table (plain text, also Markdown) and the plots (SVG, or PNG
with matplotlib from the ``sim`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from banditflags_server.cli.sim_runner import Summary
from banditflags_server.cli.sim_scenarios import FloatArray, Scenario
from banditflags_server.cli.sim_segments import SegmentSummary


class Plotted(Protocol):
    """What the plots need of a scenario (a :class:`Scenario` or a segment scenario)."""

    @property
    def name(self) -> str: ...

    @property
    def steps(self) -> int: ...


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


def segment_table(results: Sequence[SegmentSummary]) -> str:
    """The segment scenarios' table: total regret, and where it comes from (plain text, also Markdown)."""
    ref = {r.summary.policy: r.summary.mean for r in results}
    rows = [
        "| bandit | total regret (mean ± s.e.) | s.d. over seeds | vs independent | vs global | regret in "
        "segments sharing the best arm | regret in the others | share to each segment's best arm at end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def pct(x: float, of: str) -> str:
        base = ref.get(of)
        return f"{100.0 * x / base:.0f}%" if base else "-"

    for r in results:
        s = r.summary
        sd = float(s.regret.std(ddof=1)) if s.regret.shape[0] > 1 else 0.0
        rows.append(
            f"| {s.policy} | {s.mean:,.1f} ± {s.se:,.1f} | {sd:,.1f} | {pct(s.mean, 'independent')} | "
            f"{pct(s.mean, 'global')} | {float(r.aligned.mean()):,.1f} | {float(r.odd.mean()):,.1f} | "
            f"{float(s.best_share_end.mean()):.2f} |"
        )
    return "\n".join(rows)


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def svg_plot(sc: Plotted, results: Sequence[Summary], title: str = "") -> str:
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


def write_png(path: Path, sc: Plotted, results: Sequence[Summary], title: str) -> None:
    """The plot of :func:`svg_plot` as a PNG; raises ImportError without matplotlib."""
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
