"""Issue 24 in a real browser: a rater reaches the step-labelling page by clicking, labels every step of a trajectory
with the keyboard only (j/k, 1/2/3, e, tag keys, Enter; a double Enter stores one set), then rewrites a step, which
starts a branch that is labelled too; everything checked through the API."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.conftest import SCREENSHOT_DIR, login, screenshot
from tests.helpers import import_lines, make_project
from tests.steps.trajectories import trajectory_file

pytestmark = pytest.mark.e2e


def test_label_steps_by_keyboard_and_branch(page, api, users, browser_problems):
    admin, rater = users.create("admin1", "admin"), users.create("rater1", "annotator")
    project = make_project(api, admin, name="Agent steps")
    assert import_lines(api, admin, project["id"], trajectory_file(["trip"], n_steps=4), "openai-chat").status_code == 200
    base = f"/api/v1/projects/{project['id']}"

    login(page, rater, next_path=f"/projects/{project['slug']}/annotate")
    page.click("nav.project-nav a:text-is('Steps')")
    # The annotate page shows both candidate trajectories as li.step too (8 of them): wait for the Steps page itself,
    # not for the first li.step, which the page being left may still show.
    # loaded: the DOM is the Steps page's. A wait limit, not a timing check: 10 s ran out once with three test
    # processes on the two cores
    page.wait_for_url(re.compile(rf"/projects/{project['slug']}/steps"), timeout=30_000)
    page.wait_for_selector("li.step")
    assert page.locator("li.step").count() == 4
    assert "<b>now</b>" in page.inner_text(".steps-history")  # untrusted text stays text
    completion_id = int(page.locator("#labels-form").get_attribute("action").rsplit("/", 1)[1])
    screenshot(page, "steps-label-start")

    # keyboard only: step 1 good; step 2 neutral + tag 2 (key 5); step 3 first error + tag 1 (key 4); step 4 is then
    # after the error and needs no label
    for key in ("1", "j", "3", "5", "j", "e", "4"):
        page.keyboard.press(key)
    assert page.locator("li.step").nth(3).get_attribute("class").find("after-error") >= 0
    assert page.inner_text("#steps-progress") == "ready to submit"
    screenshot(page, "steps-label-filled")
    if SCREENSHOT_DIR:  # what the rater sees at 1280 px: the current step above the sticky bar
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / "steps-label-viewport.png"))
    box, bar = page.locator("li.step.is-current").bounding_box(), page.locator("#steps-bar").bounding_box()
    assert box["y"] + box["height"] <= bar["y"] + 1  # the current step (step 3) is not under the bar
    with page.expect_navigation():
        page.keyboard.press("Enter")
        page.keyboard.press("Enter")  # a second Enter while the first submit leaves: ignored
    assert "Saved." in page.inner_text("main")

    labels = api.get(f"{base}/step-labels", headers=admin["headers"]).json()["step_labels"]
    assert len(labels) == 1
    mine = labels[0]
    assert mine["completion_id"] == completion_id and mine["rater"] == "rater1" and mine["first_error"] == 2
    assert [entry["label"] for entry in mine["labels"]] == ["good", "neutral", "bad", None]
    # (not /steps/next: the other trajectory is leased to rater1 now, whose page shows it)
    tags = api.get(f"{base}/trajectories/{completion_id}", headers=admin["headers"]).json()["tags"]
    assert mine["labels"][1]["tags"] == [tags[1]] and mine["labels"][2]["tags"] == [tags[0]]

    # the next trajectory: rewrite its second step by keyboard (j, r, type, Tab to the button, Enter): a branch
    page.wait_for_selector("li.step")
    other = int(page.locator("#labels-form").get_attribute("action").rsplit("/", 1)[1])
    assert other != completion_id
    page.keyboard.press("j")
    page.keyboard.press("r")
    assert page.evaluate("document.activeElement.name") == "content"
    page.keyboard.press("Control+a")
    page.keyboard.type("Use the forecast tool for Paris instead.")
    page.keyboard.press("Tab")  # the tool calls box
    page.keyboard.press("Control+a")
    page.keyboard.type('[{"function": {"name": "get_forecast", "arguments": {"city": "Paris"}}}]')
    page.keyboard.press("Tab")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_selector("#branch-note")
    assert page.locator("li.step").count() == 2
    branch_id = int(page.locator("#labels-form").get_attribute("action").rsplit("/", 1)[1])
    screenshot(page, "steps-branch")
    for key in ("1", "j", "1"):
        page.keyboard.press(key)
    with page.expect_navigation():
        page.keyboard.press("Enter")

    branch = api.get(f"{base}/trajectories/{branch_id}", headers=admin["headers"]).json()
    assert branch["parent_id"] == other and branch["branch"] == {"from": other, "step": 1}
    assert branch["steps"][1]["content"] == "Use the forecast tool for Paris instead."
    assert branch["steps"][1]["tool_calls"][0]["function"] == {"name": "get_forecast", "arguments": {"city": "Paris"}}
    assert [j["labels"] for j in branch["step_labels"]] == [[{"label": "good", "tags": []}] * 2]
