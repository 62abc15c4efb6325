"""The export's rater weights (app.quality.service.rater_reliability) are fitted a range of comparisons at a time,
on SQLite and PostgreSQL: the same numbers as the statistics page's, which read every judgment at once."""

from __future__ import annotations

import numpy as np
import pytest


def _planted_project(db) -> int:
    """Pairwise and three-option comparisons (ties allowed), one to four votes each from five raters of planted
    accuracy, a few gold items, and other projects' comparisons between this one's (sparse ids)."""
    from app.models import Comparison, Completion, Judgment, Prompt
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project
    from app.users.service import create_user

    rng = np.random.default_rng(11)
    project = create_project(db, ProjectCreate(name="weights", slug="weights", allow_ties=True, overlap=3), actor=None)
    other = create_project(db, ProjectCreate(name="other", slug="other"), actor=None)
    raters = [create_user(db, f"r{i}", "annotator", "secret-pass-1", actor=None).id for i in range(5)]
    accuracy = [0.95, 0.85, 0.7, 0.55, 0.4]
    for i in range(90):
        for owner in (project, other) if i % 3 == 0 else (project,):
            prompt = Prompt(project_id=owner.id, external_id=f"q{i}", messages=[{"role": "user", "content": f"Q{i}"}])
            db.add(prompt)
            db.flush()
            options = [Completion(prompt_id=prompt.id, text=f"answer {j} to {i}") for j in range(2 + (i % 7 == 0))]
            db.add_all(options)
            db.flush()
            ids = [o.id for o in options]
            best = int(rng.integers(len(ids)))
            gold = owner is project and i % 10 == 4
            gold_ranking = [[ids[best]], [x for x in ids if x != ids[best]]] if gold else None
            if i == 14:
                gold_ranking = [ids]  # a gold tie
            if i == 24:
                gold_ranking = None  # marked gold without an answer: not a gold item
            comparison = Comparison(project_id=owner.id, prompt_id=prompt.id, completion_ids=ids, required=3,
                                    is_gold=gold, gold_ranking=gold_ranking)  # fmt: skip
            db.add(comparison)
            db.flush()
            if owner is not project:
                continue
            for r in rng.choice(5, size=int(rng.integers(1, 5)), replace=False):
                if rng.random() < 0.1:
                    ranking = [ids]  # a tie
                else:
                    top = best if rng.random() < accuracy[r] else int(rng.choice([j for j in range(len(ids)) if j != best]))
                    ranking = [[ids[top]], [x for x in ids if x != ids[top]]]
                db.add(Judgment(comparison_id=comparison.id, project_id=project.id, rater_id=raters[r], ranking=ranking,
                                attributes={}, flags=[], source="human",
                                top_completion_id=ranking[0][0] if len(ranking[0]) == 1 else None))  # fmt: skip
    db.flush()
    return project.id


def test_gold_answers_are_each_gold_rankings_first_choice_by_range(db):
    from sqlalchemy import select

    from app.models import Comparison, Project
    from app.quality.service import TIE, gold_answers

    project = db.get(Project, _planted_project(db))
    rows = db.execute(select(Comparison.id, Comparison.gold_ranking).where(Comparison.project_id == project.id,
                                                                         Comparison.is_gold)).all()  # fmt: skip
    expected = sorted((cid, ranking[0][0] if len(ranking[0]) == 1 else TIE) for cid, ranking in rows if ranking)
    assert len(expected) == len(rows) - 1 and any(top == TIE for _, top in expected)
    ids, tops = gold_answers(db, project)
    assert list(zip(ids.tolist(), tops.tolist(), strict=True)) == expected
    middle = expected[len(expected) // 2][0]
    ids, tops = gold_answers(db, project, middle, middle + 1000)
    assert list(zip(ids.tolist(), tops.tolist(), strict=True)) == [row for row in expected if row[0] >= middle]


def test_rater_weights_fitted_range_by_range_are_the_statistics_reliabilities(db, monkeypatch):
    from app.models import Project
    from app.quality import service, stats

    project = db.get(Project, _planted_project(db))
    blocks = []
    real_vote_block = stats.vote_block

    def counting_vote_block(*args, **kwargs):
        block = real_vote_block(*args, **kwargs)
        blocks.append(block)
        return block

    monkeypatch.setattr(stats, "vote_block", counting_vote_block)
    monkeypatch.setattr(service, "RELIABILITY_FIRST_RANGE", 4)
    monkeypatch.setattr(service, "RELIABILITY_RANGE_JUDGMENTS", 12)
    streamed = service.rater_reliability(db, project)

    by_page = {r["user_id"]: r["reliability"] for r in service.project_stats(db, project)["raters"]}
    assert len(blocks) >= 10  # many ranges, each its own block
    assert sum(len(b.raters) > 0 for b in blocks) >= 10
    assert streamed.keys() == by_page.keys() and len(streamed) == 5
    for rater, value in by_page.items():
        assert streamed[rater] == pytest.approx(value, abs=1e-9)
    ordered = [streamed[r] for r in sorted(streamed)]
    assert ordered[0] > ordered[2] > ordered[4]  # the planted order, most accurate first
