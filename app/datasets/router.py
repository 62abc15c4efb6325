"""JSON API for dataset snapshots. Admins and engineers only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response, status
from fastapi.responses import FileResponse

from app.api import Paging, newest_first, paging
from app.auth.deps import Admin, DbSession, Staff
from app.datasets import service
from app.datasets.schemas import DatasetCreate, DatasetOut
from app.limits import Id
from app.models import DatasetSnapshot
from app.projects.service import get_project

router = APIRouter(prefix="/api/v1", tags=["datasets"])


@router.post("/projects/{project_ref}/datasets", status_code=status.HTTP_202_ACCEPTED, response_model=DatasetOut)
def create_dataset(project_ref: str, body: DatasetCreate, db: DbSession, principal: Staff):
    """Start an export: returns the snapshot (status `building`) and its `job_id` at once."""
    spec = body.model_dump(mode="json", exclude_unset=True)  # as sent: the service fills the defaults
    snapshot = service.request_snapshot(db, get_project(db, project_ref), spec, principal.user)
    return service.snapshot_json(snapshot)


@router.get("/datasets", response_model=list[DatasetOut])
def list_datasets(db: DbSession, principal: Staff, response: Response, page: Annotated[Paging, paging(200, 1000)],
                  project_id: Id | None = None):  # fmt: skip
    """Newest first."""
    snapshots, total = page.rows(db, newest_first(DatasetSnapshot, project_id))
    page.header(response, total)
    return [service.snapshot_json(s) for s in snapshots]


@router.get("/datasets/{dataset_id}", response_model=DatasetOut)
def get_dataset(dataset_id: Id, db: DbSession, principal: Staff):
    return service.snapshot_json(service.get_snapshot(db, dataset_id))


@router.get("/datasets/{dataset_id}/files/{name:path}", response_class=FileResponse,
            responses={200: {"description": "The file's bytes (JSONL, Parquet, manifest.json, ...).",
                             "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                 "format": "binary"}}}}})  # fmt: skip
def download_file(dataset_id: Id, name: str, db: DbSession, principal: Staff):
    return service.ready_download(db, dataset_id, name)


@router.delete("/datasets/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(dataset_id: Id, db: DbSession, principal: Admin):
    service.delete_snapshot(db, service.get_snapshot(db, dataset_id), principal.user)
