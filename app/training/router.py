"""`POST /api/v1/jobs`: start a job of any kind (same URL and shape as before): an export through the datasets
domain, every trainer kind through training.service."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import Field

from app.auth.deps import DbSession, Staff
from app.datasets.service import request_snapshot
from app.jobs import service
from app.limits import Id, Input, varchar
from app.models import JobKind, ModelVersion, Project
from app.projects.service import get_project
from app.training.service import create_training_job

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


ModelRef = Id | varchar(ModelVersion.name)


class JobCreate(Input):
    kind: JobKind
    project_id: Id | varchar(Project.slug)
    dataset_id: Id | None = None
    base_model: ModelRef | None = Field(default=None, description="Model version id or name (default: newest policy).")
    reward_model: ModelRef | None = Field(default=None, description="Reward version id or name (ppo/grpo/rloo).")
    params: dict = {}


@router.post("", status_code=status.HTTP_202_ACCEPTED)
def create_job(data: JobCreate, db: DbSession, principal: Staff):
    project = get_project(db, data.project_id)
    if data.kind == JobKind.export:
        snapshot = request_snapshot(db, project, data.params, principal.user)
        return service.job_json(service.get_job(db, snapshot.job_id))
    job = create_training_job(db, project, data.kind, dataset_id=data.dataset_id, base_model=data.base_model,
                              reward_model=data.reward_model, params=data.params, actor=principal.user)  # fmt: skip
    return service.job_json(job)
