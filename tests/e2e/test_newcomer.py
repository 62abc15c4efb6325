"""A newcomer on the demo (issue 27): each role finds every page it may use by clicking, within three clicks of
/projects; every page it meets passes axe-core with no serious or critical violation; decisions show what they are
about; the job page fits 1280 px; a wrong import format is named; the new-user form starts at the least role.

Runs on the session's demo server (tests/e2e/conftest.py: demo_site).
"""

from __future__ import annotations

import json
import re
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import login, screenshot

pytestmark = pytest.mark.e2e

USERS = {
    "admin": {"username": "admin", "password": "admin-demo-pass"},
    "engineer": {"username": "eng", "password": "eng-demo-pass"},
    "annotator": {"username": "ann1", "password": "ann1-demo-pass"},
}
# The pages each role may use, as page shapes (P: a project, N: an id). Rounds and webhook endpoints have no
# page of their own in the demo until one is started or added, so their detail pages are not listed.
PROJECT_PAGES_FOR_STAFF = [
    "/projects/P", "/projects/P/annotate", "/projects/P/dashboard", "/projects/P/leaderboard", "/projects/P/rounds",
    "/projects/P/train", "/projects/P/judges", "/projects/P/ai-review", "/projects/P/verifier", "/projects/P/edits",
    "/projects/P/practice", "/projects/P/pay", "/projects/P/comparisons/N", "/projects/P/battle",
]  # fmt: skip
ENGINEER_PAGES = ["/projects", *PROJECT_PAGES_FOR_STAFF, "/datasets", "/datasets/N", "/jobs", "/jobs/N", "/models"]
ROLE_PAGES = {
    "admin": [*ENGINEER_PAGES, "/projects/new", "/projects/P/members", "/admin/users", "/admin/audit", "/webhooks"],
    "engineer": ENGINEER_PAGES,
    "annotator": ["/projects", "/projects/P/annotate", "/projects/P/ai-review", "/projects/P/verifier", "/projects/P/battle"],
}
NOT_A_PAGE = re.compile(r"^/(api/|static/|docs|redoc|openapi|logout|metrics|healthz)|/files/|/full/")
"""Links the crawl does not follow: the JSON API and its docs, downloads, log out, text fragments."""

LINKS = """() => [...document.querySelectorAll('a[href]')].map(a => a.href)"""


def page_shape(path: str) -> str:
    """/projects/demo/comparisons/40 -> /projects/P/comparisons/N (one visit per shape keeps the crawl short)."""
    parts = path.rstrip("/").split("/") or [""]
    if len(parts) > 2 and parts[1] == "projects" and parts[2] != "new":
        parts[2] = "P"
    return "/".join("N" if part.isdigit() else part for part in parts) or "/"


def axe_problems(page) -> list[str]:
    """axe-core's serious and critical violations on the page (axe.min.js from axe-playwright-python, offline;
    evaluated through the devtools protocol, so the page's CSP does not block it)."""
    import axe_playwright_python

    source = Path(axe_playwright_python.__file__).with_name("axe.min.js").read_text()
    page.evaluate(source)
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]  # fmt: skip


def settle(page) -> None:
    """Wait for what a page loads after itself (the rating page's task, htmx fragments)."""
    page.wait_for_load_state("networkidle")
    if "/annotate" in page.url:
        page.wait_for_selector("#judgment-form, #empty-queue, .empty-queue")


@pytest.mark.parametrize("role", ["admin", "engineer", "annotator"])
def test_each_role_reaches_every_page_within_three_clicks_and_axe_finds_nothing_serious(demo_site, browser, role):
    context = browser.new_context(base_url=demo_site["url"], viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)  # the machine may be loaded: a slow page is not a failure here
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"JavaScript error: {error}"))
    try:
        login(page, USERS[role])
        page.goto("/projects")
        origin = demo_site["url"]
        reached: dict[str, int] = {}  # page shape -> clicks from /projects
        refused, accessibility = [], {}
        queue = deque([("/projects", 0)])
        wanted = set(ROLE_PAGES[role])
        while queue and not wanted <= reached.keys():
            path, clicks = queue.popleft()
            shape = page_shape(path)
            if shape in reached:
                continue
            response = page.goto(path)
            if response.status >= 400:
                refused.append(f"{path}: {response.status}")  # a link to a page the role may not use
                continue
            landed = urlsplit(page.url).path
            reached.setdefault(shape, clicks)
            reached.setdefault(page_shape(landed), clicks)  # an annotator's project link lands on its rating page
            settle(page)
            accessibility[page_shape(landed)] = axe_problems(page)
            if clicks == 3:
                continue
            for href in page.evaluate(LINKS):
                target = urlsplit(href)
                if href.startswith(origin) and not NOT_A_PAGE.search(target.path) and "format=csv" not in target.query:
                    queue.append((target.path, clicks + 1))
        missing = sorted(wanted - reached.keys())
        assert not missing, f"{role} cannot reach {missing} within three clicks (reached {sorted(reached)})"
        assert not refused, refused
        serious = {shape: found for shape, found in accessibility.items() if found}
        assert not serious, serious
        assert not errors, errors
    finally:
        context.close()


@pytest.fixture
def admin_page(demo_site, browser):
    """An admin's fresh browser tab on the demo; fails the test on any JavaScript error."""
    context = browser.new_context(base_url=demo_site["url"], viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)  # the machine may be loaded: a slow page is not a failure here
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"JavaScript error: {error}"))
    login(page, USERS["admin"])
    yield page
    context.close()
    assert not errors, errors


