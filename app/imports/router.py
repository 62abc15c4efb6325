"""JSON API for imports: `POST /api/v1/projects/{id}/import` (a JSONL body or a multipart file)."""

from __future__ import annotations

import tempfile
from typing import BinaryIO

from fastapi import APIRouter, Query, Request, UploadFile

from app.auth.deps import Admin
from app.errors import BadRequest, PayloadTooLarge
from app.imports.parsers import FORMATS, spooled_size
from app.imports.service import import_stream
from app.projects.schemas import ImportResult
from app.projects.service import get_project

router = APIRouter(prefix="/api/v1/projects", tags=["projects"])


SPOOL_IN_MEMORY = 2**20
"""An upload up to this size stays in memory; a larger one is spooled to a temporary file as it arrives."""


async def spool_upload(request: Request, max_bytes: int) -> BinaryIO:
    """The import file, at its start, as a binary file to read line by line: a multipart `file` field (Starlette
    spools it while parsing the form) or the raw request body (JSONL), spooled here chunk by chunk; never joined
    into one bytes in memory. Larger than `max_bytes`: 413 (the body limit of app.bodylimit comes first)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_part_size=max_bytes + 1)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadRequest("Send the file in a multipart field named 'file', or as the request body.")
        return uploaded_file(upload, max_bytes)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (the caller closes it)
    try:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"The file is larger than the limit of {max_bytes} bytes.")
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def uploaded_file(upload: UploadFile, max_bytes: int) -> BinaryIO:
    """A multipart upload's spooled file, at its start, once its size is known to be within `max_bytes`."""
    if spooled_size(upload.file) > max_bytes:
        raise PayloadTooLarge(f"The file is larger than the limit of {max_bytes} bytes.")
    return upload.file


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
    source = await spool_upload(request, max_bytes)

    def work() -> ImportResult:
        with session_scope(write=True) as db:
            project = get_project(db, project_ref)
            return import_stream(db, project, source, format, principal.user, gold=gold)

    try:
        return await run_in_threadpool(work)
    finally:
        source.close()
