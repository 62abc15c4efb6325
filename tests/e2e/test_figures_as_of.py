"""The dashboard says when its figures were computed (issue 25: large projects show the worker's cached figures)."""

from __future__ import annotations

import pytest

from app.db import session_scope
from tests.e2e.conftest import login, screenshot
from tests.quality.builders import add_judgment, comparisons, import_battles

pytestmark = pytest.mark.e2e


def test_dashboard_shows_as_of(page, users, db_url, api, live_server):
    admin = users.create("admin1", "admin")
    rater = users.create("rater1", "annotator")
    project_id = api.post("/api/v1/projects", json={"name": "Scale", "mode": "pairwise", "overlap": 1},
                          headers=admin["headers"]).json()["id"]  # fmt: skip

    class Api:
        post = staticmethod(api.post)

    import_battles(Api, admin, project_id, [("big-model", "small-model")] * 4)
    with session_scope(db_url) as session:
        for comparison, options in comparisons(session, project_id):
            add_judgment(session, comparison, rater["id"], [[options[0][0]], [options[1][0]]])
    login(page, admin)
    page.goto(f"/projects/{project_id}/dashboard")
    as_of = page.locator("#figures-as-of")
    assert as_of.is_visible() and as_of.inner_text().startswith("Figures as of 20")
    screenshot(page, "issue-25-dashboard-as-of")
