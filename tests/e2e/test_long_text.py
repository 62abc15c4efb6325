"""Pathological texts never block the rating page (issue 10, point 5), in real Chromium.

A 1 MiB completion of one character, a 1 MiB line of one word, deeply nested markdown, and the same in the
prompt and the guidelines: the page loads fast, long texts are clipped with a "show all", unbroken runs
stay inside their box, and the rater can always skip.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import login
from tests.helpers import import_lines, make_project

pytestmark = pytest.mark.e2e

MiB = 1_000_000
NESTED = "> " * 3000 + "deep quote\n\n" + "".join("  " * i + "- item\n" for i in range(400)) + "[" * 50_000


def seed(api, admin, row: dict, **project) -> dict:
    created = make_project(api, admin, **project)
    response = import_lines(api, admin, created["id"], (json.dumps(row) + "\n").encode())
    assert response.status_code == 200, response.text
    return created


def open_task(page, rater, project) -> float:
    """Log in and open the rating page; seconds until the task is on screen and the page answers."""
    started = time.monotonic()
    login(page, rater, next_path=f"/projects/{project['id']}/annotate")
    page.wait_for_selector("#judgment-form .option", timeout=15_000)
    page.evaluate("() => document.body.offsetHeight")  # layout done, main thread free
    return time.monotonic() - started


def assert_fits(page) -> None:
    """Nothing is wider than the window: unbroken runs wrap (or scroll inside their own box)."""
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"] + 1, width


CASES = {
    "one character, 1 MiB": "A" * MiB,
    "one word line, 1 MiB": "supercalifragilistic" * (MiB // 20),
    "nested markdown": NESTED,
}


@pytest.mark.parametrize("case", CASES)
def test_a_pathological_completion_renders_and_can_be_skipped(page, api, users, case):
    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    project = seed(api, admin, {"prompt": "Say something.", "completions": [{"text": CASES[case]}, {"text": "Fine."}]})
    seconds = open_task(page, rater, project)
    assert seconds < 8, f"the rating page took {seconds:.1f} s"
    assert_fits(page)
    clipped = page.locator(".clipped")
    if case != "nested markdown":
        assert clipped.count() == 1
        shown = len(page.locator(".clipped .completion").inner_text())
        assert shown < 50_000
        page.locator(".clipped [data-action=show-all]").click()
        page.wait_for_function("() => document.querySelector('.full-text') !== null")
        page.evaluate("() => document.body.offsetHeight")
        assert len(page.locator(".full-text").inner_text()) >= MiB - 10
        assert_fits(page)
    # Skipping always works, by keyboard.
    page.keyboard.press("s")
    page.keyboard.press("Enter")
    page.wait_for_selector(".empty-queue", timeout=10_000)


def test_a_pathological_prompt_and_guidelines_render(page, api, users):
    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    project = seed(api, admin, {"prompt": [{"role": "user", "content": "B" * MiB}],
                                "completions": [{"text": "one"}, {"text": "two"}]},
                   guidelines="G" * MiB)  # fmt: skip
    seconds = open_task(page, rater, project)
    assert seconds < 8, f"the rating page took {seconds:.1f} s"
    assert_fits(page)
    assert page.locator(".prompt .clipped").count() == 1
    page.keyboard.press("s")
    page.keyboard.press("Enter")
    page.wait_for_selector(".empty-queue", timeout=10_000)


def test_rewriting_a_pathological_completion_keeps_the_page_responsive(page, api, users):
    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    project = seed(api, admin, {"prompt": "Say something.", "completions": [{"text": "A" * MiB}, {"text": "Fine."}]})
    open_task(page, rater, project)
    assert page.locator("#edit-panel").count() == 1  # the rating page's rewrite panel (edits are on by default)
    long_id = page.locator(".option", has=page.locator(".clipped")).get_attribute("data-option-id")
    label = page.locator(f".option[data-option-id='{long_id}']").get_attribute("data-label")
    started = time.monotonic()
    page.keyboard.press("e")  # then the response to rewrite: it becomes the better one and the box opens
    page.keyboard.press("1" if label == "A" else "2")
    page.wait_for_function("() => !document.getElementById('edit-panel').hidden", timeout=15_000)
    page.wait_for_function("() => document.getElementById('edit-text').value.length > 1000", timeout=15_000)
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => done(document.body.offsetHeight)))")
    seconds = time.monotonic() - started
    assert seconds < 8, f"opening the rewrite box took {seconds:.1f} s"
    page.keyboard.press("Escape")
    page.locator("[data-action=discard-edit]").click()
    page.keyboard.press("s")
    page.keyboard.press("Enter")
    page.wait_for_selector(".empty-queue", timeout=10_000)
