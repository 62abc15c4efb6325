"""JSON API of the model registry."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Response, status
from fastapi.responses import StreamingResponse
from pydantic import Field

from app.api import PageAll
from app.auth.deps import DbSession, Staff
from app.errors import NotFound
from app.limits import CleanStr, Id, Input, varchar
from app.models import ModelVersion, Project
from app.projects.service import get_project
from app.registry import service
from app.registry.schemas import ModelFilesOut, ModelVersionDetail, ModelVersionOut
from app.store import download_response, open_location

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


def _version_artifact(version: ModelVersion):
    """The version's files in the artifact store (app.store); 404 for one served by an endpoint (no files here)."""
    if urlsplit(version.path).scheme in ("http", "https"):
        raise NotFound(f"Model version {version.name!r} is served by an endpoint; it has no files here.")
    return open_location(version.path)


@router.get("/{version_id}/files", response_model=ModelFilesOut)
def model_files(version_id: Id, db: DbSession, principal: Staff, page: PageAll):
    """The version's files as its store manifest lists them (`sha256`, `bytes`; `sha256` overall: the SHA-256 of
    the lines "name\\0file sha256\\n" sorted by name), each with a `url` to download it: a presigned URL where the
    store signs them (S3), else this API's streaming download."""
    version = service.get_version(db, version_id)
    artifact = _version_artifact(version)
    manifest = artifact.manifest()
    files = [{"name": name, **entry,
              "url": artifact.presigned_url(name) or f"/api/v1/models/{version.id}/files/{quote(name)}"}
             for name, entry in sorted(manifest["files"].items())]  # fmt: skip
    end = None if page.limit is None else page.offset + page.limit
    return {"id": version.id, "location": version.path, "sha256": manifest["sha256"],
            "files": files[page.offset:end], **page.fields(len(files))}  # fmt: skip


@router.get("/{version_id}/files/{name:path}", response_class=StreamingResponse,
            responses={200: {"description": "The file's bytes, streamed from the artifact store.",
                             "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                 "format": "binary"}}}}})  # fmt: skip
def download_model_file(version_id: Id, name: str, db: DbSession, principal: Staff):
    """One file of the version, streamed (nothing whole in memory)."""
    version = service.get_version(db, version_id)
    return download_response(_version_artifact(version).location, name)
