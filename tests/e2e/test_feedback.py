"""Issue 14 in a real browser: a rewrite through the rating page (E, edit, diff, submit) becomes a completion and
its pairs; active time leaves out an idle gap."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests.e2e.conftest import login, screenshot
from tests.helpers import import_lines, make_project

pytestmark = pytest.mark.e2e


def _seed(api, admin, n, **project):
    created = make_project(api, admin, **project)
    rows = [{"prompt": f"Question {i}?", "external_id": f"q{i}",
             "completions": [{"text": f"first answer {i}\nsecond line", "model": "m1"},
                             {"text": f"other answer {i}\n\n- a list item", "model": "m2"}]} for i in range(n)]  # fmt: skip
    body = ("\n".join(json.dumps(row) for row in rows) + "\n").encode()
    assert import_lines(api, admin, created["id"], body).status_code == 200
    return created


def _rows(db_url, model, *where):
    from app.db import session_scope

    with session_scope(db_url) as session:
        return [dict(vars(row)) for row in session.scalars(select(model).where(*where)).all()]


def test_rewrite_the_best_response_with_the_keyboard(page, api, users, db_url, browser_problems):
    from app.models import Completion, Judgment

    admin, rater = users.create("admin1", "admin"), users.create("rater1", "annotator")
    project = _seed(api, admin, 2, name="Edits e2e", mode="pairwise")
    login(page, rater, next_path=f"/projects/{project['id']}/annotate")
    page.wait_for_selector("#judgment-form[data-mode=pairwise]")
    form = page.locator("#judgment-form")
    action = form.get_attribute("action")
    # Display order is shuffled per assignment: rewrite the answer with the markdown list, wherever it is shown.
    options = page.locator("#judgment-form .option")
    pick = next(i for i in range(2) if "a list item" in options.nth(i).inner_text())
    second = int(options.nth(pick).get_attribute("data-option-id"))

    # E first asks which response; its number chooses it (it becomes the better one) and opens the box with its
    # markdown, without submitting.
    page.keyboard.press("e")
    assert "Press 1 or 2" in page.locator("#judgment-message").inner_text()
    page.keyboard.press(str(pick + 1))
    page.wait_for_selector("#edit-panel:not([hidden])")
    page.wait_for_function("() => document.getElementById('edit-text').value.includes('- a list item')",
                           timeout=30_000)  # fmt: skip
    assert page.evaluate("document.activeElement.id") == "edit-text"
    assert form.get_attribute("action") == action  # nothing was sent
    # Typing in the box never triggers shortcuts; the diff follows the text.
    page.keyboard.press("Control+End")
    page.keyboard.type(" (fixed)\n1 2 t x s <b>bold</b>")
    page.wait_for_function("() => document.querySelector('#edit-diff ins') !== null")
    assert "<b>bold</b>" in page.locator("#edit-diff").inner_text()  # shown as text
    assert page.locator("#edit-diff b").count() == 0
    screenshot(page, "rating-rewrite")
    page.keyboard.press("Control+Enter")
    page.wait_for_function(
        "(previous) => { const f = document.getElementById('judgment-form');"
        " return document.querySelector('.empty-queue') || (f && f.getAttribute('action') !== previous); }",
        arg=action,
    )
    assert page.locator("#task-area .flash-ok").inner_text() == "Saved."
    assert page.locator("#edit-panel").is_hidden()  # the next task starts without a rewrite

    [judgment] = _rows(db_url, Judgment)
    assert judgment["ranking"][0] == [second]
    [edit] = _rows(db_url, Completion, Completion.source == "human_edit")
    assert edit["parent_id"] == second and edit["author_id"] == rater["id"]
    assert edit["text"].startswith("other answer") and edit["text"].endswith("(fixed)\n1 2 t x s <b>bold</b>")
    assert browser_problems == []


def test_active_time_leaves_out_an_idle_gap(page, api, users, db_url, browser_problems):
    from app.models import Judgment

    admin, rater = users.create("admin1", "admin"), users.create("rater1", "annotator")
    project = _seed(api, admin, 2, name="Time e2e", mode="pairwise")
    page.clock.install()
    login(page, rater, next_path=f"/projects/{project['id']}/annotate")
    page.wait_for_selector("#judgment-form[data-mode=pairwise]")
    # Six interactions 30 s apart (3 minutes active), then 10 idle minutes, then the verdict.
    for _ in range(6):
        page.clock.fast_forward("00:30")
        page.mouse.move(100, 200)
        page.mouse.move(300, 400)
    page.clock.fast_forward("10:00")
    action = page.locator("#judgment-form").get_attribute("action")
    page.keyboard.press("1")
    page.wait_for_function("(previous) => document.getElementById('judgment-form')?.getAttribute('action') !== previous",
                           arg=action)  # fmt: skip
    [judgment] = _rows(db_url, Judgment)
    assert judgment["time_spent_ms"] >= 780_000  # wall time: 13 minutes
    assert 170_000 <= judgment["active_ms"] <= 190_000, judgment["active_ms"]  # the idle 10 minutes do not count
    assert browser_problems == []


def test_practice_item_with_feedback_then_real_work(page, api, users, db_url, browser_problems):
    admin, rater = users.create("admin1", "admin"), users.create("rater1", "annotator")
    project = _seed(api, admin, 1, name="Practice e2e", mode="pairwise", practice_required=1, practice_pass_rate=0.5)
    gold = {"prompt": "Gold question?", "external_id": "g1", "ranking": [[0], [1]],
            "completions": [{"text": "the right answer", "model": "m1"}, {"text": "a wrong answer", "model": "m2"}]}  # fmt: skip
    assert import_lines(api, admin, project["id"], (json.dumps(gold) + "\n").encode(), gold="true").status_code == 200
    from app.models import Comparison

    [item] = _rows(db_url, Comparison, Comparison.is_gold)
    marked = api.post(f"/projects/{project['id']}/practice-items/{item['id']}", headers=admin["headers"],
                      data={"explanation": "The first one *answers* the question."})  # fmt: skip
    assert marked.status_code in (200, 303)

    login(page, rater, next_path=f"/projects/{project['id']}/annotate")
    page.wait_for_selector(".practice-badge")
    assert "Gold question?" in page.locator(".prompt").inner_text()
    options = page.locator("#judgment-form .option")
    right_label = next(options.nth(i).get_attribute("data-label") for i in range(2)
                       if "right answer" in options.nth(i).inner_text())  # fmt: skip
    page.keyboard.press("1" if right_label == "A" else "2")
    page.wait_for_selector("#practice-feedback")
    assert page.locator("#practice-expected").inner_text().startswith(right_label)
    assert page.locator(".practice-explanation em").inner_text() == "answers"
    screenshot(page, "practice-feedback")
    page.locator("#practice-continue").click()
    page.wait_for_function("() => { const f = document.getElementById('judgment-form');"
                           " return f && !f.getAttribute('action').includes('/practice/'); }")  # fmt: skip
    assert "Question 0?" in page.locator(".prompt").inner_text()
    assert page.locator(".practice-badge").count() == 0
    assert browser_problems == []
