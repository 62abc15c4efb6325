"""The demo's simulated week (app.demo.history), on SQLite and PostgreSQL: made through the services, spread over
the past week, labelled, leaving the demo annotators their work; `--empty` (no history) leaves nothing rated."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from app.db import session_scope


def test_history_is_a_labelled_week_made_by_the_services(db_url):
    from app.demo.history import HISTORY_BATCH, build_history
    from app.demo.setup import seed_demo
    from app.models import (
        Assignment,
        Comparison,
        DatasetSnapshot,
        FlagReview,
        Judgment,
        Project,
        User,
        utcnow,
    )
    from app.quality.service import project_stats, review_queue
    from app.tasks.service import queue_left_for

    seed_demo()
    started = utcnow()
    result = build_history(train=False, log=lambda line: None)
    assert result["judgments"] >= 100 and result["flagged"] >= 3, result
    assert build_history(train=False, log=lambda line: None) == {"skipped": "the simulated history exists already"}
    with session_scope(db_url) as db:
        demo = db.scalar(select(Project).where(Project.slug == "demo"))
        assert "simulated" in demo.description and demo.gold_rate > 0
        judgments = list(db.scalars(select(Judgment).where(Judgment.source == "human")))
        raters = {u.id: u.username for u in db.scalars(select(User))}
        assert {raters[j.rater_id] for j in judgments} == {"sim-ana", "sim-ben", "sim-chloe", "sim-dan", "sim-eve"}
        # Every judgment has its assignment, submitted through the judgments service.
        assignments = {a.id: a for a in db.scalars(select(Assignment))}
        assert all(assignments[j.assignment_id].state == "submitted" for j in judgments)
        moments = sorted(j.created_at.replace(tzinfo=None) for j in judgments)
        now = started.replace(tzinfo=None)
        assert moments[-1] < now and moments[0] > now - timedelta(days=7, hours=1)
        assert len({m.date() for m in moments}) >= 5  # a week of days, not one burst
        # The demo's own comparisons are left to ann1 and ann2; the simulated raters worked on the history batch.
        batches = dict(db.execute(select(Comparison.id, Comparison.batch)).all())
        assert all(batches[j.comparison_id] in (HISTORY_BATCH, "gold") for j in judgments if j.project_id == demo.id)
        for name in ("ann1", "ann2"):
            user = db.scalar(select(User).where(User.username == name))
            assert queue_left_for(db, demo.id, user.id) >= 20
        rank = db.scalar(select(Project).where(Project.slug == "demo-rank"))
        assert 0 < db.scalar(select(func.count()).select_from(Judgment).where(Judgment.project_id == rank.id)) < 16
        stats = {r["username"]: r for r in project_stats(db, demo)["raters"]}
        assert {"too_fast", "position_bias"} <= set(stats["sim-eve"]["flags"])
        assert sum(1 for r in stats.values() if r["gold_judgments"]) >= 4  # gold is drawn at random (20%)
        assert len(review_queue(db, demo)) >= 2 and db.scalar(select(func.count()).select_from(FlagReview)) == 2
        snapshot = db.get(DatasetSnapshot, result["dataset_id"])
        assert snapshot.status == "ready" and snapshot.rows_train > 0
        assert "sim-eve" in snapshot.spec["filters"]["exclude_raters"]


def test_empty_demo_has_nothing_rated(db_url):
    from app.demo.setup import seed_demo
    from app.models import Judgment

    seed_demo()
    with session_scope(db_url) as db:
        assert db.scalar(select(func.count()).select_from(Judgment)) == 0
