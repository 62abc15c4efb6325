"""The assignment contract (DESIGN.md): resume, expire, pick, lease. Never commits.

Race-freedom: on PostgreSQL the rater's row is locked (one claim per rater at a time) and the
candidate comparison is taken `FOR UPDATE SKIP LOCKED`; on SQLite the whole claim runs in a
`BEGIN IMMEDIATE` transaction. The slot is taken by bumping `n_leases` in the same transaction, so
`n_judgments + n_leases <= required` holds at every commit.

"Nothing left" only when nothing is left: a comparison skipped because another transaction held it locked
(a submit counting on it, another claim) may still have a slot once that transaction ends. When the
skip-locked pass finds nothing, a second pass waits for those locks and looks again (`ClaimResult.state`
then says whether the rater is done or the remaining slots are all leased to others: busy).

The plan does not depend on statistics: a bulk import leaves the queue's rows unknown to the planner (a
new project's id is in no statistics until the next ANALYZE), which then expects one or two open comparisons
and prefers reading them all and sorting over walking `ix_comparison_queue` in order, a plan whose cost grows
with the queue (tens of milliseconds per claim at a few thousand comparisons). The claim's transaction turns
sorting off (`enable_sort`, transaction-local, restored before the claim returns), so the only way to answer
the ORDER BY ... LIMIT 1 is the index walk, whatever the statistics say. Imports ANALYZE the tables they fill
as well (app.imports).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace

from sqlalchemy import and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.exc import OperationalError
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


_ANY_USER = SimpleNamespace(id=bindparam("user_id"))
_VISIBLE_TO_ANNOTATOR = annotator_filter(_ANY_USER)
_MAY_RATE = rating_filter(_ANY_USER)
_PROJECT_BY_ID = {
    annotator: select(Project, (_VISIBLE_TO_ANNOTATOR if annotator else _MAY_RATE).label("visible")).where(
        or_(Project.id == bindparam("project_id"), Project.slug == bindparam("slug"))
    )
    for annotator in (True, False)
}  # fmt: skip
_PROJECT_BY_SLUG = {
    annotator: select(Project, (_VISIBLE_TO_ANNOTATOR if annotator else _MAY_RATE).label("visible")).where(
        Project.slug == bindparam("slug")
    )
    for annotator in (True, False)
}  # fmt: skip
"""Built once: the rating loop runs these on every request, and building a statement (and its cache key)
costs more CPU than PostgreSQL spends answering it."""


def project_for_rater(db: Session, ref: str | int, user: User) -> Project:
    """`get_visible_project` in one query: the project by id or slug, with whether `user` may see it."""
    ref = str(ref)
    project_id, slug = parse_ref(ref)
    if project_id is None and slug is None:
        raise NotFound(f"No project {ref!r}.")
    # Annotators see only active projects open to them; every role rates only where the members rule lets it.
    annotator = user.role == Role.annotator
    if project_id is not None:
        rows = db.execute(_PROJECT_BY_ID[annotator], {"project_id": project_id, "slug": slug, "user_id": user.id})
    else:
        rows = db.execute(_PROJECT_BY_SLUG[annotator], {"slug": slug, "user_id": user.id})
    rows = rows.all()
    if not rows:
        raise NotFound(f"No project {ref!r}.")
    project, is_visible = min(rows, key=lambda row: row[0].id != project_id)
    if not is_visible:
        raise Forbidden("You are not a member of this project.")
    return project


def expire_leases(db: Session, project_id: int, now: datetime) -> int:
    """Turn this project's lapsed leases into 'expired' and give their slots back."""
    # Runs on claims and usually changes nothing: skip the ORM's session synchronization.
    expired = db.execute(_EXPIRE, {"b_project_id": project_id, "b_now": now}).scalars().all()
    counts: dict[int, int] = {}
    for comparison_id in expired:
        counts[comparison_id] = counts.get(comparison_id, 0) + 1
    for comparison_id, n in counts.items():
        db.execute(update(Comparison).where(Comparison.id == comparison_id).values(n_leases=Comparison.n_leases - n))
    return len(expired)


_EXPIRE = (
    update(Assignment)
    .where(Assignment.project_id == bindparam("b_project_id"), Assignment.state == "active",
           Assignment.expires_at <= bindparam("b_now"))
    .values(state="expired")
    .returning(Assignment.comparison_id)
    .execution_options(synchronize_session=False)
)  # fmt: skip

