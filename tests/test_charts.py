"""app.charts: what every chart promises (title, axis labels, legend, hover values, accessible name, table, empty
state), escaping of untrusted names, and tick labels that fit side by side."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from app import charts
from app.charts import Axis

NS = {"svg": "http://www.w3.org/2000/svg"}
NOW = datetime(2026, 11, 29, 21, 0, tzinfo=UTC)


def svg_of(markup: str) -> ET.Element:
    """The chart's <svg> element, parsed (so the markup is well-formed XML)."""
    match = re.search(r"<svg.*?</svg>", str(markup), re.S)
    assert match, markup
    return ET.fromstring(match.group(0))


def texts(svg: ET.Element, css_class: str) -> list[str]:
    return ["".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == css_class]


def tick_labels_fit(svg: ET.Element, axis: str) -> bool:
    group = next(g for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == f"axis axis-{axis}")
    ticks = [(float(t.get("x")), "".join(t.itertext())) for t in group.iter("{http://www.w3.org/2000/svg}text")
             if t.get("class") == "tick-label"]  # fmt: skip
    return charts.labels_fit([x for x, _ in ticks], [label for _, label in ticks])


def examples():
    hours = [NOW - timedelta(hours=47 - i) for i in range(48)]
    days = [NOW - timedelta(days=13 - i) for i in range(14)]
    return {
        "bar over hours": charts.bar_chart("Judgments per hour", hours, [i % 7 for i in range(48)],
                                           x_axis=Axis("Hour", "UTC"), y_axis=Axis("Judgments", "per hour"),
                                           empty="none yet"),
        "lines over days": charts.line_chart("Per rater", days, {"ann1": list(range(14)), "ann2": [3] * 14},
                                             x_axis=Axis("Day", "UTC"), y_axis=Axis("Judgments", "per day"),
                                             empty="none yet"),
        "lines over steps": charts.line_chart("Loss", list(range(0, 3000, 10)), {"loss": [1 / (1 + i) for i in range(300)]},
                                              x_axis=Axis("Training step"), y_axis=Axis("Loss"), empty="none yet"),
        "histogram": charts.histogram("Time", [5, 3, 0, 1], [0.0, 2.5, 5.0, 7.5, 10.0], x_axis=Axis("Time", "s"),
                                      y_axis=Axis("Judgments", "count"), empty="none yet"),
        "intervals": charts.interval_chart("Ratings", ["a", "b"], [1100.0, 900.0], [1050.0, 850.0], [1150.0, 950.0],
                                           x_axis=Axis("Rating", "Elo scale"), y_axis=Axis("Model"), empty="none yet"),
        "categories": charts.bar_chart("Per model", [f"model-{i:02d}-with-a-long-name" for i in range(30)],
                                       list(range(30)), x_axis=Axis("Model"), y_axis=Axis("Wins"), empty="none yet"),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(examples()))
def test_every_chart_has_title_axis_labels_hover_values_name_and_table(name):
    markup = str(examples()[name])
    svg = svg_of(markup)
    assert svg.get("role") == "img" and svg.get("aria-label", "").strip()
    assert svg.find("svg:title", NS).text.strip()
    assert texts(svg, "chart-title")
    labels = texts(svg, "axis-label")
    assert len(labels) == 2 and all(labels), labels
    marks = [m for m in svg.iter() if m.get("class") == "mark"]
    assert marks and all(m.find("svg:title", NS) is not None and m.find("svg:title", NS).text for m in marks)
    assert '<details class="chart-data">' in markup and "<table" in markup
    assert 2 <= len(texts(svg, "tick-label")) <= 2 * charts.MAX_TICKS + 30  # the category axis has row labels
    assert tick_labels_fit(svg, "x"), texts(svg, "tick-label")


def test_units_are_in_axis_labels_and_legend_only_with_several_series():
    svg = svg_of(examples()["lines over days"])
    assert "Judgments (per day)" in texts(svg, "axis-label") and "Day (UTC)" in texts(svg, "axis-label")
    assert [g for g in svg.iter() if g.get("class") == "legend"]
    single = svg_of(examples()["lines over steps"])
    assert not [g for g in single.iter() if g.get("class") == "legend"]


def test_untrusted_names_are_escaped():
    evil = '<script>alert(1)</script>" onload="x'
    markup = str(charts.line_chart(evil, [1, 2], {evil: [1.0, 2.0], "ok": [2.0, 1.0]}, x_axis=Axis(evil, evil),
                                   y_axis=Axis(evil), empty=evil))  # fmt: skip
    assert "<script>" not in markup and 'onload="x' not in markup
    svg_of(markup)  # still well-formed
    empty = str(charts.line_chart(evil, [], {}, x_axis=Axis("x"), y_axis=Axis("y"), empty=evil))
    assert "<script>" not in empty and "&lt;script&gt;" in empty
    board = str(charts.interval_chart(evil, [evil], [1.0], [0.5], [1.5], x_axis=Axis("r"), y_axis=Axis("m"), empty="e"))
    assert "<script>" not in board


@pytest.mark.parametrize("chart", [
    lambda: charts.bar_chart("Per hour", [NOW], [0], x_axis=Axis("Hour"), y_axis=Axis("n"), empty="Rate to see it."),
    lambda: charts.line_chart("Alpha", [NOW], {"alpha": [None]}, x_axis=Axis("Day"), y_axis=Axis("a"), empty="Rate to see it."),
    lambda: charts.line_chart("Raters", [], {}, x_axis=Axis("Day"), y_axis=Axis("n"), empty="Rate to see it."),
    lambda: charts.histogram("Time", [0, 0], [0, 1, 2], x_axis=Axis("s"), y_axis=Axis("n"), empty="Rate to see it."),
    lambda: charts.interval_chart("Ratings", [], [], [], [], x_axis=Axis("r"), y_axis=Axis("m"), empty="Rate to see it."),
])  # fmt: skip
def test_no_data_shows_the_empty_state_not_blank_axes(chart):
    markup = str(chart())
    assert "<svg" not in markup
    assert 'data-chart="empty"' in markup and "Rate to see it." in markup and 'class="chart-title"' in markup


