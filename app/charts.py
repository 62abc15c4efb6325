"""Every chart of the web pages, drawn on the server as inline SVG: line charts, bar charts and histograms.

    line_chart(title, x, {name: values}, x_axis=Axis(...), y_axis=Axis(...), empty="...")  -> Markup
    bar_chart(title, x, values, x_axis=..., y_axis=..., empty="...")                      -> Markup
    histogram(title, counts, edges, x_axis=..., y_axis=..., empty="...")                  -> Markup

Each returns one `<figure class="chart">` ready for a template, with the same promises everywhere:

- a title, axis labels with their units, and a legend when there is more than one series;
- tick labels that never overlap: as many ticks as the estimated label widths allow, "nice" steps (1, 2, 2.5, 5
  x 10^k), and for time axes a step and a date format that fit the span (minutes, hours, days, weeks, months);
- the exact value of every point or bar on hover (an SVG `<title>` on each mark);
- an accessible name (`role="img"`, `aria-label` with a one-sentence summary);
- the numbers behind it in a `<details>` table under the drawing;
- with no data, no blank axes: the title and a sentence saying what will appear and how to get there.

Pure string building, no JavaScript and no inline style: presentation attributes and classes only, so the pages
keep their strict CSP (`style-src 'self'`). Every text that reaches the markup is escaped (series names, labels
and titles may come from users: model names, usernames). x values are numbers, datetimes (timezone-aware or UTC)
or category labels (strings); y values are numbers, None or NaN leaving a gap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from markupsafe import Markup, escape

PALETTE = ("#3b6fd8", "#d8743b", "#2e9e6a", "#b23bd8", "#c23a5a", "#7a8596", "#b08a10", "#2a9fbf")
"""Series colours, cycled (readable on the light and the dark theme)."""
WIDTH = 640
"""Drawing width in SVG user units (the element scales to its container, text with it)."""
PLOT_HEIGHT = 170
"""Height of the plotting area; title, legend and axes add to it."""
FONT = 11
X_LABEL_DROP = 19
"""Baseline of x tick labels below the plot: far enough under the lowest y tick label (baseline 4 below the plot's
bottom) that a label at the left end never touches it, whatever the data (at least 1.3 x FONT between baselines)."""
"""Font size of tick labels and legend, in user units."""
CHAR_WIDTH = 0.62
"""Estimated width of one character as a share of the font size (sans-serif, digits are about 0.55)."""
TICK_GAP = 12
"""Least room between two neighbouring tick labels, in user units."""
MAX_TICKS = 8
MAX_MARKERS = 150
"""Hover targets drawn per series at most (evenly spaced); the table under the chart has the rest."""
MAX_TABLE_ROWS = 400
LEGEND_NAME_CHARS = 28

XKind = Literal["auto", "number", "time", "category"]


@dataclass(frozen=True)
class Axis:
    label: str
    """What the axis measures, e.g. "Judgments"."""
    unit: str = ""
    """Shown in the axis label, e.g. "per hour", "s", "UTC"; and after values in tooltips and tables."""
    kind: XKind = "auto"
    """x axes: number, time (datetimes) or category (labels); auto decides from the values."""

    @property
    def title(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


# ----------------------------------------------------------------------------------------------------- numbers


def format_number(value: float, step: float | None = None) -> str:
    """Short text for a value; with `step` (the tick spacing), just enough decimals to tell ticks apart."""
    if value is None or not math.isfinite(value):
        return "–"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.{_decimals((step or magnitude) / 1e6)}f}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.{_decimals((step or magnitude) / 1e3)}f}k"
    if step is not None:
        return f"{value:.{_decimals(step)}f}"
    if float(value).is_integer():
        return f"{value:.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _decimals(step: float) -> int:
    """Decimals that write `step` exactly (0.25 -> 2, 2.5 -> 1, 10 -> 0), at most 6."""
    if not (step > 0 and math.isfinite(step)):
        return 0
    decimals = 0
    while decimals < 6 and abs(round(step * 10**decimals) - step * 10**decimals) > 1e-6 * 10**decimals:
        decimals += 1
    return decimals


def nice_step(span: float, max_ticks: int, integer: bool = False) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k step that covers `span` in at most `max_ticks` - 1 intervals (with
    integer=True, a whole number: counts have no 2.5)."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(1, max_ticks - 1)
    if integer and raw <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if integer and not float(factor * power).is_integer():
            continue
        if factor * power >= raw * (1 - 1e-9):
            return factor * power
    return 10 * power


def number_ticks(low: float, high: float, max_ticks: int, integer: bool = False) -> list[float]:
    """Ticks at multiples of a nice step inside [low, high], never more than max_ticks (at least 2 when the
    interval allows)."""
    max_ticks = max(2, max_ticks)
    step = nice_step(high - low, max_ticks, integer)
    while True:
        first = math.ceil(low / step - 1e-9) * step
        ticks = []
        value = first
        while value <= high + step * 1e-9:
            ticks.append(0.0 if abs(value) < step * 1e-9 else value)
            value = first + step * len(ticks)
        if len(ticks) <= max_ticks:
            return ticks
        step = nice_step(step * max_ticks, max_ticks, integer)


def _text_width(text: str, size: float = FONT) -> float:
    return len(text) * size * CHAR_WIDTH


# ---------------------------------------------------------------------------------------------------- time axis

_TIME_STEPS = [
    (60, "%H:%M"), (300, "%H:%M"), (900, "%H:%M"), (1800, "%H:%M"), (3600, "%H:%M"), (2 * 3600, "%H:%M"),
    (3 * 3600, "%H:%M"), (6 * 3600, "%H:%M"), (12 * 3600, "%H:%M"), (86400, "%d %b"), (2 * 86400, "%d %b"),
    (7 * 86400, "%d %b"), (14 * 86400, "%d %b"), (30 * 86400, "%b %Y"), (91 * 86400, "%b %Y"),
    (365 * 86400, "%Y"),
]  # fmt: skip
"""Candidate tick steps of a time axis (seconds) and the label format each one needs."""


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _time_label(seconds: float, step: int, fmt: str) -> str:
    moment = _utc(seconds)
    if step < 86400 and moment.hour == 0 and moment.minute == 0:
        return moment.strftime("%d %b")  # midnight ticks name the day
    return moment.strftime(fmt)


def time_ticks(low: float, high: float, width: float) -> tuple[list[float], list[str]]:
    """Tick positions (epoch seconds) and labels for a time axis `width` units wide: the finest step whose
    labels fit side by side, aligned to UTC midnights, Mondays or month starts."""
    span = max(high - low, 1.0)
    for step, fmt in _TIME_STEPS:
        if span / step + 1 > MAX_TICKS * 3:
            continue  # far too many: skip building them
        ticks = _aligned(low, high, step)
        if not 1 <= len(ticks) <= MAX_TICKS:
            continue
        labels = [_time_label(t, step, fmt) for t in ticks]
        if labels_fit([(t - low) / span * width for t in ticks], labels):
            return ticks, labels
    return [low], [_utc(low).strftime("%d %b %Y")]


def labels_fit(positions: Sequence[float], labels: Sequence[str]) -> bool:
    """Whether centred labels at these positions (user units, ascending) keep TICK_GAP between neighbours."""
    for i in range(1, len(labels)):
        if positions[i] - positions[i - 1] < (_text_width(labels[i - 1]) + _text_width(labels[i])) / 2 + TICK_GAP:
            return False
    return True


def _aligned(low: float, high: float, step: int) -> list[float]:
    start = _utc(low)
    if step >= 365 * 86400:
        moments = [datetime(y, 1, 1, tzinfo=UTC) for y in range(start.year, _utc(high).year + 2)]
    elif step >= 30 * 86400:
        months = step // (30 * 86400)
        moments, year, month = [], start.year, start.month
        while True:
            moment = datetime(year, month, 1, tzinfo=UTC)
            if moment.timestamp() > high:
                break
            moments.append(moment)
            month += months
            year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    elif step >= 7 * 86400:
        monday = datetime(start.year, start.month, start.day, tzinfo=UTC) - timedelta(days=start.weekday())
        moments = [monday + timedelta(seconds=step * k) for k in range(int((high - monday.timestamp()) // step) + 2)]
    else:
        first = math.ceil(low / step) * step
        return [float(first + step * k) for k in range(int((high - first) // step) + 1)]
    return [m.timestamp() for m in moments if low <= m.timestamp() <= high]


def format_moment(seconds: float, span: float) -> str:
    """A moment as a tooltip or table shows it: with the time of day when the data is finer than a day."""
    return _utc(seconds).strftime("%Y-%m-%d %H:%M UTC" if span < 3 * 86400 or seconds % 86400 else "%Y-%m-%d")


# ---------------------------------------------------------------------------------------------------- x scales


@dataclass
class _XScale:
    kind: str
    positions: list[float]
    """Value of each x in axis units (epoch seconds, numbers, or category index)."""
    labels: list[str]
    """Each x as text for tooltips and the table."""
    low: float
    high: float


def _x_scale(x: Sequence, kind: XKind) -> _XScale:
    if kind == "auto":
        if x and all(isinstance(v, datetime) for v in x):
            kind = "time"
        elif x and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
            kind = "number"
        else:
            kind = "category"
    if kind == "time":
        positions = [_epoch(v) for v in x]
        span = (max(positions) - min(positions)) if positions else 0.0
        labels = [format_moment(p, span) for p in positions]
    elif kind == "number":
        positions = [float(v) for v in x]
        labels = [format_number(p) for p in positions]
    else:
        positions = [float(i) for i in range(len(x))]
        labels = [str(v) for v in x]
    low = min(positions, default=0.0)
    high = max(positions, default=1.0)
    return _XScale(kind, positions, labels, low, high)


# ---------------------------------------------------------------------------------------------------- frame


class _Frame:
    """Layout of one chart: title, legend rows, plot area, axes."""

    def __init__(self, title: str, legend: list[str], y_tick_labels: list[str], y_axis: Axis):
        self.title = title
        self.legend_rows = self._legend_rows(legend)
        self.top = 26 + 16 * len(self.legend_rows) + 8
        label_width = max((_text_width(t) for t in y_tick_labels), default=10)
        self.left = 22 + label_width + 8
        self.right = WIDTH - 24
        self.bottom = self.top + PLOT_HEIGHT
        self.height = self.bottom + 44
        self.y_axis = y_axis

    @property
    def plot_width(self) -> float:
        return self.right - self.left

    @staticmethod
    def _legend_rows(names: list[str]) -> list[list[tuple[str, int, float]]]:
        rows: list[list[tuple[str, int, float]]] = []
        x = 0.0
        for index, name in enumerate(names):
            shown = name if len(name) <= LEGEND_NAME_CHARS else name[: LEGEND_NAME_CHARS - 1] + "…"
            width = 16 + _text_width(shown) + 16
            if not rows or x + width > WIDTH - 28:
                rows.append([])
                x = 0.0
            rows[-1].append((shown, index, x))
            x += width
        return rows if len(names) > 1 else []


def _svg_open(frame: _Frame, summary: str) -> list[str]:
    label = f"{frame.title}. {summary}"
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg" viewBox="0 0 {WIDTH} {frame.height:.0f}" '
        f'width="100%" role="img" aria-label="{escape(label)}"><title>{escape(frame.title)}</title>'
        f"<desc>{escape(summary)}</desc>",
        f'<text class="chart-title" x="14" y="18" font-size="14" font-weight="600" fill="currentColor">'
        f"{escape(frame.title)}</text>",
    ]


def _legend(frame: _Frame, names: list[str]) -> list[str]:
    parts = []
    for row_index, row in enumerate(frame.legend_rows):
        y = 26 + 16 * row_index + 10
        items = []
        for shown, index, x in row:
            colour = PALETTE[index % len(PALETTE)]
            items.append(f'<g class="legend-item"><title>{escape(names[index])}</title>'
                         f'<rect x="{14 + x:.1f}" y="{y - 8}" width="12" height="10" rx="2" fill="{colour}"/>'
                         f'<text x="{14 + x + 16:.1f}" y="{y + 1}" font-size="{FONT}" fill="currentColor">'
                         f"{escape(shown)}</text></g>")  # fmt: skip
        parts.append(f'<g class="legend">{"".join(items)}</g>')
    return parts


def _y_axis(frame: _Frame, ticks: list[float], labels: list[str], y_of) -> list[str]:
    parts = ['<g class="axis axis-y">']
    for value, label in zip(ticks, labels, strict=True):
        y = y_of(value)
        parts.append(f'<line x1="{frame.left}" y1="{y:.1f}" x2="{frame.right}" y2="{y:.1f}" stroke="currentColor" '
                     f'stroke-opacity="{0.35 if value == ticks[0] else 0.12}"/>'
                     f'<text class="tick-label" x="{frame.left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="{FONT}" fill="currentColor">{escape(label)}</text>')  # fmt: skip
    middle = (frame.top + frame.bottom) / 2
    parts.append(f'<text class="axis-label" x="14" y="{middle:.1f}" transform="rotate(-90 14 {middle:.1f})" '
                 f'text-anchor="middle" font-size="{FONT}" fill="currentColor">{escape(frame.y_axis.title)}</text>')  # fmt: skip
    parts.append("</g>")
    return parts


def _x_axis(frame: _Frame, axis: Axis, ticks: list[float], labels: list[str], x_of) -> list[str]:
    parts = ['<g class="axis axis-x">',
             f'<line x1="{frame.left}" y1="{frame.bottom}" x2="{frame.right}" y2="{frame.bottom}" '
             'stroke="currentColor" stroke-opacity="0.5"/>']  # fmt: skip
    for value, label in zip(ticks, labels, strict=True):
        x = x_of(value)
        centre = label_centre(x, label)
        parts.append(f'<line x1="{x:.1f}" y1="{frame.bottom}" x2="{x:.1f}" y2="{frame.bottom + 4}" '
                     'stroke="currentColor" stroke-opacity="0.5"/>'
                     f'<text class="tick-label" x="{centre:.1f}" y="{frame.bottom + X_LABEL_DROP}" text-anchor="middle" '
                     f'font-size="{FONT}" fill="currentColor">{escape(label)}</text>')  # fmt: skip
    parts.append(f'<text class="axis-label" x="{(frame.left + frame.right) / 2:.1f}" y="{frame.height - 8:.1f}" '
                 f'text-anchor="middle" font-size="{FONT}" fill="currentColor">{escape(axis.title)}</text>')  # fmt: skip
    parts.append("</g>")
    return parts


def _x_ticks(scale: _XScale, width: float, x_labels: Sequence, to_px) -> tuple[list[float], list[str]]:
    """Tick values and labels for the x axis: the most ticks (up to MAX_TICKS) whose labels fit side by side,
    where they are drawn (labels at the ends are kept inside the drawing)."""
    if scale.kind == "time":
        return _thin(*time_ticks(scale.low, scale.high, width), to_px)
    if scale.kind == "number":
        return _thin(*number_axis_ticks(scale.low, scale.high, to_px), to_px)
    labels = [str(v) for v in x_labels]
    for every in range(max(1, math.ceil(len(labels) / MAX_TICKS)), len(labels) + 1):
        indexes = list(range(0, len(labels), every))
        shown = [labels[i] for i in indexes]
        if labels_fit([label_centre(to_px(i), label) for i, label in zip(indexes, shown, strict=True)], shown):
            return [float(i) for i in indexes], shown
    return [0.0], [labels[0]]


def label_centre(x: float, label: str) -> float:
    """Where a tick label centred on x is drawn: moved inside the drawing when it would stick out."""
    half = _text_width(label) / 2
    return min(max(x, half + 2), WIDTH - half - 2)


def _thin(ticks: list[float], labels: list[str], to_px) -> tuple[list[float], list[str]]:
    """Every other tick until the labels, where they are drawn, keep their distance."""
    while len(ticks) > 1 and not labels_fit([label_centre(to_px(t), s) for t, s in zip(ticks, labels, strict=True)],
                                            labels):  # fmt: skip
        ticks, labels = ticks[::2], labels[::2]
    return ticks, labels


def number_axis_ticks(low: float, high: float, to_px) -> tuple[list[float], list[str]]:
    """Nice ticks on [low, high], as many as fit (one tick when nothing else does)."""
    for count in range(MAX_TICKS, 1, -1):
        ticks = number_ticks(low, high, count)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else None
        labels = [format_number(t, step) for t in ticks]
        if labels_fit([to_px(t) for t in ticks], labels):
            return ticks, labels
    return [low], [format_number(low)]


def _y_range(values: list[float], y_min: float | None, y_max: float | None, zero: bool) -> tuple[float, float]:
    low = y_min if y_min is not None else min([*values, 0.0] if zero else values, default=0.0)
    high = y_max if y_max is not None else max(values, default=1.0)
    if high <= low:
        high = low + (abs(low) or 1.0)
    return low, high


def _y_scale(frame_top: float, frame_bottom: float, low: float, high: float):
    def y_of(value: float) -> float:
        return frame_bottom - (value - low) / (high - low) * (frame_bottom - frame_top)

    return y_of


def _y_ticks(low: float, high: float, fixed: bool, integer: bool = False) -> tuple[list[float], list[str], float, float]:
    """Ticks every >= 28 units of height; a free range grows to the nearest ticks around the data; integer data
    (counts) gets whole-number steps."""
    max_ticks = min(6, max(2, PLOT_HEIGHT // 28))
    step = nice_step(high - low, max_ticks, integer)
    if not fixed:
        low, high = math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step
        if high <= low:
            high = low + step
    ticks = number_ticks(low, high, max_ticks, integer)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else step
    return ticks, [format_number(t, step) for t in ticks], low, high


def _integral(values: list[float]) -> bool:
    return all(float(v).is_integer() for v in values)


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _with_unit(value: float, axis: Axis) -> str:
    text = format_number(value)
    return f"{text} {axis.unit}" if axis.unit and axis.unit not in ("count",) else text


# ---------------------------------------------------------------------------------------------------- table & empty


def _table(title: str, x_axis: Axis, x_labels: list[str], columns: Mapping[str, Sequence], y_axis: Axis) -> str:
    rows = list(range(len(x_labels)))
    note = ""
    if len(rows) > MAX_TABLE_ROWS:
        every = math.ceil(len(rows) / MAX_TABLE_ROWS)
        rows = rows[::every] + ([rows[-1]] if rows[-1] % every else [])
        note = f'<p class="muted">Every {every}th row of {len(x_labels)}.</p>'
    head = "".join(f'<th scope="col">{escape(name)}</th>' for name in columns)
    body = []
    for i in rows:
        cells = "".join(f"<td>{escape(format_number(values[i]) if i < len(values) and _finite(values[i]) else '–')}</td>"
                        for values in columns.values())  # fmt: skip
        body.append(f'<tr><th scope="row">{escape(x_labels[i])}</th>{cells}</tr>')
    return (f'<details class="chart-data"><summary>Table of the numbers</summary>{note}<div class="table-wrap">'
            f'<table class="table"><caption>{escape(title)}: {escape(y_axis.title)}</caption>'
            f'<thead><tr><th scope="col">{escape(x_axis.title)}</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div></details>')  # fmt: skip


def empty_chart(title: str, message: str) -> Markup:
    """No data yet: the title and what will appear, instead of blank axes."""
    return Markup(f'<figure class="chart chart-empty-state" data-chart="empty"><figcaption class="chart-title">'
                  f'{escape(title)}</figcaption><p class="chart-empty">{escape(message)}</p></figure>')  # fmt: skip


def _figure(parts: list[str], table: str) -> Markup:
    return Markup(f'<figure class="chart">{"".join(parts)}</svg>{table}</figure>')


# ---------------------------------------------------------------------------------------------------- charts


def line_chart(title: str, x: Sequence, series: Mapping[str, Sequence[float | None]], *, x_axis: Axis,
               y_axis: Axis, empty: str, y_min: float | None = None, y_max: float | None = None,
               points: bool = True, gaps: bool = True) -> Markup:  # fmt: skip
    """One line per series over x, a marker with its value on every point (at most MAX_MARKERS per series), a
    legend when there are several series. A None or NaN value breaks the line; with gaps=False the line joins
    the values around it instead (series logged at different steps)."""
    names = list(series)
    values = [v for vs in series.values() for v in vs if _finite(v)]
    if not x or not values:
        return empty_chart(title, empty)
    scale = _x_scale(x, x_axis.kind)
    low, high = _y_range(values, y_min, y_max, zero=False)
    y_ticks, y_labels, low, high = _y_ticks(low, high, fixed=y_min is not None and y_max is not None,
                                            integer=_integral(values))  # fmt: skip
    frame = _Frame(title, names, y_labels, y_axis)
    y_of = _y_scale(frame.top, frame.bottom, low, high)
    x_low, x_high = scale.low, scale.high
    pad = 0.0 if scale.kind != "category" else 0.5

    def x_of(value: float) -> float:
        if x_high == x_low:
            return (frame.left + frame.right) / 2
        return frame.left + (value - x_low + pad) / (x_high - x_low + 2 * pad) * frame.plot_width

    x_ticks, x_tick_labels = _x_ticks(scale, frame.plot_width, x, x_of)
    span = f"from {scale.labels[0]} to {scale.labels[-1]}" if len(scale.labels) > 1 else f"at {scale.labels[0]}"
    peaks = "; ".join(f"{name}: last {_with_unit(_last(vs), y_axis)}" for name, vs in series.items()
                      if any(_finite(v) for v in vs))  # fmt: skip
    summary = (f"Line chart of {y_axis.title} by {x_axis.title}, {len(names)} series, {span}. {peaks}.")
    parts = _svg_open(frame, summary) + _legend(frame, names) + _y_axis(frame, y_ticks, y_labels, y_of)
    parts += _x_axis(frame, x_axis, x_ticks, x_tick_labels, x_of)
    for index, (name, ys) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        runs: list[list[tuple[float, float]]] = [[]]
        for i, value in enumerate(ys[: len(scale.positions)]):
            if _finite(value):
                runs[-1].append((x_of(scale.positions[i]), y_of(float(value))))
            elif runs[-1] and gaps:
                runs.append([])
        parts.append(f'<g class="series" data-series="{escape(name)}">')
        for run in runs:
            if len(run) > 1:
                coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in run)
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round" '
                             f'points="{coords}"/>')  # fmt: skip
        finite = [i for i, v in enumerate(ys[: len(scale.positions)]) if _finite(v)]
        every = max(1, math.ceil(len(finite) / MAX_MARKERS))
        shown = finite[::every] + ([finite[-1]] if finite and (len(finite) - 1) % every else [])
        radius = 2.5 if points and len(finite) <= 60 else 1.5
        for i in shown:
            tip = f"{name} · {scale.labels[i]}: {_with_unit(float(ys[i]), y_axis)}"
            cx, cy = x_of(scale.positions[i]), y_of(float(ys[i]))
            parts.append(f'<g class="mark"><title>{escape(tip)}</title>'  # a wider transparent target for hovering
                         f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="7" fill="transparent"/>'
                         f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{radius}" fill="{colour}"/></g>')  # fmt: skip
        parts.append("</g>")
    return _figure(parts, _table(title, x_axis, scale.labels, series, y_axis))


def _last(values: Sequence) -> float:
    return next(float(v) for v in reversed(values) if _finite(v))


def bar_chart(title: str, x: Sequence, values: Sequence[float | None], *, x_axis: Axis, y_axis: Axis, empty: str,
              colour: str = PALETTE[0], empty_when_zero: bool = True,
              bar_span: float | None = None) -> Markup:  # fmt: skip
    """One bar per x value, each with its value on hover. Time or number x: bars `bar_span` wide (default: the
    smallest gap between x values), centred on their x; category x: one slot per label."""
    finite = [float(v) for v in values if _finite(v)]
    if not x or not finite or (empty_when_zero and not any(finite)):
        return empty_chart(title, empty)
    scale = _x_scale(x, x_axis.kind)
    low, high = _y_range(finite, 0.0, None, zero=True)
    y_ticks, y_labels, low, high = _y_ticks(low, high, fixed=False, integer=_integral(finite))
    frame = _Frame(title, [], y_labels, y_axis)
    y_of = _y_scale(frame.top, frame.bottom, low, high)
    if scale.kind == "category":
        gaps = [1.0]
    else:
        ordered = sorted(set(scale.positions))
        gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False)] or [1.0]
    width_units = bar_span or min(gaps)
    x_low, x_high = scale.low - width_units / 2, scale.high + width_units / 2

    def x_of(value: float) -> float:
        return frame.left + (value - x_low) / (x_high - x_low) * frame.plot_width

    x_ticks, x_tick_labels = _x_ticks(scale, frame.plot_width, x, x_of)
    bar_width = max(1.0, width_units / (x_high - x_low) * frame.plot_width * 0.82)
    total = sum(finite)
    peak = max(range(len(values)), key=lambda i: float(values[i]) if _finite(values[i]) else -math.inf)
    summary = (f"Bar chart of {y_axis.title} by {x_axis.title}, {len(values)} bars from {scale.labels[0]} to "
               f"{scale.labels[-1]}; total {format_number(total)}, highest {_with_unit(float(values[peak]), y_axis)} "
               f"at {scale.labels[peak]}.")  # fmt: skip
    parts = _svg_open(frame, summary) + _y_axis(frame, y_ticks, y_labels, y_of)
    parts += _x_axis(frame, x_axis, x_ticks, x_tick_labels, x_of)
    parts.append('<g class="series">')
    for i, value in enumerate(values[: len(scale.positions)]):
        if not _finite(value):
            continue
        top, base = y_of(max(float(value), 0.0)), y_of(min(float(value), 0.0))
        tip = f"{scale.labels[i]}: {_with_unit(float(value), y_axis)}"
        parts.append(_bar(x_of(scale.positions[i]) - bar_width / 2, bar_width, top, base, frame, colour, tip))
    parts.append("</g>")
    return _figure(parts, _table(title, x_axis, scale.labels, {y_axis.title: values}, y_axis))


def _bar(x: float, width: float, top: float, base: float, frame: _Frame, colour: str, tip: str) -> str:
    """A bar and, behind it, a transparent column the height of the plot: hovering anywhere above a short (or
    zero) bar still shows its value."""
    return (f'<g class="mark"><title>{escape(tip)}</title>'
            f'<rect x="{x:.1f}" y="{frame.top}" width="{width:.1f}" height="{frame.bottom - frame.top:.1f}" '
            'fill="transparent"/>'
            f'<rect x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" height="{max(base - top, 0.0):.1f}" '
            f'fill="{colour}"/></g>')  # fmt: skip


def histogram(title: str, counts: Sequence[int], edges: Sequence[float], *, x_axis: Axis, y_axis: Axis,
              empty: str, colour: str = PALETTE[2]) -> Markup:  # fmt: skip
    """Bars between consecutive bin edges (len(edges) == len(counts) + 1) on a number axis."""
    if len(edges) != len(counts) + 1:
        raise ValueError(f"a histogram needs len(counts) + 1 edges, got {len(counts)} counts, {len(edges)} edges")
    if not counts or not any(c for c in counts if _finite(c)):
        return empty_chart(title, empty)
    low, high = _y_range([float(c) for c in counts], 0.0, None, zero=True)
    y_ticks, y_labels, low, high = _y_ticks(low, high, fixed=False, integer=True)
    frame = _Frame(title, [], y_labels, y_axis)
    y_of = _y_scale(frame.top, frame.bottom, low, high)
    x_low, x_high = float(edges[0]), float(edges[-1])
    if x_high <= x_low:
        x_high = x_low + 1.0

    def x_of(value: float) -> float:
        return frame.left + (value - x_low) / (x_high - x_low) * frame.plot_width

    x_ticks, x_tick_labels = number_axis_ticks(x_low, x_high, x_of)
    labels = [f"{format_number(a)}–{format_number(b)}" for a, b in zip(edges, edges[1:], strict=False)]
    total = sum(counts)
    summary = (f"Histogram of {x_axis.title}: {format_number(total)} values in {len(counts)} bins from "
               f"{format_number(x_low)} to {format_number(x_high)}.")  # fmt: skip
    parts = _svg_open(frame, summary) + _y_axis(frame, y_ticks, y_labels, y_of)
    parts += _x_axis(frame, x_axis, x_ticks, x_tick_labels, x_of)
    parts.append('<g class="series">')
    for (a, b), count in zip(zip(edges, edges[1:], strict=False), counts, strict=True):
        left, right = x_of(float(a)), x_of(float(b))
        top = y_of(float(count))
        unit = f" {x_axis.unit}" if x_axis.unit else ""
        tip = f"{format_number(a)}–{format_number(b)}{unit}: {format_number(count)}"
        parts.append(_bar(left + 0.5, max(right - left - 1, 0.5), top, frame.bottom, frame, colour, tip))
    parts.append("</g>")
    return _figure(parts, _table(title, x_axis, labels, {y_axis.title: list(counts)}, y_axis))


def interval_chart(title: str, names: Sequence[str], values: Sequence[float | None],
                   lows: Sequence[float | None], highs: Sequence[float | None], *, x_axis: Axis, y_axis: Axis,
                   empty: str, colour: str = PALETTE[0]) -> Markup:  # fmt: skip
    """One row per name: a dot at its value and a line across its interval (e.g. ratings with 95% intervals),
    the rows in the order given."""
    rows = [i for i in range(len(names)) if _finite(values[i])]
    if not rows:
        return empty_chart(title, empty)
    numbers = [float(v) for i in rows for v in (values[i], lows[i], highs[i]) if _finite(v)]
    low, high = min(numbers), max(numbers)
    margin = (high - low) * 0.05 or 1.0
    low, high = low - margin, high + margin
    shown = [n if len(n) <= LEGEND_NAME_CHARS else n[: LEGEND_NAME_CHARS - 1] + "…" for n in map(str, names)]
    row_height = 24
    top = 34
    left = 22 + max(_text_width(shown[i]) for i in rows) + 10
    right = WIDTH - 24
    bottom = top + row_height * len(rows)
    height = bottom + 44

    def x_of(value: float) -> float:
        return left + (value - low) / (high - low) * (right - left)

    ticks, tick_labels = number_axis_ticks(low, high, x_of)
    best = rows[0]
    summary = (f"{len(rows)} rows of {x_axis.title} with intervals; first {names[best]} at "
               f"{_with_unit(float(values[best]), x_axis)}, last {names[rows[-1]]} at "
               f"{_with_unit(float(values[rows[-1]]), x_axis)}.")  # fmt: skip
    label = f"{title}. {summary}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'role="img" aria-label="{escape(label)}"><title>{escape(title)}</title><desc>{escape(summary)}</desc>',
        f'<text class="chart-title" x="14" y="18" font-size="14" font-weight="600" fill="currentColor">'
        f"{escape(title)}</text>",
        '<g class="axis axis-y">',
        f'<text class="axis-label" x="14" y="{(top + bottom) / 2:.1f}" transform="rotate(-90 14 {(top + bottom) / 2:.1f})" '
        f'text-anchor="middle" font-size="{FONT}" fill="currentColor">{escape(y_axis.title)}</text>',
    ]  # fmt: skip
    for row, i in enumerate(rows):
        y = top + row_height * (row + 0.5)
        parts.append(f'<text class="tick-label" x="{left - 8:.1f}" y="{y + 4:.1f}" text-anchor="end" font-size="{FONT}" '
                     f'fill="currentColor">{escape(shown[i])}</text>')  # fmt: skip
    parts.append("</g>")
    parts.append('<g class="axis axis-x">')
    parts.append(f'<line x1="{left:.1f}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="currentColor" '
                 'stroke-opacity="0.5"/>')  # fmt: skip
    for value, text in zip(ticks, tick_labels, strict=True):
        x = x_of(value)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom + 4}" stroke="currentColor" '
                     f'stroke-opacity="0.12"/><text class="tick-label" x="{x:.1f}" y="{bottom + 16}" '
                     f'text-anchor="middle" font-size="{FONT}" fill="currentColor">{escape(text)}</text>')  # fmt: skip
    parts.append(f'<text class="axis-label" x="{(left + right) / 2:.1f}" y="{height - 8}" text-anchor="middle" '
                 f'font-size="{FONT}" fill="currentColor">{escape(x_axis.title)}</text></g>')  # fmt: skip
    parts.append('<g class="series">')
    for row, i in enumerate(rows):
        y = top + row_height * (row + 0.5)
        interval = ""
        if _finite(lows[i]) and _finite(highs[i]):
            interval = f" (interval {format_number(float(lows[i]))} to {format_number(float(highs[i]))})"
            parts.append(f'<line x1="{x_of(float(lows[i])):.1f}" y1="{y:.1f}" x2="{x_of(float(highs[i])):.1f}" '
                         f'y2="{y:.1f}" stroke="{colour}" stroke-width="3" stroke-opacity="0.45" '
                         'stroke-linecap="round"/>')  # fmt: skip
        tip = f"{names[i]}: {_with_unit(float(values[i]), x_axis)}{interval}"
        parts.append(f'<circle class="mark" cx="{x_of(float(values[i])):.1f}" cy="{y:.1f}" r="5" fill="{colour}">'
                     f"<title>{escape(tip)}</title></circle>")  # fmt: skip
    parts.append("</g>")
    table = _table(title, y_axis, [str(names[i]) for i in rows],
                   {x_axis.title: [values[i] for i in rows], "interval low": [lows[i] for i in rows],
                    "interval high": [highs[i] for i in rows]}, x_axis)  # fmt: skip
    return _figure(parts, table)
