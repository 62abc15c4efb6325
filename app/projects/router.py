"""JSON API for projects and imports."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, status

from app.auth.deps import Admin, AnyUser, DbSession, Staff
from app.errors import BadRequest, PayloadTooLarge
from app.imports.service import import_file
from app.projects import service
from app.projects.schemas import ImportResult, ProjectCreate, ProjectOut, ProjectUpdate

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])

IMPORT_FORMATS = ("native", "trl", "hh-rlhf", "oasst")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ProjectOut)
def create_project(data: ProjectCreate, db: DbSession, principal: Admin):
    return service.create_project(db, data, principal.user)


@router.get("", response_model=list[ProjectOut])
def list_projects(db: DbSession, principal: AnyUser, limit: int | None = Query(None, ge=1, le=1000),
                  offset: int = Query(0, ge=0)):  # fmt: skip
    """Projects by id; `limit`/`offset` page (no limit: all)."""
    return service.visible_projects(db, principal.user)[offset : offset + limit if limit else None]


@router.get("/{project_ref}", response_model=ProjectOut)
def get_project(project_ref: str, db: DbSession, principal: AnyUser):
    return service.get_visible_project(db, project_ref, principal.user)


@router.patch("/{project_ref}", response_model=ProjectOut)
def update_project(project_ref: str, data: ProjectUpdate, db: DbSession, principal: Admin):
    project = service.get_project(db, project_ref)
    return service.update_project(db, project, data, principal.user)


@router.get("/{project_ref}/stats")
def project_stats(project_ref: str, db: DbSession, principal: Staff):
    from app.quality.service import project_stats as compute

    return compute(db, service.get_project(db, project_ref))


async def read_upload(request: Request, max_bytes: int) -> bytes:
    """The import file: a multipart `file` field or the raw request body (JSONL)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_part_size=max_bytes + 1)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadRequest("Send the file in a multipart field named 'file', or as the request body.")
        data = await upload.read(max_bytes + 1)
    else:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_bytes:
                break
        data = bytes(data)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"The file is larger than the limit of {max_bytes} bytes.")
    return data


@router.post("/{project_ref}/import", response_model=ImportResult)
async def import_into_project(
    project_ref: str,
    request: Request,
    principal: Admin,
    format: str = Query("native", description=f"One of {', '.join(IMPORT_FORMATS)}"),
    gold: bool = Query(False, description="Rankings in the file make gold items instead of imported judgments."),
):
    from starlette.concurrency import run_in_threadpool

    from app.config import get_settings
    from app.db import session_scope

    max_bytes = get_settings().max_import_bytes
    data = await read_upload(request, max_bytes)

    def work() -> ImportResult:
        with session_scope(write=True) as db:
            project = service.get_project(db, project_ref)
            return import_file(db, project, data, format, principal.user, gold=gold, max_bytes=max_bytes)

    return await run_in_threadpool(work)
