"""The leaderboard from battle tallies (app.judgments.tallies) equals the leaderboard from every judgment.

Random projects on SQLite and PostgreSQL: two-, three- and four-option comparisons between a few models (some
completions without a model, some pairs of the same model), judgments of every source with ties, some without a
rater, written through the ORM (mapper events) and through the rating submit (its bulk INSERT); then some are
excluded in review or voided. The tallies must equal a rebuild from the judgments, `battle_counts` must equal
`battle_rows` aggregated, and the Bradley-Terry fit on the tallies must give the same ranking, ratings and
bootstrap intervals (to 1e-6) as the fit on one row per battle."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import numpy as np
import pytest

MODELS = ("m-a", "m-b", "m-c", "m-d", None)


def _build(db, seed: int) -> int:
    from app.judgments.schemas import JudgmentIn
    from app.judgments.service import submit
    from app.models import Comparison, Completion, FlagReview, Judgment, Prompt
    from app.projects.schemas import ProjectCreate
    from app.projects.service import create_project
    from app.tasks.service import claim_next
    from app.users.service import create_user

    rng = random.Random(seed)
    project = create_project(db, ProjectCreate(name=f"tally{seed}", slug=f"tally{seed}", allow_ties=True, overlap=3,
                                               max_overlap=3), actor=None)  # fmt: skip
    raters = [create_user(db, f"t{seed}r{i}", "annotator", "secret-pass-1", actor=None) for i in range(5)]
    comparisons = []
    for i in range(48):  # the first 40 judged through the ORM (full), the last 8 left to the rating loop
        prompt = Prompt(project_id=project.id, external_id=f"p{i}", messages=[], is_chat=False)
        db.add(prompt)
        db.flush()
        options = rng.choice((2, 2, 2, 3, 4))
        completions = [Completion(prompt_id=prompt.id, text=f"answer {i}.{k}" + "x" * rng.randrange(50),
                                  model_name=rng.choice(MODELS)) for k in range(options)]  # fmt: skip
        db.add_all(completions)
        db.flush()
        comparison = Comparison(project_id=project.id, prompt_id=prompt.id, completion_ids=[c.id for c in completions],
                                required=3, n_judgments=3 if i < 40 else 0)  # fmt: skip
        db.add(comparison)
        comparisons.append(comparison)
    db.flush()

    def ranking(ids: list[int]) -> list[list[int]]:
        ids = rng.sample(ids, len(ids))
        groups: list[list[int]] = []
        for c in ids:
            if groups and rng.random() < 0.25:
                groups[-1].append(c)
            else:
                groups.append([c])
        return [sorted(g) for g in groups]

    written = []
    for comparison in comparisons[:40]:
        for rater in rng.sample(raters, 2):
            source = rng.choice(("human", "human", "battle", "ai", "imported"))
            rater_id = None if source in ("ai", "imported") or rng.random() < 0.1 else rater.id
            order = ranking(list(comparison.completion_ids))
            judgment = Judgment(comparison_id=comparison.id, project_id=project.id, rater_id=rater_id, ranking=order,
                                attributes={}, flags=["wrong"] if rng.random() < 0.3 else [], source=source,
                                top_completion_id=order[0][0] if len(order[0]) == 1 else None,
                                created_at=datetime(2026, 12, 1, tzinfo=UTC))  # fmt: skip
            db.add(judgment)
            db.flush()
            written.append(judgment)
    # the rating loop's own path: claims and submits (a bulk INSERT, no mapper event)
    for rater in raters:
        for _ in range(4):
            assignment = claim_next(db, project, rater)
            if assignment is None:
                break
            comparison = db.get(Comparison, assignment.comparison_id)
            submit(db, assignment.id, rater, JudgmentIn(ranking=ranking(list(comparison.completion_ids))))
    db.flush()
    # reviews: some excluded (they stop counting), some dismissed (they still count); some voided
    for judgment in written:
        if judgment.flags and rng.random() < 0.6:
            db.add(FlagReview(judgment_id=judgment.id, project_id=project.id,
                              resolution=rng.choice(("excluded", "dismissed"))))  # fmt: skip
        elif rng.random() < 0.1:
            judgment.voided_at = datetime(2026, 12, 2, tzinfo=UTC)
    db.flush()
    return project.id


def _row_board(db, project, bootstrap: int):
    from app.quality import stats
    from app.quality.service import battle_rows

    rows = battle_rows(db, project)
    played = np.unique(np.concatenate((rows["model_a"], rows["model_b"])))
    index = np.full(len(rows["model_names"]), -1)
    index[played] = np.arange(len(played))
    names = [str(rows["model_names"][i]) for i in played]
    board = stats.bradley_terry(index[rows["model_a"]], index[rows["model_b"]], rows["outcome"], len(names),
                                bootstrap=bootstrap, seed=3)  # fmt: skip
    return names, board, rows


@pytest.mark.parametrize("seed", [0, 1])
def test_tallies_equal_every_judgment(db, seed):
    from app.judgments import tallies
    from app.models import Project
    from app.quality import stats
    from app.quality.service import battle_counts, leaderboard, tally_battles

    project = db.get(Project, _build(db, seed))
    maintained = sorted(tallies.tally_rows(db, project.id))
    assert maintained, "the random project has battles"
    tallies.rebuild(db, project.id)
    assert sorted(tallies.tally_rows(db, project.id)) == maintained

    names, row_board, rows = _row_board(db, project, bootstrap=200)
    cells = Counter()
    for a, b, outcome in zip(rows["model_a"], rows["model_b"], rows["outcome"], strict=True):
        cells[(str(rows["model_names"][a]), str(rows["model_names"][b]), float(outcome))] += 1
    assert battle_counts(db, project) == sorted((a, b, o, n) for (a, b, o), n in cells.items())

    tallied = tally_battles(db, project)
    assert tallied["model_names"] == names
    tally_board = stats.bradley_terry(tallied["model_a"], tallied["model_b"], tallied["outcome"], len(names),
                                      bootstrap=200, seed=3, counts=tallied["counts"])  # fmt: skip
    for field in ("ratings", "ci_low", "ci_high", "battles", "win_rates"):
        np.testing.assert_allclose(getattr(tally_board, field), getattr(row_board, field), rtol=0, atol=1e-6)
    assert tally_board.prior_ties == row_board.prior_ties

    board = leaderboard(db, project, bootstrap=0, style_control=False)
    by_rating = sorted(range(len(names)), key=lambda i: -row_board.ratings[i])
    assert [m["name"] for m in board["models"]] == [names[i] for i in by_rating]
    assert [m["rating"] for m in board["models"]] == [round(float(row_board.ratings[i]), 2) for i in by_rating]
    assert board["battles"] == len(rows["outcome"])
    full = leaderboard(db, project, bootstrap=20)
    assert {m["name"] for m in full["style_controlled"]} == set(names)


def test_deleting_a_rater_deletes_their_tallies(db):
    from sqlalchemy import delete

    from app.judgments import tallies
    from app.models import Project, User

    project = db.get(Project, _build(db, 7))
    rater_id = tallies.tally_rows(db, project.id)[0][4]
    db.execute(delete(User).where(User.id == rater_id))
    db.flush()
    maintained = sorted(tallies.tally_rows(db, project.id))
    assert all(row[4] != rater_id for row in maintained)
    tallies.rebuild(db, project.id)
    assert sorted(tallies.tally_rows(db, project.id)) == maintained
