"""Retraining schedules: per project, "retrain the reward model every N new pairs" and/or "every T minutes".

`tick(worker_id)` runs in every idle worker; one of them acts. The lock is a lease row in scheduler_lock taken
with one conditional UPDATE (`... WHERE expires_at < now OR holder = me`), so on SQLite and PostgreSQL alike only
one worker holds it until its lease runs out. The work itself runs in a transaction that, on PostgreSQL, holds a
transaction-level advisory lock named after the task (`run_alone`), so even a tick that outlives its lease (a
stalled worker) never overlaps another worker's; on SQLite the write transaction serializes them. A reward job is
enqueued only when none is queued or running.

Projects are isolated: each one's schedule runs in its own savepoint, and one that fails (a stored setting out of
range, a job that cannot start) is logged, noted on its page (`note_problem`) and skipped; the others go on.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from pydantic import ValidationError
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.db import get_engine, is_sqlite, session_scope
from app.errors import RankforgeError
from app.models import Job, JobKind, JobStatus, Judgment, Project, ProjectStatus, SchedulerLock, utcnow
from app.projects.schemas import ScheduleSettings
from app.training.service import create_training_job

LOCK_NAME = "scheduler"
LEASE_SECONDS = 60.0
log = logging.getLogger("rankforge.scheduler")


def acquire_lock(db: Session, holder: str, lease_seconds: float = LEASE_SECONDS, *, name: str = LOCK_NAME) -> bool:
    """Take or renew the lease named `name` (the scheduler's by default); True when `holder` holds it now."""
    insert = (sqlite.insert if is_sqlite(db) else postgresql.insert)(SchedulerLock)
    db.execute(insert.values(name=name, holder=None, expires_at=None).on_conflict_do_nothing())
    now = utcnow()
    taken = db.execute(
        update(SchedulerLock)
        .where(SchedulerLock.name == name,
               or_(SchedulerLock.expires_at.is_(None), SchedulerLock.expires_at < now, SchedulerLock.holder == holder))
        .values(holder=holder, expires_at=now + timedelta(seconds=lease_seconds))
    )  # fmt: skip
    return taken.rowcount == 1


def run_alone(db: Session, name: str) -> bool:
    """In the current (write) transaction, the right to run the idle task `name` alone: PostgreSQL's
    pg_try_advisory_xact_lock on a key derived from the name (released at commit or rollback; False at once when
    another worker's transaction holds it). SQLite: True, its write transaction excludes every other writer."""
    if is_sqlite(db):
        return True
    return bool(db.scalar(select(func.pg_try_advisory_xact_lock(_idle_task_key(name)))))


def _idle_task_key(name: str) -> int:
    return zlib.crc32(f"rankforge idle task {name}".encode()) - 2**31  # a signed 32-bit key, stable across processes


@contextmanager
def held_alone(name: str, url: str | None = None) -> Iterator[bool]:
    """`run_alone` for an idle task that ends its transactions while it runs (the figures' recompute: no snapshot
    held during its computation): PostgreSQL's session-level pg_try_advisory_lock on the same key, taken on a
    connection of its own in autocommit mode, so holding it holds no transaction (the connection stays "idle");
    released when the block ends. Yields False at once when another worker holds the task (either lock).
    SQLite: True (its lease and write lock serialize the workers)."""
    engine = get_engine(url)
    if is_sqlite(engine):
        yield True
        return
    key = _idle_task_key(name)
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        taken = bool(connection.scalar(select(func.pg_try_advisory_lock(key))))
        try:
            yield taken
        finally:
            if taken:
                connection.scalar(select(func.pg_advisory_unlock(key)))


def note_problem(db: Session, project_id: int, part: str, problem: str | None) -> None:
    """Show why the worker skipped `part` ("schedule" or "rounds") of this project on its page, or clear it
    (problem None). Written only when it changes: the idle loop runs every few seconds."""
    notices = db.scalar(select(Project.schedule_notices).where(Project.id == project_id))
    notices = dict(notices) if isinstance(notices, dict) else {}
    wanted = problem[:1000] if problem else None
    if notices.get(part) == wanted:
        return
    if wanted is None:
        notices.pop(part, None)
    else:
        notices[part] = wanted
    db.execute(update(Project).where(Project.id == project_id).values(schedule_notices=notices or None)
               .execution_options(synchronize_session=False))  # fmt: skip


def describe(error: Exception) -> str:
    """An error as one line for the project's page: a stored setting's validation names its fields."""
    if isinstance(error, RankforgeError):
        return str(error.detail)
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()[:5])
    return f"{error.__class__.__name__}: {str(error).splitlines()[0] if str(error) else ''}".strip(": ")


