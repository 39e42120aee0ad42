"""Inline SVG charts for the console: allocation over time and reward estimate over time.

Server-side, dependency-free, and readable without JavaScript. Each variant has its colour from
:func:`~banditflags_server.console.palette.colours` (by its key: a variant named "green" is green). The
reward axis speaks the objective's units: percentages for a binary objective (conversion rates), plain
numbers for a continuous one (a mean reward of 0.8 is 0.8, not "80%").

>>> svg = allocation_svg([0.0, 60.0], [[0.5, 0.5], [0.2, 0.8]], ["a", "b"], now=120.0)
>>> svg.startswith("<svg") and "</svg>" in svg
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape

from banditflags_server.console.palette import colours

W, H = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 10, 26


def _fmt_time(ts: float, span: float) -> str:
    d = datetime.fromtimestamp(ts, tz=timezone.utc)
    return d.strftime("%H:%M:%S" if span < 600 else "%H:%M" if span < 86400 else "%m-%d %H:%M")


class _Frame:
    """Maps time and value to SVG coordinates."""

    def __init__(self, t0: float, t1: float, y0: float, y1: float) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + 1e-9)
        self.y0, self.y1 = y0, max(y1, y0 + 1e-12)

    def x(self, t: float) -> float:
        return LEFT + (t - self.t0) / (self.t1 - self.t0) * (W - LEFT - RIGHT)

    def y(self, v: float) -> float:
        return TOP + (1.0 - (v - self.y0) / (self.y1 - self.y0)) * (H - TOP - BOTTOM)


def _axes(f: _Frame, yticks: Sequence[tuple[float, str]]) -> list[str]:
    out = []
    for v, label in yticks:
        y = f.y(v)
        out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label)}</text>'
        )
    span = f.t1 - f.t0
    for i in range(5):
        t = f.t0 + span * i / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        out.append(
            f'<text class="tick" x="{f.x(t):.1f}" y="{H - 8}" text-anchor="{anchor}">'
            f"{escape(_fmt_time(t, span))}</text>"
        )
    out.append(f'<line class="axis" x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}"/>')
    return out


def _svg(label: str, body: list[str]) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="none">' + "".join(body) + "</svg>"
    )


def allocation_svg(
    times: Sequence[float],
    weights: Sequence[Sequence[float]],
    labels: Sequence[str],
    *,
    now: float,
    killed: Sequence[tuple[float, float]] = (),
) -> str:
    """Stacked areas of the served weights of each allocation version, from its creation until the
    next one; ``killed`` spans are hatched (every unit got the control arm then)."""
    if not times:
        return _svg("no allocation yet", [])
    f = _Frame(times[0], max(now, times[-1]), 0.0, 1.0)
    body = _axes(f, [(0.0, "0%"), (0.5, "50%"), (1.0, "100%")])
    ends = [*times[1:], f.t1]
    k = len(labels)
    palette = colours(labels)
    for arm in range(k):
        upper: list[str] = []
        lower: list[str] = []
        for t_start, t_end, w in zip(times, ends, weights, strict=True):
            below = sum(w[:arm])
            above = below + w[arm]
            x0, x1 = f.x(t_start), f.x(t_end)
            upper += [f"{x0:.1f},{f.y(above):.1f}", f"{x1:.1f},{f.y(above):.1f}"]
            lower += [f"{x0:.1f},{f.y(below):.1f}", f"{x1:.1f},{f.y(below):.1f}"]
        points = " ".join(upper + lower[::-1])
        body.append(
            f'<polygon points="{points}" fill="{palette[arm]}" fill-opacity="0.85">'
            f"<title>{escape(labels[arm])}</title></polygon>"
        )
    for start, end in killed:
        x0, x1 = f.x(max(start, f.t0)), f.x(min(end, f.t1))
        if x1 > x0:
            body.append(
                f'<rect class="killed" x="{x0:.1f}" y="{TOP}" width="{x1 - x0:.1f}" '
                f'height="{H - TOP - BOTTOM}">'
                "<title>killed: every unit got the control variant</title></rect>"
            )
    return _svg("allocation over time", body)


def axis(values: Sequence[float], percent: bool) -> tuple[float, float, list[tuple[float, str]]]:
    """The reward axis: its range and round ticks labelled in one unit and one precision. Rates
    (``percent``) start at 0 and end at 100% at most (the server clamps binary rates to 1).

    >>> axis([0.04, 0.07], True)
    (0.0, 0.1, [(0.0, '0%'), (0.05, '5%'), (0.1, '10%')])
    >>> [label for _, label in axis([0.95, 1.55], False)[2]]
    ['0.8', '1.0', '1.2', '1.4', '1.6', '1.8']
    """
    scale = 100.0 if percent else 1.0
    lo, hi = min(values) * scale, max(values) * scale
    if percent:
        lo, hi = 0.0, min(100.0, max(hi * 1.15, 1.0))
    else:
        pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / 4
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 5.0, 10.0) if m * magnitude >= raw * 0.999)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    decimals = next(d for d in range(10) if abs(round(step, d) - step) < step * 1e-6)
    unit = "%" if percent else ""
    ticks = []
    for i in range(first, last + 1):
        v = i * step
        ticks.append((v / scale, f"{v + 0.0:,.{decimals}f}{unit}".replace("-0" + unit, "0" + unit)))
    return first * step / scale, last * step / scale, ticks


def reward_svg(
    times: Sequence[float],
    means: Sequence[Sequence[float | None]],
    labels: Sequence[str],
    *,
    now: float,
    percent: bool = True,
) -> str:
    """One line per arm: the cumulative observed mean reward at the end of each allocation version;
    ``percent``: the objective is binary (rates), else the axis shows plain numbers."""
    if not times:
        return _svg("no data yet", [])
    ends = [*times[1:], max(now, times[-1])]
    values = [m for row in means for m in row if m is not None]
    if not values:
        body = [
            f'<text class="empty" x="{W / 2}" y="{H / 2}" text-anchor="middle">'
            "no exposures yet: the estimates appear once SDKs report</text>"
        ]
        return _svg("no data yet", body)
    lo, hi, ticks = axis(values, percent)
    f = _Frame(times[0], ends[-1], lo, hi)
    body = _axes(f, ticks)
    palette = colours(labels)
    for arm in range(len(labels)):
        pts = [(f.x(t), f.y(m)) for t, row in zip(ends, means, strict=True) if (m := row[arm]) is not None]
        if not pts:
            continue
        c = palette[arm]
        if len(pts) > 1:
            line = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            body.append(f'<polyline points="{line}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, y in pts:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{c}"/>')
        body.append(f"<title>{escape(labels[arm])}</title>")
    return _svg("reward estimate over time", body)


def killed_spans(changes: Sequence[tuple[float, str]], now: float) -> list[tuple[float, float]]:
    """Time spans a flag was killed, from ``(time, new state)`` changes in time order.

    >>> killed_spans([(10.0, "killed"), (20.0, "running"), (30.0, "killed")], now=40.0)
    [(10.0, 20.0), (30.0, 40.0)]
    """
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for t, state in changes:
        if state == "killed" and start is None:
            start = t
        elif state != "killed" and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, now))
    return spans
