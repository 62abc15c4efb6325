"""JSON API for jobs."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from app.auth.deps import DbSession, Staff
from app.errors import Unprocessable
from app.jobs import service
from app.models import Job, JobKind, JobMetric
from app.projects.service import get_project

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


class JobCreate(BaseModel):
    kind: JobKind
    project_id: int | str
    dataset_id: int | None = None
    base_model: int | str | None = Field(default=None, description="Model version id or name (default: newest policy).")
    reward_model: int | str | None = Field(default=None, description="Reward version id or name (ppo/grpo/rloo).")
    params: dict = {}


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def create_job(data: JobCreate, db: DbSession, principal: Staff):
    project = get_project(db, data.project_id)
    if data.kind == JobKind.export:
        from app.datasets.service import request_snapshot

        snapshot = request_snapshot(db, project, data.params, principal.user)
        return service.job_json(service.get_job(db, snapshot.job_id))
    try:
        from app.jobs.training import create_training_job
    except ModuleNotFoundError as error:
        raise Unprocessable(f"Job kind {data.kind} is not available in this installation.") from error
    job = create_training_job(db, project, data.kind, dataset_id=data.dataset_id, base_model=data.base_model,
                              reward_model=data.reward_model, params=data.params, actor=principal.user)  # fmt: skip
    return service.job_json(job)


@router.get("")
def list_jobs(db: DbSession, principal: Staff, project_id: int | None = None, limit: int = 50, offset: int = 0):
    query = select(Job).order_by(Job.id.desc()).limit(min(limit, 500)).offset(max(offset, 0))
    if project_id is not None:
        query = query.where(Job.project_id == project_id)
    return [service.job_json(job) for job in db.scalars(query)]


@router.get("/{job_id}")
def get_job(job_id: int, db: DbSession, principal: Staff):
    return service.job_json(service.get_job(db, job_id))


@router.get("/{job_id}/metrics")
def job_metrics(job_id: int, db: DbSession, principal: Staff):
    service.get_job(db, job_id)
    rows = db.scalars(select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.step, JobMetric.id))
    return [{"step": row.step, "metrics": row.values, "at": row.created_at.isoformat()} for row in rows]


@router.post("/{job_id}/cancel")
def cancel_job(job_id: int, db: DbSession, principal: Staff):
    return service.job_json(service.request_cancel(db, service.get_job(db, job_id)))