def test_review_and_practice_items_show_the_prompt_and_answers_and_link_the_comparison(admin_page):
    page = admin_page
    page.goto("/projects")
    page.get_by_role("link", name="Manage").first.click()
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Dashboard").click()
    items = page.locator("#reviews .review-item")
    assert items.count() >= 3
    assert re.search(r"ranked [A-D]( [>=] [A-D])+", items.first.locator(".review-title").inner_text())  # the verdict
    for i in range(items.count()):
        item = items.nth(i)
        assert item.locator(".decision-prompt").first.inner_text().strip(), item.inner_text()
        assert item.locator(".decision-answer").count() >= 2, item.inner_text()
        assert "Comparison" in item.locator(".decision-link a").inner_text()
    screenshot(page, "newcomer-dashboard")
    first = items.first
    prompt = first.locator(".decision-prompt").first.inner_text().strip()
    first.locator(".decision-link a").click()
    page.wait_for_url(re.compile(r"/comparisons/\d+$"))
    assert prompt[:40] in page.locator("#comparison-content").inner_text()
    assert page.locator("#judgments tbody tr").count() >= 1  # the flagged judgment is one of them
    assert re.search(r"[A-D]( [>=] [A-D])+", page.locator("#judgments tbody").inner_text())  # rankings in letters
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Practice").click()
    gold = page.locator("#items .practice-item")
    assert gold.count() >= 1
    for i in range(gold.count()):
        item = gold.nth(i)
        assert re.fullmatch(r"[A-D]( [>=] [A-D])+", item.locator(".expected-ranking").inner_text().strip())
        assert item.locator(".decision-prompt").first.inner_text().strip() and item.locator(".decision-answer").count() >= 2
    assert "[[" not in page.locator("#items").inner_text()  # no raw completion ids
    screenshot(page, "newcomer-practice")


def test_job_model_and_dataset_pages_fit_and_lead_to_training(admin_page):
    page = admin_page
    page.goto("/jobs")
    page.locator("#job-table tbody tr", has_text="reward").locator("a").first.click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    settle(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280, width
    assert "succeeded succeeded" not in page.locator("#job-status").inner_text()
    chosen = page.locator("#job-params-set").inner_text()
    assert "max_length=" in chosen, chosen  # the demo's job set it: what ran, not Params: {}
    page.locator("#job-params summary").click()
    assert page.locator("#job-params tbody tr").count() >= 10  # every parameter it ran with, defaults included
    screenshot(page, "newcomer-job")
    page.get_by_role("link", name=re.compile(r"^#\d+$")).first.click()  # the dataset: its page, not API JSON
    page.wait_for_url(re.compile(r"/datasets/\d+$"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.locator("#train-on-snapshot a").first.click()
    page.wait_for_url(re.compile(r"/train\?kind=\w+&dataset_id=\d+$"))
    dataset_id = page.url.rsplit("=", 1)[1]
    assert page.locator("select[name=dataset_id]").input_value() == dataset_id
    page.locator("#more-params summary").click()
    assert page.locator("input[name=param_max_length]").is_visible()  # the parameter the job's warning names
    page.goto("/models")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    trained = page.locator("table tbody tr", has=page.locator("a[href^='/jobs/']")).first
    assert re.search(r"accuracy \d\.\d+", trained.locator("td.held-out").inner_text())
    screenshot(page, "newcomer-models")


def test_a_wrong_import_format_is_named_and_the_suggested_one_imports(admin_page, tmp_path):
    page = admin_page
    oasst = tmp_path / "oasst.jsonl"
    trees = [{"message_tree_id": f"nc-{i}", "prompt": {
        "message_id": f"nc-p{i}", "role": "prompter", "text": f"Newcomer question {i}?",
        "replies": [{"message_id": f"nc-a{i}", "role": "assistant", "text": "Yes.", "rank": 0},
                    {"message_id": f"nc-b{i}", "role": "assistant", "text": "No.", "rank": 1}]}} for i in range(30)]  # fmt: skip
    oasst.write_text("".join(json.dumps(tree) + "\n" for tree in trees))  # an Open-Assistant export, 30 trees
    page.goto("/projects/demo")
    page.set_input_files("#import-form input[type=file]", str(oasst))
    page.select_option("#import-form select[name=format]", "native")
    page.click("#import-form button[type=submit]")
    hint = page.locator("#import-format-hint")
    hint.wait_for()
    assert "oasst" in hint.inner_text()
    assert page.locator("#import-result .line-errors li").count() < 30  # one entry a message, not one a line
    screenshot(page, "newcomer-import-hint")
    page.select_option("#import-form select[name=format]", "oasst")
    page.click("#import-form button[type=submit]")
    page.locator("#import-result .flash-success").wait_for()


def test_the_new_user_form_starts_at_the_least_privileged_role(admin_page):
    page = admin_page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    form = page.locator("#create-user-form")
    assert form.locator("select[name=role]").input_value() == "annotator"
    form.locator("input[name=username]").fill("newcomer-default")
    form.locator("input[name=password]").fill("newcomer-pass-1")
    form.locator("button[type=submit]").click()
    page.wait_for_load_state()
    row = page.locator("tr", has_text="newcomer-default")
    assert row.locator("select").input_value() == "annotator"
    screenshot(page, "newcomer-users")
