"""Small server-drawn SVG charts for the admin pages: line, bar and histogram.

Pure string building, no JavaScript: the charts work offline and under the strict CSP (presentation attributes
only, no inline styles). Every text is escaped. Each helper returns markupsafe.Markup ready for a template.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

PALETTE = ("#3b6fd8", "#d8743b", "#2e9e6a", "#b23bd8", "#d83b5e", "#7a8596", "#c9a227", "#3bb8d8")
"""Series colours, cycled."""


@dataclass(frozen=True)
class ChartArgs:
    width: int = 640
    """Drawing width in SVG user units (the element scales to its container)."""
    height: int = 200
    """Drawing height in SVG user units."""
    margin_left: int = 44
    """Room for the y-axis labels."""
    margin_bottom: int = 28
    """Room for the x-axis labels."""
    margin_top: int = 10
    margin_right: int = 10
    max_x_labels: int = 8
    """At most this many x labels, evenly thinned."""


def _number(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return "0"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.2g}"


def _frame(title: str, args: ChartArgs, body: list[str], y_low: float, y_high: float, x_labels: Sequence[str],
           x_of) -> Markup:  # fmt: skip
    plot_bottom = args.height - args.margin_bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {args.width} {args.height}" '
        f'width="100%" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<line x1="{args.margin_left}" y1="{plot_bottom}" x2="{args.width - args.margin_right}" y2="{plot_bottom}" '
        'stroke="currentColor" stroke-opacity="0.4"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        value = y_low + fraction * (y_high - y_low)
        y = plot_bottom - fraction * (plot_bottom - args.margin_top)
        parts.append(f'<text x="{args.margin_left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                     f'fill="currentColor">{escape(_number(value))}</text>')  # fmt: skip
        if fraction:
            parts.append(f'<line x1="{args.margin_left}" y1="{y:.1f}" x2="{args.width - args.margin_right}" '
                         f'y2="{y:.1f}" stroke="currentColor" stroke-opacity="0.12"/>')  # fmt: skip
    step = max(1, math.ceil(len(x_labels) / args.max_x_labels))
    for i in range(0, len(x_labels), step):
        parts.append(f'<text x="{x_of(i):.1f}" y="{args.height - 8}" text-anchor="middle" font-size="11" '
                     f'fill="currentColor">{escape(str(x_labels[i]))}</text>')  # fmt: skip
    return Markup("".join(parts + body + ["</svg>"]))


def _y_scale(values: Sequence[float], args: ChartArgs, y_min: float | None, y_max: float | None):
    finite = [v for v in values if v is not None and math.isfinite(v)]
    low = y_min if y_min is not None else min([0.0, *finite])
    high = y_max if y_max is not None else max([1.0, *finite])
    if high <= low:
        high = low + 1.0
    plot_bottom = args.height - args.margin_bottom

    def y_of(value: float) -> float:
        return plot_bottom - (value - low) / (high - low) * (plot_bottom - args.margin_top)

    return low, high, y_of


def line_chart(series: dict[str, Sequence[float | None]], x_labels: Sequence[str], *, title: str,
               y_min: float | None = None, y_max: float | None = None, args: ChartArgs = ChartArgs()) -> Markup:  # fmt: skip
    """One polyline per series (None values break the line), with a legend when there are several series."""
    n = max((len(v) for v in series.values()), default=0)
    low, high, y_of = _y_scale([v for values in series.values() for v in values], args, y_min, y_max)
    span = args.width - args.margin_left - args.margin_right

    def x_of(i: int) -> float:
        return args.margin_left + (span * i / (n - 1) if n > 1 else span / 2)

    body = []
    for k, (name, values) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        runs: list[list[str]] = [[]]
        for i, value in enumerate(values):
            if value is None or not math.isfinite(value):
                runs.append([])
            else:
                runs[-1].append(f"{x_of(i):.1f},{y_of(value):.1f}")
        for run in runs:
            if len(run) == 1:
                x, y = run[0].split(",")
                body.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{colour}"/>')
            elif run:
                body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(run)}">'
                            f"<title>{escape(name)}</title></polyline>")  # fmt: skip
        if len(series) > 1:
            body.append(f'<text x="{args.margin_left + 8 + 110 * k}" y="{args.margin_top + 10}" font-size="11" '
                        f'fill="{colour}">{escape(name)}</text>')  # fmt: skip
    return _frame(title, args, body, low, high, x_labels, x_of)


def bar_chart(values: Sequence[float], x_labels: Sequence[str], *, title: str, colour: str = PALETTE[0],
              args: ChartArgs = ChartArgs()) -> Markup:  # fmt: skip
    """Vertical bars, one per value, each with a tooltip (label: value)."""
    n = len(values)
    low, high, y_of = _y_scale(values, args, 0.0, None)
    span = args.width - args.margin_left - args.margin_right
    slot = span / max(n, 1)

    def x_of(i: int) -> float:
        return args.margin_left + slot * (i + 0.5)

    body = []
    for i, value in enumerate(values):
        top = y_of(value)
        body.append(f'<rect x="{x_of(i) - slot * 0.4:.1f}" y="{top:.1f}" width="{slot * 0.8:.1f}" '
                    f'height="{max(0.0, y_of(0.0) - top):.1f}" fill="{colour}">'
                    f"<title>{escape(str(x_labels[i]))}: {escape(_number(value))}</title></rect>")  # fmt: skip
    return _frame(title, args, body, low, high, x_labels, x_of)


def histogram(counts: Sequence[int], edges: Sequence[float], *, title: str, unit: str = "",
              args: ChartArgs = ChartArgs()) -> Markup:  # fmt: skip
    """Bars between consecutive bin edges (len(edges) == len(counts) + 1), labelled by their lower edge."""
    if len(edges) != len(counts) + 1:
        raise ValueError(f"a histogram needs len(counts) + 1 edges, got {len(counts)} counts, {len(edges)} edges")
    labels = [f"{_number(edge)}{unit}" for edge in edges[:-1]]
    return bar_chart(counts, labels, title=title, colour=PALETTE[2], args=args)
