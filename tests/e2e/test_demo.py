"""The demo as first started (`rankforge demo`: seed, tiny models, simulated history) in a real browser: every page
an admin opens first shows content, every chart is titled and labelled with tick labels that do not overlap
(bounding boxes measured by Chromium), and an empty project shows each chart's empty state.

The demo is built once for the session (tests/e2e/conftest.py: demo_site, in a child process with its own SQLite
file and artifact directory, as `rankforge demo` builds it) and served by one uvicorn process; the tests only read
it, except the last one, which adds an empty project.
"""

from __future__ import annotations

import re
from importlib.util import find_spec

import httpx
import pytest

from app.demo.history import RESOLVED_FLAGS_PER_PROJECT
from tests.e2e.conftest import login, screenshot

pytestmark = pytest.mark.e2e

ADMIN = {"username": "admin", "password": "admin-demo-pass"}
ANN1 = {"username": "ann1", "password": "ann1-demo-pass"}
HAS_TRAINER = find_spec("torch") is not None and find_spec("transformers") is not None

CHART_FACTS = """() => [...document.querySelectorAll('svg.chart-svg')].map(svg => {
  const box = e => e.getBoundingClientRect();
  const ticks = [...svg.querySelectorAll('text.tick-label')].map(t => ({text: t.textContent, r: box(t)}));
  const overlaps = [];
  for (let i = 0; i < ticks.length; i++) for (let j = i + 1; j < ticks.length; j++) {
    const a = ticks[i].r, b = ticks[j].r;
    if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom)
      overlaps.push(ticks[i].text + ' / ' + ticks[j].text);
  }
  return {
    title: (svg.querySelector('title') || {}).textContent || '',
    visibleTitle: [...svg.querySelectorAll('text.chart-title')].map(t => t.textContent).join(''),
    axisLabels: [...svg.querySelectorAll('text.axis-label')].map(t => t.textContent),
    role: svg.getAttribute('role'), label: svg.getAttribute('aria-label') || '',
    ticks: ticks.length, overlaps,
    hover: svg.querySelectorAll('.mark > title').length, marks: svg.querySelectorAll('.mark').length,
    table: !!(svg.parentElement.querySelector('details.chart-data table')),
    legend: svg.querySelectorAll('.legend-item').length, series: svg.querySelectorAll('g.series').length,
  };
})"""


