"""JSON API for dataset snapshots. Admins and engineers only."""

from __future__ import annotations

from fastapi import APIRouter, Query, status
from fastapi.responses import FileResponse
from sqlalchemy import select

from app.auth.deps import Admin, DbSession, Staff
from app.datasets import service
from app.limits import INT4_MAX, Id
from app.models import DatasetSnapshot
from app.projects.service import get_project

router = APIRouter(prefix="/api/v1", tags=["datasets"])


@router.post("/projects/{project_ref}/datasets", status_code=status.HTTP_202_ACCEPTED)
def create_dataset(project_ref: str, body: dict, db: DbSession, principal: Staff):
    """Start an export: returns the snapshot (status `building`) and its `job_id` at once."""
    snapshot = service.request_snapshot(db, get_project(db, project_ref), body, principal.user)
    return service.snapshot_json(snapshot)


@router.get("/datasets")
def list_datasets(db: DbSession, principal: Staff, project_id: Id | None = None,
                  limit: int = Query(200, ge=1, le=1000), offset: int = Query(0, ge=0, le=INT4_MAX)):  # fmt: skip
    query = select(DatasetSnapshot).order_by(DatasetSnapshot.id.desc()).limit(limit).offset(offset)
    if project_id is not None:
        query = query.where(DatasetSnapshot.project_id == project_id)
    return [service.snapshot_json(s) for s in db.scalars(query)]


@router.get("/datasets/{dataset_id}")
def get_dataset(dataset_id: Id, db: DbSession, principal: Staff):
    return service.snapshot_json(service.get_snapshot(db, dataset_id))


@router.get("/datasets/{dataset_id}/files/{name:path}")
def download_file(dataset_id: Id, name: str, db: DbSession, principal: Staff):
    path = service.ready_file(db, dataset_id, name)
    return FileResponse(path, filename=path.name)


@router.delete("/datasets/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(dataset_id: Id, db: DbSession, principal: Admin):
    service.delete_snapshot(db, service.get_snapshot(db, dataset_id), principal.user)
