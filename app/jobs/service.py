"""The job queue: create, claim (race-free), heartbeat, progress, finish, cancel, retry, recover. Never commits,
except `claim`/`heartbeat` callers in the worker, which own their unit of work.

Dependencies: a job created with `depends_on` waits in the queue (claim skips it) until every job it depends on
has succeeded; when one of them fails or is cancelled, the waiting job (and whatever waits on it) is stopped the
same way, its error naming the job that stopped it. `retry` puts a failed job back in the queue together with
the dependents it stopped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session, aliased, object_session

from app.api import get_or_404
from app.db import is_sqlite, write_transaction
from app.errors import Conflict
from app.jobs.schemas import JobOut
from app.models import TERMINAL_STATUSES, Job, JobDependency, JobMetric, JobStatus, User, utcnow
from app.webhooks.service import emit

LOG_TAIL_CHARS = 8000
STOPPED_BY_DEPENDENCY = "stopped: a job it depends on did not succeed"


def create_job(db: Session, kind: str, *, project_id: int | None, params: dict | None = None,
               dataset_id: int | None = None, base_model_id: int | None = None,
               reward_model_id: int | None = None, actor: User | None = None, max_attempts: int = 3,
               depends_on: Sequence[int] = ()) -> Job:  # fmt: skip
    """A queued job; with `depends_on`, it waits until those jobs have succeeded."""
    depends_on = sorted(set(depends_on))
    job = Job(kind=kind, project_id=project_id, params=params or {}, dataset_id=dataset_id,
              base_model_id=base_model_id, reward_model_id=reward_model_id, status=JobStatus.queued,
              created_by_id=actor.id if actor else None, max_attempts=max_attempts,
              message=f"waiting for job {', '.join(map(str, depends_on))}" if depends_on else "queued")  # fmt: skip
    db.add(job)
    db.flush()
    for other in depends_on:
        db.add(JobDependency(job_id=job.id, depends_on_id=other))
    db.flush()
    blocker = db.scalar(select(Job).where(Job.id.in_(depends_on), Job.status.in_([JobStatus.failed,
                                                                                JobStatus.cancelled])))  # fmt: skip
    if blocker is not None:
        _stop_dependents(db, blocker)
    return job


def dependencies(db: Session, job_id: int) -> list[int]:
    """The ids of the jobs `job_id` waits for."""
    return list(db.scalars(select(JobDependency.depends_on_id).where(JobDependency.job_id == job_id)
                           .order_by(JobDependency.depends_on_id)))  # fmt: skip


def dependents(db: Session, job_id: int) -> list[int]:
    """The ids of the jobs that wait for `job_id`."""
    return list(db.scalars(select(JobDependency.job_id).where(JobDependency.depends_on_id == job_id)
                           .order_by(JobDependency.job_id)))  # fmt: skip


def _stop_dependents(db: Session, job: Job) -> None:
    """`job` failed or was cancelled: every queued job waiting on it (transitively) ends the same way."""
    ended = JobStatus.cancelled if job.status == JobStatus.cancelled else JobStatus.failed
    pending, seen = [job], {job.id}
    while pending:
        current = pending.pop()
        for waiting in db.scalars(select(Job).join(JobDependency, JobDependency.job_id == Job.id)
                                  .where(JobDependency.depends_on_id == current.id, Job.status == JobStatus.queued)):  # fmt: skip
            if waiting.id in seen:
                continue
            seen.add(waiting.id)
            waiting.status, waiting.finished_at, waiting.message = ended, utcnow(), STOPPED_BY_DEPENDENCY
            waiting.error = f"Job {current.id}, which this job depends on, {current.status}."
            _emit_ended(db, waiting)
            pending.append(waiting)


def retry(db: Session, job: Job) -> list[int]:
    """A failed or cancelled job back in the queue, with the dependents it stopped; returns their ids."""
    if job.status not in (JobStatus.failed, JobStatus.cancelled):
        raise Conflict(f"Job {job.id} is {job.status}; only a failed or cancelled job can be retried.")
    requeued, pending = [], [job]
    while pending:
        current = pending.pop()
        current.status, current.attempts, current.worker_id, current.error = JobStatus.queued, 0, None, None
        current.cancel_requested, current.finished_at, current.progress = False, None, 0.0
        waiting_for = dependencies(db, current.id)
        current.message = f"retry: waiting for job {', '.join(map(str, waiting_for))}" if waiting_for else "retry"
        requeued.append(current.id)
        pending += [d for d in db.scalars(select(Job).join(JobDependency, JobDependency.job_id == Job.id)
                                          .where(JobDependency.depends_on_id == current.id,
                                                 Job.message == STOPPED_BY_DEPENDENCY))]  # fmt: skip
    return requeued


def get_job(db: Session, job_id: int) -> Job:
    return get_or_404(db, Job, job_id, "job")


def recover_stale(db: Session, stale_seconds: float) -> list[int]:
    """Running jobs whose worker stopped heartbeating: back to the queue, or failed after the last attempt."""
    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    stale = list(db.scalars(
        select(Job).where(Job.status == JobStatus.running,
               or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))
        .with_for_update(skip_locked=True) if not is_sqlite(db) else
        select(Job).where(Job.status == JobStatus.running,
               or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))
    ))  # fmt: skip
    for job in stale:
        lost = f"worker {job.worker_id} stopped heartbeating (attempt {job.attempts} of {job.max_attempts})"
        if job.cancel_requested:
            job.status, job.finished_at, job.message = JobStatus.cancelled, utcnow(), "cancelled"
        elif job.attempts >= job.max_attempts:
            job.status, job.finished_at, job.error = JobStatus.failed, utcnow(), f"Failed: {lost}."
            job.message = "failed"
            _emit_ended(db, job)
        else:
            job.status, job.worker_id, job.message = JobStatus.queued, None, f"retrying: {lost}"
        if job.status in (JobStatus.failed, JobStatus.cancelled):
            _stop_dependents(db, job)
    return [job.id for job in stale]


def claim(db: Session, worker_id: str, kinds: list[str] | None = None) -> Job | None:
    write_transaction(db)
    upstream = aliased(Job)
    waiting = exists().where(JobDependency.job_id == Job.id, JobDependency.depends_on_id == upstream.id,
                             upstream.status != JobStatus.succeeded)  # fmt: skip
    query = select(Job).where(Job.status == JobStatus.queued, ~waiting).order_by(Job.created_at, Job.id).limit(1)
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    if not is_sqlite(db):
        query = query.with_for_update(skip_locked=True)
    job = db.scalar(query)
    if job is None:
        return None
    now = utcnow()
    job.status, job.worker_id, job.attempts = JobStatus.running, worker_id, job.attempts + 1
    job.heartbeat_at, job.started_at, job.message, job.error = now, job.started_at or now, "started", None
    return job


def heartbeat(db: Session, job_id: int, worker_id: str) -> bool:
    """Refresh the heartbeat; returns True when a cancel was requested (or the job is no longer ours)."""
    job = db.get(Job, job_id)
    if job is None or job.worker_id != worker_id or job.status != JobStatus.running:
        return True
    job.heartbeat_at = utcnow()
    return job.cancel_requested


def set_progress(db: Session, job_id: int, progress: float, message: str | None = None) -> None:
    values = {"progress": max(0.0, min(1.0, float(progress))), "heartbeat_at": utcnow()}
    if message is not None:
        values["message"] = message[:500]
    db.execute(update(Job).where(Job.id == job_id).values(**values))


def add_metrics(db: Session, job_id: int, step: int, values: dict) -> None:
    db.add(JobMetric(job_id=job_id, step=int(step), values=values))


def append_log(db: Session, job_id: int, text: str) -> None:
    job = db.get(Job, job_id)
    job.log_tail = (job.log_tail + text)[-LOG_TAIL_CHARS:]


def finish(db: Session, job_id: int, worker_id: str, result: dict) -> None:
    job = db.get(Job, job_id)
    if job.worker_id != worker_id or job.status != JobStatus.running:
        return  # someone else took it over (we were presumed dead): their result wins
    job.status, job.progress, job.result = JobStatus.succeeded, 1.0, result
    job.finished_at, job.message = utcnow(), "succeeded"
    _emit_ended(db, job)


def fail(db: Session, job_id: int, worker_id: str, error: str, *, retry: bool = False) -> None:
    job = db.get(Job, job_id)
    if job.worker_id != worker_id or job.status != JobStatus.running:
        return
    if job.cancel_requested:
        job.status, job.message = JobStatus.cancelled, "cancelled"
    elif retry and job.attempts < job.max_attempts:
        job.status, job.worker_id, job.message = JobStatus.queued, None, f"retrying after: {error[:300]}"
        return
    else:
        job.status, job.error, job.message = JobStatus.failed, error[:4000], "failed"
    job.finished_at = utcnow()
    _emit_ended(db, job)
    _stop_dependents(db, job)


def request_cancel(db: Session, job: Job) -> Job:
    if job.status in TERMINAL_STATUSES:
        raise Conflict(f"Job {job.id} is already {job.status}.")
    job.cancel_requested = True
    if job.status == JobStatus.queued:
        job.status, job.finished_at, job.message = JobStatus.cancelled, utcnow(), "cancelled"
        _stop_dependents(db, job)
    else:
        job.message = "cancelling"
    return job


def _emit_ended(db: Session, job: Job) -> None:
    """The webhook event of a job that just succeeded or failed (in the same transaction as that change)."""
    if job.status in (JobStatus.succeeded, JobStatus.failed):
        emit(db, f"job.{job.status}", job.project_id, job_json(job))


def job_json(job: Job) -> dict:
    """The job as the API, the pages and webhook events show it (its shape: app.jobs.schemas.JobOut)."""
    db = object_session(job)
    return JobOut.of(job, dependencies(db, job.id) if db is not None else []).model_dump(mode="json")
