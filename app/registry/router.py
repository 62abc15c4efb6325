"""JSON API of the model registry."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import Field

from app.api import PageAll
from app.auth.deps import DbSession, Staff
from app.limits import CleanStr, Id, Input, varchar
from app.models import ModelVersion, Project
from app.projects.service import get_project
from app.registry import service
from app.registry.schemas import ModelVersionDetail, ModelVersionOut

router = APIRouter(prefix="/api/v1/models", tags=["models"])


class ModelCreate(Input):
    name: varchar(ModelVersion.name) = Field(min_length=1, description="Unique name, e.g. llama-1b-sft")
    path: varchar(ModelVersion.path) = Field(description="A local Hugging Face checkpoint directory (config.json inside), or a LoRA adapter directory (adapter_config.json) on a registered base")
    kind: varchar(ModelVersion.kind) = Field(description="policy, reward or prm (a process reward model)")
    project_id: Id | varchar(Project.slug) | None = None


@router.get("", response_model=list[ModelVersionOut])
def list_models(db: DbSession, principal: Staff, response: Response, page: PageAll, kind: CleanStr | None = None,
                project_id: Id | None = None):  # fmt: skip
    """Newest first."""
    versions = service.list_versions(db, kind=kind, project_id=project_id)
    page.header(response, len(versions))
    return [service.version_json(v) for v in page.slice(versions)]


@router.get("/{version_id}", response_model=ModelVersionDetail)
def get_model(version_id: Id, db: DbSession, principal: Staff):
    version = service.get_version(db, version_id)
    return service.version_json(version) | {"manifest": version.manifest or {}}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelVersionOut)
def add_model(data: ModelCreate, db: DbSession, principal: Staff):
    project = get_project(db, data.project_id) if data.project_id is not None else None
    version = service.register_version(
        db, data.name, data.path, data.kind, project=project, actor=principal.user
    )
    return service.version_json(version)
