"""An admin opens the rounds page after a round: the table of rounds and the win-rate chart are there, and
"Start next round" starts one (its generate job queued, the page showing it generating)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.e2e.conftest import login, screenshot
from tests.helpers import import_lines, make_project, native_lines

pytestmark = pytest.mark.e2e

METRICS = {"win_rate": 0.7, "win_rate_ci": [0.55, 0.82], "battles": 40, "reward_accuracy": 0.8, "reward_verdicts": 30,
           "kl": 0.31, "score_mean": 1.2, "judgments": 64, "eval_judgments": 40, "prompts": 8, "comparisons": 16,
           "comparisons_complete": 16, "eval_comparisons": 40, "pairs_trained": 60, "policy_train_loss": 0.5}  # fmt: skip


def test_rounds_page_shows_the_rounds_and_starts_the_next_one(page, api, users):
    from sqlalchemy import select

    from app.db import session_scope
    from app.models import ModelVersion, Prompt, Round, utcnow

    admin = users.create("root", "admin")
    project = make_project(api, admin, name="Loop", slug="loop")
    assert import_lines(api, admin, project["id"], native_lines(30)).status_code == 200
    with session_scope(write=True) as db:  # a finished round (its jobs ran elsewhere): versions and metrics
        base = ModelVersion(name="base-policy", kind="policy", path="/models/base", project_id=project["id"])
        new = ModelVersion(name="round-1-policy", kind="policy", path="/models/new", project_id=project["id"])
        db.add_all([base, new])
        db.flush()
        prompts = list(db.scalars(select(Prompt.id).where(Prompt.project_id == project["id"]).limit(4)))
        now = utcnow()
        db.add(Round(project_id=project["id"], number=1, status="done", policy_version_id=base.id,
                     new_policy_version_id=new.id, prompt_ids=prompts, metrics=METRICS,
                     started_at=now - timedelta(minutes=30), finished_at=now))  # fmt: skip
    login(page, admin, f"/projects/{project['id']}/rounds")
    page.goto(f"/projects/{project['id']}/rounds")
    row = page.locator("#rounds #round-1")
    assert "done" in row.inner_text() and "0.70 (0.55–0.82)" in row.inner_text()
    assert "base-policy" in row.inner_text() and "round-1-policy" in row.inner_text()
    chart = page.locator("#chart-win-rate svg")
    assert chart.count() == 1 and "Win rate" in chart.get_attribute("aria-label")
    assert page.locator("#chart-win-rate svg .series line").count() >= 1  # the interval of round 1
    screenshot(page, "rounds")
    with page.expect_navigation():
        page.click("#round-start button[type=submit]")
    second = page.locator("#rounds #round-2")
    assert "generating" in second.inner_text() and "generate" in second.inner_text()
    assert "Round 2 is generating" in page.locator("#round-start").inner_text()
    rounds = api.get(f"/api/v1/projects/{project['id']}/rounds", headers=admin["headers"]).json()["rounds"]
    assert [r["status"] for r in rounds] == ["done", "generating"]
    assert rounds[1]["policy_version_id"] == rounds[0]["new_policy_version_id"]
