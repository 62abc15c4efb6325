"""The rating page in a real browser: keyboard judging, in-place task swaps, escaping, skip, help overlay."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from tests.e2e.conftest import login, screenshot
from tests.helpers import import_lines, make_project

pytestmark = pytest.mark.e2e

SCRIPT_TEXT = "<script>alert(1)</script>"
IMG_TEXT = "<img src=x onerror=alert(1)>"


def jsonl(rows: list[dict]) -> bytes:
    return ("\n".join(json.dumps(row) for row in rows) + "\n").encode()


def seed(api, admin, rows: list[dict], **project) -> dict:
    created = make_project(api, admin, **project)
    response = import_lines(api, admin, created["id"], jsonl(rows))
    assert response.status_code == 200, response.text
    return created


def task_on_screen(page) -> dict:
    """The task the page shows: assignment id (from the form's action) and options in display order."""
    form = page.locator("#judgment-form")
    action = form.get_attribute("action")
    options = [
        {"id": int(option.get_attribute("data-option-id")), "label": option.get_attribute("data-label"),
         "text": option.locator(".completion").inner_text().strip()}
        for option in page.locator("#judgment-form .option").all()
    ]  # fmt: skip
    assert json.loads(form.get_attribute("data-option-ids")) == [option["id"] for option in options]
    return {
        "action": action,
        "assignment_id": int(re.search(r"/annotate/(\d+)$", action)[1]),
        "options": options,
    }


def wait_for_next_task(page, previous_action: str) -> None:
    """Waits until htmx has swapped in another task (or the empty queue)."""
    page.wait_for_function(
        """(previous) => {
            const form = document.getElementById("judgment-form");
            return document.querySelector(".empty-queue") || (form && form.getAttribute("action") !== previous);
        }""",
        arg=previous_action,
    )


def judgments_by_assignment(db_url, assignment_ids: list[int]) -> dict[int, list]:
    from app.db import session_scope
    from app.models import Judgment

    with session_scope(db_url) as session:
        rows = session.scalars(select(Judgment).where(Judgment.assignment_id.in_(assignment_ids))).all()
        return {row.assignment_id: row.ranking for row in rows}


def as_groups(ranking: list[list[int]]) -> list[list[int]]:
    """Tie groups compared as sets: the order inside a tie carries no meaning."""
    return [sorted(group) for group in ranking]


def test_pairwise_rating_by_keyboard(page, api, users, db_url, browser_problems):
    admin = users.create("admin1", "admin")
    rater = users.create("rater1", "annotator")
    rows = [{"prompt": "Show me some HTML.", "external_id": "xss",
             "completions": [{"text": SCRIPT_TEXT, "model": "m1"}, {"text": IMG_TEXT, "model": "m2"}]}]  # fmt: skip
    rows += [{"prompt": f"Question {i}?", "external_id": f"q{i}",
              "completions": [{"text": f"first answer {i}", "model": "m1"}, {"text": f"second answer {i}", "model": "m2"}]}
             for i in range(3)]  # fmt: skip
    project = seed(api, admin, rows, name="Pairwise e2e", mode="pairwise", allow_ties=True)

    login(page, rater, next_path=f"/projects/{project['id']}/annotate")
    assert page.url.endswith(f"/projects/{project['id']}/annotate")
    page.wait_for_selector("#judgment-form[data-mode=pairwise]")
    screenshot(page, "rating-pairwise")

    # The ? overlay lists the shortcuts; Esc closes it.
    page.keyboard.press("?")
    help_dialog = page.locator("dialog#keys-help")
    assert help_dialog.is_visible()
    assert "Tie" in help_dialog.inner_text()
    screenshot(page, "rating-keys-help")
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog#keys-help", state="hidden")

    # A full page load would wipe this; an htmx swap keeps it.
    page.evaluate("window.rankforgeMarker = 'still the same page'")
    loads = []
    page.on("load", lambda _: loads.append(page.url))

    expected: dict[int, list[list[int]]] = {}
    texts_seen: list[str] = []
    for key in ["1", "2", "t"]:
        task = task_on_screen(page)
        first, second = (option["id"] for option in task["options"])
        expected[task["assignment_id"]] = {
            "1": [[first], [second]],
            "2": [[second], [first]],
            "t": [[first, second]],
        }[key]
        texts_seen += [option["text"] for option in task["options"]]
        # Model text is shown as text: no element it names exists in the page.
        assert page.locator("#task-area img, #task-area .completion script").count() == 0

        page.keyboard.press(key)
        screenshot(page, f"rating-pairwise-pressed-{key}")
        wait_for_next_task(page, task["action"])
        assert page.evaluate("window.rankforgeMarker") == "still the same page"
        assert page.locator("#task-area .flash-ok").inner_text() == "Saved."

    assert loads == []
    assert SCRIPT_TEXT in texts_seen and IMG_TEXT in texts_seen
    assert page.evaluate("typeof window.rankforgeMarker") == "string"

    # S opens the reasons, the arrow picks one, Enter skips: the queue is then empty.
    skipped = task_on_screen(page)
    page.keyboard.press("s")
    assert page.locator("#skip-panel").is_visible()
    assert page.evaluate("document.activeElement.id") == "skip-reason"
    page.keyboard.press("ArrowDown")
    screenshot(page, "rating-skip-panel")
    page.keyboard.press("Enter")
    page.wait_for_selector(".empty-queue")
    screenshot(page, "rating-empty-queue")
    assert page.locator("#task-area .flash-ok").inner_text() == "Skipped."
    assert page.evaluate("window.rankforgeMarker") == "still the same page"
    assert browser_problems == []

    saved = judgments_by_assignment(db_url, list(expected))
    assert {aid: as_groups(ranking) for aid, ranking in saved.items()} == {
        aid: as_groups(ranking) for aid, ranking in expected.items()
    }
    from app.db import session_scope
    from app.models import Assignment, Judgment

    with session_scope(db_url) as session:
        assignment = session.get(Assignment, skipped["assignment_id"])
        assert (assignment.state, assignment.skip_reason) == ("skipped", "needs expertise")
        assert (
            session.scalar(select(Judgment).where(Judgment.assignment_id == skipped["assignment_id"])) is None
        )


def test_rank_mode_by_keyboard_with_undo(page, api, users, db_url, browser_problems):
    admin = users.create("admin1", "admin")
    rater = users.create("rater1", "annotator")
    row = {"prompt": [{"role": "user", "content": "Name a **prime** number."}], "external_id": "primes",
           "completions": [{"text": f"Answer number {i}: `{p}`", "model": f"m{i}"} for i, p in enumerate([2, 4, 7, 9])]}  # fmt: skip
    project = seed(api, admin, [row], name="Rank e2e", mode="rank", allow_ties=True)

    login(page, rater, next_path=f"/projects/{project['id']}/annotate")
    page.wait_for_selector("#judgment-form[data-mode=rank]")
    task = task_on_screen(page)
    assert [option["label"] for option in task["options"]] == ["A", "B", "C", "D"]
    id_of = {option["label"]: option["id"] for option in task["options"]}
    key_of = {option["label"]: str(position) for position, option in enumerate(task["options"], start=1)}
    order = page.locator("#rank-order .rank-group")

    pressed = ["C", "A", "D", "B"]
    for label in pressed:
        page.keyboard.press(key_of[label])
    chips = page.locator("#rank-order .rank-chip")
    assert order.count() == 4
    assert chips.evaluate_all("els => els.map(el => el.dataset.optionId)") == [
        str(id_of[label]) for label in pressed
    ]
    screenshot(page, "rating-rank")

    page.keyboard.press("Backspace")  # takes B out again
    assert order.count() == 3
    assert page.locator("#rank-unranked").inner_text().startswith("B")
    assert json.loads(page.locator("#ranking-input").input_value()) == [
        [id_of[label]] for label in pressed[:3]
    ]

    page.keyboard.press(key_of["B"])
    assert order.count() == 4
    page.keyboard.press("Enter")
    page.wait_for_selector(".empty-queue")
    assert browser_problems == []

    saved = judgments_by_assignment(db_url, [task["assignment_id"]])
    assert saved == {task["assignment_id"]: [[id_of[label]] for label in pressed]}
