"""JSON API for jobs of every kind: list, read, metrics, cancel. Starting one (`POST /api/v1/jobs`) lives with
training (app.training.router), the domain that knows the kinds."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy import select

from app.auth.deps import DbSession, Staff
from app.jobs import service
from app.limits import INT4_MAX, Id
from app.models import Job, JobMetric

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


@router.get("")
def list_jobs(db: DbSession, principal: Staff, project_id: Id | None = None,
              limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=INT4_MAX)):  # fmt: skip
    query = select(Job).order_by(Job.id.desc()).limit(limit).offset(offset)
    if project_id is not None:
        query = query.where(Job.project_id == project_id)
    return [service.job_json(job) for job in db.scalars(query)]


@router.get("/{job_id}")
def get_job(job_id: Id, db: DbSession, principal: Staff):
    return service.job_json(service.get_job(db, job_id))


@router.get("/{job_id}/metrics")
def job_metrics(job_id: Id, db: DbSession, principal: Staff):
    service.get_job(db, job_id)
    rows = db.scalars(select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.step, JobMetric.id))
    return [{"step": row.step, "metrics": row.values, "at": row.created_at.isoformat()} for row in rows]


@router.post("/{job_id}/cancel")
def cancel_job(job_id: Id, db: DbSession, principal: Staff):
    return service.job_json(service.request_cancel(db, service.get_job(db, job_id)))


@router.post("/{job_id}/retry")
def retry_job(job_id: Id, db: DbSession, principal: Staff):
    """A failed or cancelled job back in the queue, with the jobs waiting on it that its failure stopped."""
    job = service.get_job(db, job_id)
    service.retry(db, job)
    return service.job_json(job)
