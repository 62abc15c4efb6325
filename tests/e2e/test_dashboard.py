"""An admin opens the dashboard and the leaderboard in a real browser and resolves a flagged judgment."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.db import session_scope
from tests.e2e.conftest import login, screenshot
from tests.quality.builders import add_judgment, comparisons, import_battles

pytestmark = pytest.mark.e2e


def test_admin_dashboard_leaderboard_and_review(page, users, db_url, api, live_server):
    from app.models import AuditLog, FlagReview

    admin = users.create("admin1", "admin")
    rater = users.create("rater1", "annotator")
    response = api.post("/api/v1/projects", json={"name": "Dash", "mode": "pairwise", "overlap": 1},
                        headers=admin["headers"])  # fmt: skip
    project_id = response.json()["id"]

    class Api:  # import_battles speaks the TestClient interface; httpx has the same methods
        post = staticmethod(api.post)

    import_battles(Api, admin, project_id, [("big-model", "small-model")] * 6)
    with session_scope(db_url) as session:
        for n, (comparison, options) in enumerate(comparisons(session, project_id)):
            big = next(cid for cid, model, _ in options if model == "big-model")
            small = next(cid for cid, model, _ in options if model == "small-model")
            ranking = [[small], [big]] if n == 0 else [[big], [small]]
            add_judgment(session, comparison, rater["id"], ranking, flags=["unsafe"] if n == 0 else [],
                         rationale="contains <script>alert(1)</script>" if n == 0 else None)  # fmt: skip

    login(page, admin)
    page.goto(f"/projects/{project_id}/dashboard")
    for chart in ("chart-per-hour", "chart-per-rater", "chart-time"):
        assert page.locator(f"#{chart} svg").count() == 1, chart
    # One rater: no agreement to measure, and the chart says so instead of drawing blank axes.
    assert page.locator("#chart-agreement svg").count() == 0
    assert page.locator("#chart-agreement [data-chart=empty]").is_visible()
    assert page.locator("#queue-depth").inner_text() == "0"
    screenshot(page, "dashboard")

    page.get_by_role("navigation", name="Project").get_by_role("link", name="Leaderboard").click()
    page.wait_for_url("**/leaderboard")
    rows = page.locator("#leaderboard tbody tr")
    assert rows.count() == 2
    assert "big-model" in rows.nth(0).inner_text()
    assert "83%" in page.locator("#win-rates").inner_text()  # 5 of 6
    screenshot(page, "leaderboard")

    page.goto(f"/projects/{project_id}/dashboard")
    item = page.locator("#reviews .review-item")
    assert item.count() == 1 and "unsafe" in item.inner_text()
    item.locator("select[name=resolution]").select_option("excluded")
    item.locator("input[name=note]").fill("harmful content")
    with page.expect_navigation():
        item.locator("button[type=submit]").click()
    assert page.locator("#reviews-empty").is_visible()
    assert "excluded (harmful content)" in page.locator("#resolved").text_content()  # inside a closed <details>
    with session_scope(db_url) as session:
        review = session.scalar(select(FlagReview))
        assert (review.resolution, review.note, review.resolved_by_id) == ("excluded", "harmful content", admin["id"])
        assert session.scalar(select(AuditLog).where(AuditLog.action == "judgment.review")) is not None
    page.goto(f"/projects/{project_id}/leaderboard")
    assert "100%" in page.locator("#win-rates").inner_text()  # the excluded upset no longer counts
