"""An admin sets up an AI judge in a real browser (add a judge, set the AI policy, start a judge job), sees its
agreement with the humans and the calibration chart; a rater confirms an AI label in the review queue."""

from __future__ import annotations

import json

import pytest

from app.worker import run_one
from tests.e2e.conftest import login, screenshot
from tests.judges.test_judges import math_rows

pytestmark = pytest.mark.e2e


def test_admin_sets_up_a_judge_and_a_rater_reviews_its_labels(page, users, api, browser):
    admin = users.create("admin1", "admin")
    rater = users.create("rater1", "annotator")
    project_id = api.post("/api/v1/projects", json={"name": "Sums", "mode": "pairwise", "overlap": 1},
                          headers=admin["headers"]).json()["id"]  # fmt: skip
    body = ("\n".join(json.dumps(r) for r in math_rows(6)) + "\n").encode()
    assert api.post(f"/api/v1/projects/{project_id}/import", params={"format": "native"}, content=body,
                    headers=admin["headers"] | {"Content-Type": "application/x-ndjson"}).status_code == 200  # fmt: skip
    for _ in range(6):  # a truthful rater: the answer holding 2i first
        task = api.get(f"/api/v1/projects/{project_id}/tasks/next", headers=rater["headers"]).json()
        i = int(task["prompt"].split()[2])
        best = next(o["id"] for o in task["options"] if o["text"].endswith(str(2 * i)))
        ranking = [[best], [o["id"] for o in task["options"] if o["id"] != best]]
        api.post(f"/api/v1/assignments/{task['assignment_id']}/judgment", json={"ranking": ranking},
                 headers=rater["headers"])  # fmt: skip

    login(page, admin)
    page.goto(f"/projects/{project_id}/dashboard")
    page.get_by_role("navigation", name="Project").get_by_role("link", name="Judges").click()
    page.wait_for_url("**/judges")
    assert page.locator("#chart-calibration [data-chart=empty]").is_visible()
    form = page.locator(f"form[action='/projects/{project_id}/judges/new']")
    form.locator("input[name=name]").fill("reference-rules")
    form.locator("select[name=method]").select_option("rules")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    policy = page.locator(f"form[action='/projects/{project_id}/judges/policy']")
    policy.locator("select[name=policy]").select_option("shadow")
    with page.expect_navigation():
        policy.locator("button[type=submit]").click()
    assert page.locator("#current-policy").inner_text() == "shadow"
    run = page.locator(f"form[action='/projects/{project_id}/judges/run']")
    run.locator("select[name=scope]").select_option("judged")
    with page.expect_navigation():
        run.locator("button[type=submit]").click()
    assert "/jobs/" in page.url
    assert run_one("e2e") is not None
    page.goto(f"/projects/{project_id}/judges")
    row = page.locator("#judge-agreement tbody tr").first
    assert "reference-rules" in row.inner_text() and "1.000" in row.inner_text()
    assert page.locator("#chart-calibration svg").count() == 1
    screenshot(page, "judges")

    context = browser.new_context(base_url=page.url.split("/projects")[0])
    tab = context.new_page()
    login(tab, rater)
    tab.goto(f"/projects/{project_id}/ai-review")
    items = tab.locator(".review-item")
    assert items.count() == 6 and "AI's choice" in items.first.inner_text()
    with tab.expect_navigation():
        items.first.locator("button[value=confirm]").click()
    assert tab.locator(".review-item").count() == 5
    context.close()