@pytest.fixture(scope="module")
def demo(demo_site, browser):
    """The shared demo server (tests/e2e/conftest.py) with an admin's page for this module."""
    context = browser.new_context(base_url=demo_site["url"], viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"JavaScript error: {error}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)  # CSP violations land here
    login(page, ADMIN)
    yield {"page": page, "problems": problems, "context": context, **demo_site}
    context.close()


def charts_on(page, path: str) -> list[dict]:
    page.goto(path)
    facts = page.evaluate(CHART_FACTS)
    for chart in facts:
        where = f"{path}: {chart['title']!r}"
        assert chart["title"].strip() and chart["visibleTitle"].strip(), where
        assert len(chart["axisLabels"]) == 2 and all(label.strip() for label in chart["axisLabels"]), where
        assert chart["role"] == "img" and chart["label"].startswith(chart["title"]), where
        assert chart["ticks"] >= 2 and not chart["overlaps"], (where, chart["overlaps"])
        assert chart["marks"] and chart["hover"] == chart["marks"], where
        assert chart["table"], where
        assert chart["series"] <= 1 or chart["legend"] == chart["series"], where
    return facts


def test_demo_builds_in_seconds_with_history(demo):
    history = demo["history"]
    assert history["judgments"] >= 100 and history["flagged"] >= 3, history
    if HAS_TRAINER:
        assert history["reward_job_status"] == "succeeded", history
    assert demo["build_seconds"] < 240, demo["build_seconds"]  # tiny models + a real tiny reward job included


def test_dashboard_shows_activity_raters_and_review_queue(demo):
    page = demo["page"]
    facts = charts_on(page, "/projects/demo/dashboard")
    assert len(facts) == 4, [f["title"] for f in facts]
    per_rater = next(f for f in facts if "by rater" in f["title"])
    assert per_rater["legend"] >= 5  # the simulated raters
    assert "simulated" in page.locator("#project-description").inner_text()
    raters = page.locator("#raters tbody tr")
    assert raters.count() >= 5
    eve = page.locator("#raters tbody tr", has_text="sim-eve").inner_text()
    assert "too_fast" in eve and "position_bias" in eve  # the careless rater stands out
    # Gold accuracy per rater: gold items are mixed in at random (20%), so a rater may not have met one yet;
    # most of the simulated week's raters have.
    sim_rows = [raters.nth(i).inner_text() for i in range(raters.count()) if "sim-" in raters.nth(i).inner_text()]
    assert sum("%" in row for row in sim_rows) >= 3, sim_rows
    # The demo's promise: raters flagged some judgments of each project; the admin resolved the first two of each
    # project's own flags (RESOLVED_FLAGS_PER_PROJECT), the rest wait in that project's review queue.
    flagged = demo["history"]["flagged_per_project"]
    assert flagged["demo"] >= RESOLVED_FLAGS_PER_PROJECT + 3, flagged
    assert page.locator("#resolved li").count() == RESOLVED_FLAGS_PER_PROJECT
    assert page.locator("#reviews .review-item").count() == flagged["demo"] - RESOLVED_FLAGS_PER_PROJECT
    screenshot(page, "demo-dashboard")
    page.goto("/projects/demo-rank/dashboard")
    resolved_rank = min(RESOLVED_FLAGS_PER_PROJECT, flagged["demo-rank"])
    assert page.locator("#resolved li").count() == resolved_rank
    assert page.locator("#reviews .review-item").count() == flagged["demo-rank"] - resolved_rank
    assert not demo["problems"], demo["problems"]


def test_leaderboard_ranks_the_demo_models_with_intervals(demo):
    page = demo["page"]
    facts = charts_on(page, "/projects/demo/leaderboard")
    assert len(facts) == 1 and facts[0]["marks"] == 4
    rows = page.locator("#leaderboard tbody tr")
    assert rows.count() == 4
    intervals = [rows.nth(i).locator("td").nth(3).inner_text() for i in range(4)]
    assert all(re.fullmatch(r"[\d.]+ – [\d.]+", text.strip()) for text in intervals), intervals
    screenshot(page, "demo-leaderboard")
    assert not demo["problems"], demo["problems"]


def test_datasets_jobs_and_models_pages_show_the_demo_work(demo):
    page = demo["page"]
    page.goto("/datasets")
    assert page.locator("#datasets-table tbody tr").count() >= 1
    page.locator("#datasets-table tbody tr a").first.click()
    page.wait_for_url("**/datasets/*")
    assert len(charts_on(page, page.url)) == 1  # pairs per day of judgment
    page.goto("/jobs")
    jobs = page.locator("#job-table tbody tr")
    assert jobs.count() >= (2 if HAS_TRAINER else 1)
    if HAS_TRAINER:
        page.locator("#job-table tbody tr", has_text="reward").locator("a").first.click()
        page.wait_for_url("**/jobs/*")
        curves = charts_on(page, page.url)
        assert {f["title"] for f in curves} >= {"Loss by training step", "Reward by training step"}
        page.goto("/models")
        assert page.locator("table tbody tr", has_text="reward").count() >= 2  # the tiny one and the trained one
    assert not demo["problems"], demo["problems"]


def test_demo_annotators_still_have_open_work(demo, browser):
    context = browser.new_context(base_url=demo["url"])
    page = context.new_page()
    try:
        login(page, ANN1)
        for slug in ("demo", "demo-rank"):
            page.goto(f"/projects/{slug}/annotate")
            page.wait_for_selector("#judgment-form, #empty-queue")  # the task loads after the page
            assert page.locator("#judgment-form").is_visible(), (slug, page.inner_text("main")[:1500])
    finally:
        context.close()


def test_an_empty_project_shows_every_charts_empty_state(demo):
    page = demo["page"]
    response = httpx.post(demo["url"] + "/api/v1/projects", json={"name": "Empty e2e", "mode": "pairwise"},
                          headers={"Authorization": f"Bearer {demo['token']}"})  # fmt: skip
    assert response.status_code in (200, 201), response.text
    project_id = response.json()["id"]
    for path, expected in ((f"/projects/{project_id}/dashboard", 4), (f"/projects/{project_id}/leaderboard", 1)):
        page.goto(path)
        slots = page.locator(".chart-slot")
        assert slots.count() == expected, path
        assert page.locator("svg.chart-svg").count() == 0, path
        for i in range(expected):
            empty = slots.nth(i).locator("[data-chart=empty]")
            assert empty.is_visible(), (path, i)
            assert empty.locator(".chart-title").inner_text().strip(), (path, i)
            assert len(empty.locator(".chart-empty").inner_text()) > 30, (path, i)  # says what appears and how
    assert not demo["problems"], demo["problems"]