def reward_due(db: Session, project: Project) -> str | None:
    """Why a reward job is due now (None: not due). A stored schedule the API would refuse raises."""
    schedule = ScheduleSettings.model_validate(project.schedule or {})
    every_pairs, every_minutes = schedule.reward_every_judgments, schedule.reward_every_minutes
    if not every_pairs and not every_minutes:
        return None
    busy = db.scalar(select(Job.id).where(Job.project_id == project.id, Job.kind == JobKind.reward,
                                          Job.status.in_([JobStatus.queued, JobStatus.running])).limit(1))  # fmt: skip
    if busy is not None:
        return None
    last = db.scalar(
        select(func.max(Job.created_at)).where(Job.project_id == project.id, Job.kind == JobKind.reward)
    )
    new_query = select(func.count()).select_from(Judgment).where(Judgment.project_id == project.id)
    if last is not None:
        new_query = new_query.where(Judgment.created_at > last)
    new_judgments = db.scalar(new_query) or 0
    if every_pairs and new_judgments >= int(every_pairs):
        return f"{new_judgments} new judgments (every {every_pairs})"
    if (
        every_minutes
        and new_judgments > 0
        and (last is None or utcnow() - last >= timedelta(minutes=float(every_minutes)))
    ):
        return f"every {every_minutes} minutes"
    return None


def tick(worker_id: str) -> list[int]:
    """Enqueue the reward jobs that are due; returns their ids (empty when another worker holds the lock)."""
    with session_scope() as db:
        if not acquire_lock(db, worker_id):
            return []
    created = []
    with session_scope(write=True) as db:
        if not run_alone(db, LOCK_NAME):
            return []
        project_ids = db.scalars(select(Project.id).where(Project.status == ProjectStatus.active)
                                 .order_by(Project.id)).all()  # fmt: skip
        for project_id in project_ids:
            savepoint = db.begin_nested()
            try:
                project = db.get(Project, project_id)
                reason = reward_due(db, project)
            except Exception as error:  # noqa: BLE001 - whatever it is, this project only: noted, skipped
                savepoint.rollback()
                log.warning("schedule of project %s skipped: %s", project_id, describe(error))
                note_problem(db, project_id, "schedule", f"The retraining schedule was skipped: {describe(error)}. "
                             "Fix the schedule in the project's settings.")  # fmt: skip
                continue
            savepoint.commit()
            note_problem(db, project_id, "schedule", None)
            if reason is None:
                continue
            savepoint = db.begin_nested()
            try:
                job = create_training_job(
                    db, project, JobKind.reward, params=(project.schedule or {}).get("reward_params")
                )
            except Exception as error:  # noqa: BLE001 - this project only: noted, skipped
                savepoint.rollback()
                log.warning("scheduled reward job for project %s not started: %s", project_id, describe(error))
                note_problem(db, project_id, "schedule", f"The scheduled reward job did not start: {describe(error)}")
                continue
            savepoint.commit()
            job.message = f"queued by the schedule: {reason}"
            created.append(job.id)
            log.info("scheduled reward job %s for %s (%s)", job.id, project.slug, reason)
    return created
