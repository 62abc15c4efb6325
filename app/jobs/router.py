"""JSON API for jobs of every kind: list, read, metrics, cancel. Starting one (`POST /api/v1/jobs`) lives with
training (app.training.router), the domain that knows the kinds."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from sqlalchemy import select

from app.api import Paging, newest_first, paging
from app.auth.deps import DbSession, Staff
from app.jobs import service
from app.jobs.schemas import JobMetricOut, JobOut
from app.limits import Id
from app.models import Job, JobMetric

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


@router.get("", response_model=list[JobOut])
def list_jobs(db: DbSession, principal: Staff, response: Response, page: Annotated[Paging, paging(50, 500)],
              project_id: Id | None = None):  # fmt: skip
    """Newest first."""
    jobs, total = page.rows(db, newest_first(Job, project_id))
    page.header(response, total)
    return [service.job_json(job) for job in jobs]


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: Id, db: DbSession, principal: Staff):
    return service.job_json(service.get_job(db, job_id))


@router.get("/{job_id}/metrics", response_model=list[JobMetricOut])
def job_metrics(job_id: Id, db: DbSession, principal: Staff, response: Response,
                page: Annotated[Paging, paging(None, 100_000)]):  # fmt: skip
    """Per-step metrics in step order (no `limit`: every row)."""
    service.get_job(db, job_id)
    rows, total = page.rows(db, select(JobMetric).where(JobMetric.job_id == job_id)
                            .order_by(JobMetric.step, JobMetric.id))  # fmt: skip
    page.header(response, total)
    return [{"step": row.step, "metrics": row.values, "at": row.created_at} for row in rows]


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: Id, db: DbSession, principal: Staff):
    return service.job_json(service.request_cancel(db, service.get_job(db, job_id)))


@router.post("/{job_id}/retry", response_model=JobOut)
def retry_job(job_id: Id, db: DbSession, principal: Staff):
    """A failed or cancelled job back in the queue, with the jobs waiting on it that its failure stopped."""
    job = service.get_job(db, job_id)
    service.retry(db, job)
    return service.job_json(job)
