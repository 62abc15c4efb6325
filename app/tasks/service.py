"""The assignment contract (DESIGN.md): resume, expire, pick, lease. Never commits.

Race-freedom: on PostgreSQL the rater's row is locked (one claim per rater at a time) and the
candidate comparison is taken `FOR UPDATE SKIP LOCKED`; on SQLite the whole claim runs in a
`BEGIN IMMEDIATE` transaction. The slot is taken by bumping `n_leases` in the same transaction, so
`n_judgments + n_leases <= required` holds at every commit.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from app.db import is_sqlite, write_transaction
from app.errors import Conflict, Forbidden, NotFound
from app.models import (
    Assignment,
    Comparison,
    Judgment,
    Project,
    ProjectStatus,
    Role,
    User,
    start_of_day,
    utcnow,
)
from app.projects.service import annotator_filter, parse_ref, rating_filter

_rng = random.SystemRandom()


def project_for_rater(db: Session, ref: str | int, user: User) -> Project:
    """`get_visible_project` in one query: the project by id or slug, with whether `user` may see it."""
    ref = str(ref)
    project_id, slug = parse_ref(ref)
    if project_id is None and slug is None:
        raise NotFound(f"No project {ref!r}.")
    by_ref = or_(Project.id == project_id, Project.slug == slug) if project_id is not None else Project.slug == slug
    # Annotators see only active projects open to them; every role rates only where the members rule lets it.
    visible = annotator_filter(user) if user.role == Role.annotator else rating_filter(user)
    rows = db.execute(select(Project, visible.label("visible")).where(by_ref)).all()
    if not rows:
        raise NotFound(f"No project {ref!r}.")
    project, is_visible = min(rows, key=lambda row: row[0].id != project_id)
    if not is_visible:
        raise Forbidden("You are not a member of this project.")
    return project


def expire_leases(db: Session, project_id: int, now: datetime) -> int:
    """Turn this project's lapsed leases into 'expired' and give their slots back."""
    # Runs on every claim and usually changes nothing: skip the ORM's session synchronization.
    expired = db.execute(
        update(Assignment)
        .where(Assignment.project_id == project_id, Assignment.state == "active", Assignment.expires_at <= now)
        .values(state="expired")
        .returning(Assignment.comparison_id)
        .execution_options(synchronize_session=False)
    ).scalars().all()
    counts: dict[int, int] = {}
    for comparison_id in expired:
        counts[comparison_id] = counts.get(comparison_id, 0) + 1
    for comparison_id, n in counts.items():
        db.execute(update(Comparison).where(Comparison.id == comparison_id).values(n_leases=Comparison.n_leases - n))
    return len(expired)


def judgments_today(db: Session, project_id: int, rater_id: int, now: datetime) -> int:
    return db.scalar(
        select(func.count()).select_from(Judgment).where(
            Judgment.project_id == project_id, Judgment.rater_id == rater_id, Judgment.created_at >= start_of_day(now)
        )
    )


def _candidate(db: Session, project_id: int, rater_id: int, gold: bool) -> Comparison | None:
    seen = exists().where(Assignment.comparison_id == Comparison.id, Assignment.rater_id == rater_id)
    query = (
        select(Comparison)
        .where(
            Comparison.project_id == project_id,
            Comparison.n_judgments + Comparison.n_leases < Comparison.required,
            Comparison.is_gold == gold,
            ~seen,
        )
        .order_by(Comparison.priority.desc(), Comparison.score_gap, Comparison.id)
        .limit(1)
        .execution_options(populate_existing=True)  # the row as locked now, not as this session last saw it
    )
    if not is_sqlite(db):
        query = query.with_for_update(skip_locked=True, of=Comparison)
    return db.scalar(query)


def current_assignment(db: Session, project: Project, rater: User, *, now: datetime | None = None) -> Assignment | None:
    """The rater's unexpired lease in this project, if any: what a GET may show (it reads, never claims)."""
    now = now or utcnow()
    return db.scalar(
        select(Assignment)
        .where(
            Assignment.rater_id == rater.id,
            Assignment.project_id == project.id,
            Assignment.state == "active",
            Assignment.expires_at > now,
        )
        .order_by(Assignment.id)
        .limit(1)
    )


def claim_next(db: Session, project: Project, rater: User, *, now: datetime | None = None) -> Assignment | None:
    """The rater's next assignment in this project, or None when nothing is left for them."""
    now = now or utcnow()
    write_transaction(db)
    if not is_sqlite(db):
        # One claim per rater at a time, so a double click cannot lease two comparisons.
        db.execute(select(User.id).where(User.id == rater.id).with_for_update())
    resumed = db.scalar(
        select(Assignment)
        .where(
            Assignment.rater_id == rater.id,
            Assignment.project_id == project.id,
            Assignment.state == "active",
            Assignment.expires_at > now,
        )
        .order_by(Assignment.id)
        .limit(1)
    )
    if resumed is not None:
        return resumed
    if project.status != ProjectStatus.active:
        return None
    if project.daily_cap is not None and judgments_today(db, project.id, rater.id, now) >= project.daily_cap:
        raise Conflict(f"You reached today's cap of {project.daily_cap} judgments in this project.")
    expire_leases(db, project.id, now)
    want_gold = project.gold_rate > 0 and _rng.random() < project.gold_rate
    comparison = _candidate(db, project.id, rater.id, gold=want_gold)
    if comparison is None and project.gold_rate > 0:
        comparison = _candidate(db, project.id, rater.id, gold=not want_gold)
    if comparison is None:
        return None
    # Current: read by the statement that locked the row (PostgreSQL) or under the write lock (SQLite).
    comparison.n_leases += 1
    order = list(comparison.completion_ids)
    _rng.shuffle(order)
    assignment = Assignment(
        comparison_id=comparison.id,
        rater_id=rater.id,
        project_id=project.id,
        display_order=order,
        state="active",
        created_at=now,
        expires_at=now + timedelta(seconds=project.lease_seconds),
    )
    db.add(assignment)
    db.flush()
    return assignment


def queue_left_for(db: Session, project_id: int, rater_id: int, cap: int = 1000) -> int:
    """Comparisons this rater could still get (counted up to `cap`, so the figure stays cheap)."""
    seen = exists().where(Assignment.comparison_id == Comparison.id, Assignment.rater_id == rater_id)
    inner = (
        select(Comparison.id)
        .where(
            Comparison.project_id == project_id,
            Comparison.n_judgments + Comparison.n_leases < Comparison.required,
            ~Comparison.is_gold,
            ~seen,
        )
        .limit(cap)
        .subquery()
    )
    return db.scalar(select(func.count()).select_from(inner))


def open_comparisons_count(db: Session, project_id: int | None = None) -> int:
    query = select(func.count()).select_from(Comparison).where(
        and_(Comparison.n_judgments < Comparison.required, ~Comparison.is_gold)
    )
    if project_id is not None:
        query = query.where(Comparison.project_id == project_id)
    return db.scalar(query)


def apply_scores(db: Session, project_id: int, scores: dict[int, float]) -> int:
    """A score job's reward-model scores (completion id -> score) as each comparison's score_gap: the smallest
    score difference among its completions (a small gap: the reward model is unsure, so raters see it first).
    Returns how many comparisons were scored (those whose every completion has a score)."""
    scored = 0
    for comparison in db.scalars(select(Comparison).where(Comparison.project_id == project_id)):
        values = sorted(scores[c] for c in comparison.completion_ids if c in scores)
        if len(values) == len(comparison.completion_ids) >= 2:
            comparison.score_gap = min(b - a for a, b in zip(values, values[1:], strict=False))
            scored += 1
    return scored
