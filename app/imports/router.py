"""JSON API for imports: `POST /api/v1/projects/{id}/import` (a JSONL body or a multipart file)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from app.auth.deps import Admin
from app.errors import BadRequest, PayloadTooLarge
from app.imports.parsers import FORMATS
from app.imports.service import import_file
from app.projects.schemas import ImportResult
from app.projects.service import get_project

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


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
    format: str = Query("native", description=f"One of {', '.join(FORMATS)}"),
    gold: bool = Query(False, description="Rankings in the file make gold items instead of imported judgments."),
):
    from starlette.concurrency import run_in_threadpool

    from app.config import get_settings
    from app.db import session_scope

    max_bytes = get_settings().max_import_bytes
    data = await read_upload(request, max_bytes)

    def work() -> ImportResult:
        with session_scope(write=True) as db:
            project = get_project(db, project_ref)
            return import_file(db, project, data, format, principal.user, gold=gold, max_bytes=max_bytes)

    return await run_in_threadpool(work)
