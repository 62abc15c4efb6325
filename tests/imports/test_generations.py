"""A generate job's output becomes completions of its model version, grouped into comparisons (both databases)."""

from __future__ import annotations

from app.imports.service import add_generations
from app.models import Comparison, Completion, ModelVersion, Prompt
from app.projects.schemas import ProjectCreate
from app.projects.service import create_project


def test_generations_become_pairs_of_the_version_and_nul_is_dropped(db):
    project = create_project(db, ProjectCreate(name="gen", overlap=2), None)
    prompt = Prompt(project_id=project.id, external_id="p1", messages=[{"role": "user", "content": "hi"}])
    db.add(prompt)
    version = ModelVersion(name="pol-1", kind="policy", path="/models/pol-1")
    db.add(version)
    db.flush()
    rows = [{"prompt_id": prompt.id, "completions": [{"text": "a\x00b"}, {"text": "c"}, {"text": "d"}]},
            {"prompt_id": prompt.id + 999, "completions": [{"text": "someone else's prompt"}]}]  # fmt: skip
    result = add_generations(db, project, version, rows, job_id=7)
    db.flush()
    texts = [c.text for c in db.query(Completion).order_by(Completion.id)]
    assert texts == ["ab", "c", "d"]  # NUL dropped (PostgreSQL refuses it); the unknown prompt ignored
    comparisons = db.query(Comparison).all()
    assert [c.completion_ids for c in comparisons] == [result["completion_ids"][:2]]  # the odd one out is unpaired
    assert comparisons[0].required == 2 and comparisons[0].batch == "job-7"
    assert {c.model_version_id for c in db.query(Completion)} == {version.id}