@pytest.mark.parametrize("span", [timedelta(minutes=30), timedelta(hours=6), timedelta(hours=48), timedelta(days=7),
                                  timedelta(days=90), timedelta(days=800)])  # fmt: skip
@pytest.mark.parametrize("width", [150, 400, 600])
def test_time_ticks_fit_and_stay_few(span, width):
    low = NOW.timestamp() - span.total_seconds()
    ticks, labels = charts.time_ticks(low, NOW.timestamp(), width)
    assert 1 <= len(ticks) <= charts.MAX_TICKS
    assert all(low <= t <= NOW.timestamp() for t in ticks)
    positions = [(t - low) / span.total_seconds() * width for t in ticks]
    assert charts.labels_fit(positions, labels), labels
    assert all(a != b for a, b in zip(labels, labels[1:], strict=False)), labels  # neighbours told apart
    if span <= timedelta(days=3) and width >= 400:
        assert any(":" in label for label in labels), labels  # times of day for short spans


@pytest.mark.parametrize(("low", "high"), [(0, 1), (0, 7), (-0.2, 1.0), (0.001, 0.0013), (950, 1250), (0, 123456)])
@pytest.mark.parametrize("max_ticks", [2, 5, 8])
def test_number_ticks_bounds(low, high, max_ticks):
    ticks = charts.number_ticks(low, high, max_ticks)
    assert 1 <= len(ticks) <= max_ticks
    assert all(low - 1e-12 <= t <= high + 1e-12 for t in ticks)
    labels = [charts.format_number(t, ticks[1] - ticks[0] if len(ticks) > 1 else None) for t in ticks]
    assert len(set(labels)) == len(labels), labels


def test_counts_get_whole_number_ticks():
    svg = svg_of(charts.bar_chart("n", [1, 2, 3], [1, 3, 2], x_axis=Axis("x"), y_axis=Axis("n"), empty="e"))
    group = next(g for g in svg.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "axis axis-y")
    values = ["".join(t.itertext()) for t in group.iter("{http://www.w3.org/2000/svg}text") if t.get("class") == "tick-label"]
    assert values and all(v.isdigit() for v in values), values


def test_histogram_needs_one_more_edge_than_counts():
    with pytest.raises(ValueError, match="edges"):
        charts.histogram("t", [1, 2], [0, 1], x_axis=Axis("x"), y_axis=Axis("y"), empty="e")


def test_many_points_keep_hover_targets_bounded_and_table_complete():
    markup = str(charts.line_chart("Loss", list(range(1000)), {"loss": [float(i) for i in range(1000)]},
                                   x_axis=Axis("Step"), y_axis=Axis("Loss"), empty="e"))  # fmt: skip
    assert markup.count('class="mark"') <= charts.MAX_MARKERS + 1
    assert markup.count("<tr>") <= charts.MAX_TABLE_ROWS + 2


def test_job_page_curves_join_metrics_logged_at_different_steps_and_say_when_they_will_appear():
    from app.jobs.pages import metric_charts
    from app.models import JobMetric

    assert 'data-chart="empty"' in str(metric_charts([], "reward")[0])
    assert metric_charts([], "export") == []
    rows = [JobMetric(job_id=1, step=s, values={"loss": 1.0 / s}) for s in range(1, 11)]
    rows += [JobMetric(job_id=1, step=s, values={"eval_loss": 0.9 / s}) for s in (5, 10)]
    (loss,) = metric_charts(rows, "reward")
    svg = svg_of(loss)
    assert texts(svg, "chart-title") == ["Loss by training step"]
    assert "Training step" in texts(svg, "axis-label")
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}polyline"))) == 2  # eval_loss joined across its gaps


@pytest.mark.parametrize("hour", [0, 1, 5, 12, 21, 23])
def test_x_tick_labels_stay_clear_of_the_lowest_y_label_at_every_time_of_day(hour):
    """A 48-hour axis whose first tick falls at its left end (a midnight labelled with the day) drew that label
    under the y axis' "0" (seen in Chromium when the demo was built near midnight): x tick labels sit a full line
    below the lowest y label, whatever the hour the window starts at."""
    start = datetime(2026, 11, 28, hour, 0, tzinfo=UTC)
    hours = [start + timedelta(hours=i) for i in range(48)]
    svg = svg_of(charts.bar_chart("Judgments per hour", hours, [i % 5 for i in range(48)], x_axis=Axis("Hour", "UTC"),
                                  y_axis=Axis("Judgments", "per hour"), empty="none yet"))  # fmt: skip
    groups = {g.get("class"): g for g in svg.iter("{http://www.w3.org/2000/svg}g")}

    def label_baselines(axis: str) -> list[float]:
        return [float(t.get("y")) for t in groups[f"axis axis-{axis}"].iter("{http://www.w3.org/2000/svg}text")
                if t.get("class") == "tick-label"]  # fmt: skip

    lowest_y_label, x_labels = max(label_baselines("y")), label_baselines("x")
    assert x_labels and min(x_labels) - lowest_y_label >= 1.3 * charts.FONT  # descent of one + ascent of the other
    assert tick_labels_fit(svg, "x")
