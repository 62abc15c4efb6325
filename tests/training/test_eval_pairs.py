"""Honest evaluation pairs: a pair whose two answers are one text is never sent to raters (recorded as a tie,
flagged identical, required 0; counted apart as the round's `identical_pairs`), and the two versions of a round
sample the evaluation prompts with different seeds.

(Found by trying a round as a rater would: 14 of 20 evaluation pairs showed the same text twice, and those votes
counted as wins and losses.)"""

from __future__ import annotations

from tests.helpers import make_project


def _versions(db, project_id: int, tmp_path):
    from app.models import ModelVersion

    versions = []
    for name in ("policy-old", "policy-new"):
        (tmp_path / name).mkdir()
        version = ModelVersion(name=name, kind="policy", path=str(tmp_path / name), project_id=project_id)
        db.add(version)
        versions.append(version)
    db.flush()
    return versions


def test_identical_answers_are_never_served_and_are_counted_apart(client, users, db, tmp_path):
    from app.imports.service import add_generations
    from app.judgments.identical import IDENTICAL
    from app.models import Comparison, Project, Prompt
    from app.quality.rounds import round_figures

    admin = users.create("admin", "admin")
    rater = users.create("rater", "annotator")
    project = make_project(client, admin, overlap=1)
    row = db.get(Project, project["id"])
    db.add_all(
        [
            Prompt(project_id=row.id, messages=[{"role": "user", "content": f"Question {i}?"}])
            for i in range(3)
        ]
    )
    db.flush()
    prompts = sorted(p.id for p in db.query(Prompt).filter(Prompt.project_id == row.id))
    old, new = _versions(db, row.id, tmp_path)
    old_texts = ["The same answer.", "Old answer one.", "Old answer two."]
    new_texts = [
        "  The same answer.\n",
        "New answer one.",
        "Old answer two.",
    ]  # white space aside, two repeat
    add_generations(db, row, old, [{"prompt_id": p, "completions": [{"text": t}]} for p, t in zip(prompts, old_texts, strict=True)],
                    job_id=1)  # fmt: skip
    made = add_generations(db, row, new, [{"prompt_id": p, "completions": [{"text": t}]}
                                          for p, t in zip(prompts, new_texts, strict=True)], job_id=2, arena=True)  # fmt: skip
    db.commit()
    pairs = (
        db.query(Comparison)
        .filter(Comparison.id.in_(made["comparison_ids"]))
        .order_by(Comparison.prompt_id)
        .all()
    )
    assert [bool((c.meta or {}).get(IDENTICAL)) for c in pairs] == [True, False, True]
    assert [c.required for c in pairs] == [0, 1, 0]

    served = []
    while (
        task := client.get(f"/api/v1/projects/{project['id']}/tasks/next", headers=rater["headers"])
    ).status_code == 200:
        served.append(task.json()["comparison_id"])
        options = task.json()["options"]
        new_first = sorted(options, key=lambda o: not o["text"].startswith("New"))
        response = client.post(f"/api/v1/assignments/{task.json()['assignment_id']}/judgment",
                               json={"ranking": [[o["id"]] for o in new_first]}, headers=rater["headers"])  # fmt: skip
        assert response.status_code in (200, 201), response.text
    assert served == [pairs[1].id]
    db.commit()  # a fresh transaction: the judgment came through the API

    figures = round_figures(db, comparison_ids=[], eval_comparison_ids=[c.id for c in pairs], new_version_id=new.id,
                            old_version_id=old.id, eval_scores={}, reward_since=None)  # fmt: skip
    assert figures["identical_pairs"] == 2
    # the one real pair counts; the copies are no votes
    assert figures["battles"] == 1 and figures["win_rate"] == 1.0


def test_identical_answers_helper():
    from app.judgments.identical import identical_answers

    assert identical_answers(["a b", " a b\n"]) and not identical_answers(["a b", "a  b"])
    assert identical_answers(["x", "x", "x"]) and not identical_answers(["x", "x", "y"])