EXPIRE_EVERY_SECONDS = 5.0
"""A claim sweeps its project's lapsed leases at most this often per process (a sweep is an UPDATE on every
claim otherwise, and leases last minutes), and always before it answers that nothing is left."""
_last_sweep: dict[int, float] = {}
_sweep_lock = threading.Lock()


def _sweep_due(project_id: int) -> bool:
    clock = time.monotonic()
    with _sweep_lock:
        if clock - _last_sweep.get(project_id, -EXPIRE_EVERY_SECONDS) < EXPIRE_EVERY_SECONDS:
            return False
        _last_sweep[project_id] = clock
        return True


def sweep_due(key) -> bool:
    """Whether a claim sweeps lapsed leases now (`key`: a project id for assignments, or another hashable key for
    another kind of lease, app.steps' trajectory leases): at most every EXPIRE_EVERY_SECONDS per process."""
    return _sweep_due(key)


def judgments_today(db: Session, project_id: int, rater_id: int, now: datetime) -> int:
    return db.scalar(
        select(func.count()).select_from(Judgment).where(
            Judgment.project_id == project_id, Judgment.rater_id == rater_id, Judgment.created_at >= start_of_day(now)
        )
    )


_comparison, _assignment = Comparison.__table__, Assignment.__table__
"""The hot statements below are written on the tables (plain Core): the ORM's compile and result layers cost
more CPU than these single-row statements cost PostgreSQL."""


def _candidate_query(gold: bool | None, *, lock: str | None):
    """Open comparisons this rater never had, in claim order; `gold` None: gold or not. `lock`: "skip" (FOR
    UPDATE SKIP LOCKED), "wait" (FOR UPDATE) or None (SQLite, where the write lock serializes claims)."""
    c, a = _comparison.c, _assignment.c
    seen = exists().where(a.comparison_id == c.id, a.rater_id == bindparam("rater_id"))
    query = (
        select(c.id, c.completion_ids)
        .where(c.project_id == bindparam("project_id"), c.n_judgments + c.n_leases < c.required, ~seen)
        .order_by(c.priority.desc(), c.score_gap, c.id)
        .limit(1)
    )
    if gold is not None:
        query = query.where(c.is_gold == gold)
    if lock is not None:
        query = query.with_for_update(skip_locked=lock == "skip", of=_comparison)
    return query


_CANDIDATE = {(gold, lock): _candidate_query(gold, lock=lock)
              for gold in (True, False, None) for lock in ("skip", "wait", None)}  # fmt: skip


def _candidate(db: Session, project_id: int, rater_id: int, gold: bool | None, *, wait: bool = False):
    """(id, completion_ids) of the comparison to lease, locked (PostgreSQL), or None."""
    lock = None if is_sqlite(db) else "wait" if wait else "skip"
    return db.execute(_CANDIDATE[gold, lock], {"project_id": project_id, "rater_id": rater_id}).first()


_LIVE_LEASE = (
    select(Assignment)
    .where(
        Assignment.rater_id == bindparam("rater_id"),
        Assignment.project_id == bindparam("project_id"),
        Assignment.state == "active",
        Assignment.expires_at > bindparam("now"),
    )
    .limit(1)
)
"""At most one row: a rater claims one lease at a time per project (the rater's row lock), and a claim resumes
the live one first. No ORDER BY: the claim's transaction plans without sorting (see the module docstring)."""


def current_assignment(db: Session, project: Project, rater: User, *, now: datetime | None = None) -> Assignment | None:
    """The rater's unexpired lease in this project, if any: what a GET may show (it reads, never claims)."""
    now = now or utcnow()
    return db.scalar(_LIVE_LEASE, {"rater_id": rater.id, "project_id": project.id, "now": now})


# PostgreSQL: the rater's row lock, and planning without sorts for the rest of the claim's transaction.
_user = User.__table__
RATER_LOCK = select(_user.c.id).where(_user.c.id == bindparam("rater_id")).with_for_update()
"""PostgreSQL: the rater's row lock, held by every claim (of a comparison here, of a trajectory in app.steps) until
its transaction ends: one claim per rater at a time, so a double click cannot lease two tasks."""
_LOCK_RATER = RATER_LOCK.add_columns(func.set_config("enable_sort", "off", True))
_TAKE_SLOT = (
    _comparison.update()
    .where(_comparison.c.id == bindparam("b_comparison_id"))
    .values(n_leases=_comparison.c.n_leases + 1)
)
_TAKE_SLOT_PG = _TAKE_SLOT.returning(func.set_config("enable_sort", "on", True))
_SORTS_BACK_ON = select(func.set_config("enable_sort", "on", True))
_INSERT_ASSIGNMENT = insert(Assignment).returning(Assignment)
_LOCK_WAIT_LIMIT = select(func.set_config("lock_timeout", "5s", True))

