"""In Chromium: an admin gives raters groups on the users page, then reads the leaderboard's two rankings (raw and
style-controlled, with the style coefficients) and filters it to one rater group."""

from __future__ import annotations

import pytest

from app.db import session_scope
from tests.e2e.conftest import login, screenshot
from tests.quality.builders import add_judgment, comparisons, import_battles

pytestmark = pytest.mark.e2e


@pytest.mark.only_db("sqlite")
def test_leaderboard_rankings_and_group_filter(page, users, db_url, api, live_server):
    admin = users.create("admin1", "admin")
    expert = users.create("expert1", "annotator")
    lay = users.create("lay1", "annotator")
    project_id = api.post("/api/v1/projects", json={"name": "Ranks", "mode": "pairwise", "overlap": 1},
                          headers=admin["headers"]).json()["id"]  # fmt: skip

    class Api:  # import_battles speaks the TestClient interface; httpx has the same methods
        post = staticmethod(api.post)

    # "wordy" writes long markdown answers, "terse" short plain ones; the lay rater always picks the longer one.
    texts = [("Short answer.", "# Heading\n- one\n- two\n**Long** " + "words " * (20 + i)) for i in range(12)]
    import_battles(Api, admin, project_id, [("terse", "wordy")] * 12, texts=texts)
    with session_scope(db_url) as session:
        for n, (comparison, options) in enumerate(comparisons(session, project_id)):
            terse, wordy = (next(cid for cid, model, _ in options if model == m) for m in ("terse", "wordy"))
            rater = expert if n % 2 == 0 else lay
            best = (terse if n % 4 == 0 else wordy) if rater is expert else wordy
            add_judgment(session, comparison, rater["id"], [[best], [wordy if best == terse else terse]])

    login(page, admin)
    page.goto("/admin/users")
    row = page.locator(f"#user-{expert['id']}")
    row.locator("input[name=labels]").fill("expertise=medicine")
    with page.expect_navigation():
        row.get_by_role("button", name="Save").click()
    assert page.locator(f"#user-{expert['id']} input[name=labels]").input_value() == "expertise=medicine"

    page.goto(f"/projects/{project_id}/leaderboard")
    assert page.locator("#leaderboard tbody tr").count() == 2
    assert page.locator("#leaderboard-style-controlled tbody tr").count() == 2
    coefficients = page.locator("#style-coefficients").inner_text()
    assert "length" in coefficients and "headers" not in coefficients  # headers never vary: no coefficient
    screenshot(page, "leaderboard-style")
    page.locator("#group-filter select[name=group]").select_option("expertise=medicine")
    with page.expect_navigation():
        page.locator("#group-filter button[type=submit]").click()
    assert "group=expertise%3Dmedicine" in page.url or "group=expertise=medicine" in page.url
    assert "raters expertise=medicine" in page.locator("h1").inner_text()
    assert "50%" in page.locator("#win-rates").inner_text()  # the expert split 3 to 3
