"""The admin pages in a real browser: create a project through the form, import files through the project page."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from tests.e2e.conftest import login, screenshot
from tests.helpers import native_lines

pytestmark = pytest.mark.e2e


def project_state(db_url, project_id: int) -> dict:
    from app.db import session_scope
    from app.models import Comparison, Project, Prompt

    with session_scope(db_url) as session:
        project = session.get(Project, project_id)
        count = session.scalar(
            select(func.count()).select_from(Comparison).where(Comparison.project_id == project_id)
        )
        external_ids = session.scalars(
            select(Prompt.external_id).where(Prompt.project_id == project_id)
        ).all()
        return {"name": project.name, "mode": project.mode, "overlap": project.overlap, "allow_ties": project.allow_ties,
                "attributes": [(a["name"], a["min"], a["max"]) for a in project.attributes],
                "gold_rate": project.gold_rate, "comparisons": count, "external_ids": sorted(external_ids)}  # fmt: skip


def submit_import(page, path, fmt: str = "native") -> None:
    before = page.locator("#import-result").evaluate("el => el.outerHTML")
    page.set_input_files("#import-form input[name=file]", str(path))
    page.select_option("#import-form select[name=format]", fmt)
    page.click("#import-form button[type=submit]")
    # htmx replaces #import-result with the answer (outerHTML swap).
    page.wait_for_function(
        "(before) => document.getElementById('import-result').outerHTML !== before", arg=before
    )


def test_admin_creates_a_project_and_imports_files(page, users, db_url, tmp_path, browser_problems):
    admin = users.create("admin1", "admin")
    login(page, admin)
    page.goto("/projects/new")
    form = page.locator("#new-project-form")
    form.locator("input[name=name]").fill("Browser-made project")
    form.locator("textarea[name=guidelines]").fill("# Be kind\nPrefer **correct** answers.")
    form.locator("input[name=mode][value=rank]").check()
    form.locator("input[name=overlap]").fill("2")
    form.locator("input[name=attributes]").fill("helpful 1-7, harmless 1-5")
    form.locator("input[name=gold_rate]").fill("0.1")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    project_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    assert page.locator(".page-header h1").inner_text().startswith("Browser-made project")
    assert page.locator(".markdown strong").inner_text() == "correct"  # the guidelines render as markdown
    assert project_state(db_url, project_id) | {"comparisons": None, "external_ids": None} == {
        "name": "Browser-made project", "mode": "rank", "overlap": 2, "allow_ties": True,
        "attributes": [("helpful", 1, 7), ("harmless", 1, 5)], "gold_rate": 0.1, "comparisons": None,
        "external_ids": None,
    }  # fmt: skip

    good = tmp_path / "good.jsonl"
    good.write_bytes(native_lines(3, k=3, prefix="ok"))
    submit_import(page, good)
    success = page.locator("#import-result .flash-success")
    assert success.is_visible()
    assert "Imported 3 records: 3 new comparisons" in success.inner_text()
    screenshot(page, "admin-import-ok")
    assert project_state(db_url, project_id)["comparisons"] == 3

    # One bad line rejects the whole file: line 1 and 4 are fine, 2 is not JSON, 3 has one completion.
    valid_row = {"prompt": "Fine?", "completions": [{"text": "yes"}, {"text": "no"}], "external_id": "new-1"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([
        json.dumps(valid_row),
        '{"prompt": "broken", "completions": [',
        json.dumps({"prompt": "Only one?", "completions": [{"text": "alone"}], "external_id": "new-2"}),
        json.dumps(valid_row | {"external_id": "new-3"}),
    ]) + "\n")  # fmt: skip
    submit_import(page, bad)
    result = page.locator("#import-result")
    assert result.locator(".flash-error").is_visible()
    assert "Nothing was imported" in result.locator(".flash-error").inner_text()
    errors = result.locator(".line-errors li").all_inner_texts()
    assert [text.split(":")[0] for text in errors] == ["Line 2", "Line 3"], errors
    screenshot(page, "admin-import-errors")
    state = project_state(db_url, project_id)
    assert state["comparisons"] == 3
    assert state["external_ids"] == ["ok0", "ok1", "ok2"]
    assert browser_problems == []