_OPEN_FOR_RATER = select(
    exists().where(
        _comparison.c.project_id == bindparam("project_id"),
        _comparison.c.n_judgments < _comparison.c.required,
        ~exists().where(_assignment.c.comparison_id == _comparison.c.id,
                        _assignment.c.rater_id == bindparam("rater_id")),
    )
)  # fmt: skip
"""Whether a comparison this rater never had still wants judgments: its free slots are all leased to others."""

BUSY_RETRY_SECONDS = 10
"""What a rater told "busy" waits before asking again: leased slots come back when a lease is skipped or lapses."""


@dataclass
class Claim:
    assignment: Assignment | None
    state: str = "assigned"
    """assigned | busy (nothing free for this rater now, but leases held by others may come back) | done
    (every comparison this rater could still rate has all its judgments, or the project is not active)."""


def claim_next(db: Session, project: Project, rater: User, *, now: datetime | None = None) -> Assignment | None:
    """The rater's next assignment in this project, or None when nothing is left for them."""
    return claim(db, project, rater, now=now).assignment


def claim(db: Session, project: Project, rater: User, *, now: datetime | None = None) -> Claim:
    """The rater's next assignment in this project, or why there is none (`Claim.state`)."""
    now = now or utcnow()
    write_transaction(db)
    postgres = not is_sqlite(db)
    if postgres:
        # One claim per rater at a time, so a double click cannot lease two comparisons.
        db.execute(_LOCK_RATER, {"rater_id": rater.id})
    resumed = db.scalar(_LIVE_LEASE, {"rater_id": rater.id, "project_id": project.id, "now": now})
    if resumed is not None:
        _sorts_back_on(db, postgres)
        return Claim(resumed)
    if project.status != ProjectStatus.active:
        _sorts_back_on(db, postgres)
        return Claim(None, "done")
    if project.daily_cap is not None and judgments_today(db, project.id, rater.id, now) >= project.daily_cap:
        _sorts_back_on(db, postgres)
        raise Conflict(f"You reached today's cap of {project.daily_cap} judgments in this project.")
    if _sweep_due(project.id):
        expire_leases(db, project.id, now)
    want_gold = project.gold_rate > 0 and _rng.random() < project.gold_rate
    candidate = _candidate(db, project.id, rater.id, want_gold)
    if candidate is None and project.gold_rate > 0:
        candidate = _candidate(db, project.id, rater.id, not want_gold)
    if candidate is None:
        candidate = _look_again(db, project.id, rater.id, now, postgres)
    if candidate is None:
        _sorts_back_on(db, postgres)
        busy = db.scalar(_OPEN_FOR_RATER, {"project_id": project.id, "rater_id": rater.id})
        return Claim(None, "busy" if busy else "done")
    comparison_id, completion_ids = candidate
    # The row is locked (PostgreSQL) or the write lock is held (SQLite): the bump cannot over-fill.
    db.execute(_TAKE_SLOT_PG if postgres else _TAKE_SLOT, {"b_comparison_id": comparison_id})
    order = list(completion_ids)
    _rng.shuffle(order)
    return Claim(db.scalars(_INSERT_ASSIGNMENT, [{
        "comparison_id": comparison_id, "rater_id": rater.id, "project_id": project.id, "display_order": order,
        "state": "active", "created_at": now, "expires_at": now + timedelta(seconds=project.lease_seconds),
    }]).one())  # fmt: skip


def _look_again(db: Session, project_id: int, rater_id: int, now: datetime, postgres: bool):
    """The skip-locked pass found nothing. Give lapsed leases back, then look again waiting for the rows other
    transactions hold (a submit counting on its comparison, a claim bumping one): once they commit, a row that
    still has a slot is taken, one that filled up is passed over. SQLite: its claims are serialized, nothing was
    skipped, only lapsed leases can still free a slot."""
    expire_leases(db, project_id, now)
    if not postgres:
        return _candidate(db, project_id, rater_id, None)
    # A lock wait is bounded (the rows are held for milliseconds; a stuck holder must not hang the claim), in a
    # savepoint so that running into the bound only means "busy".
    try:
        with db.begin_nested():
            db.execute(_LOCK_WAIT_LIMIT)
            return _candidate(db, project_id, rater_id, None, wait=True)
    except OperationalError:
        return None


def _sorts_back_on(db: Session, postgres: bool) -> None:
    if postgres:
        db.execute(_SORTS_BACK_ON)


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
