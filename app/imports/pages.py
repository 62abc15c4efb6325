"""The import form's target on a project's admin page: the result (or every line's problem) as a fragment."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request, UploadFile

from app.auth.deps import Admin
from app.errors import ImportValidationError
from app.imports.parsers import SNIFF_BYTES, check_file_size, detect_formats, spooled_size
from app.imports.service import import_stream
from app.projects.service import get_project
from app.web import is_htmx, render

router = APIRouter(tags=["pages"])


def grouped_errors(errors: list) -> list[dict]:
    """Line errors with the same message as one entry with its lines ({lines: [..], message}), first seen first."""
    groups: dict[str, list[int]] = {}
    for error in errors:
        groups.setdefault(error.message, []).append(error.line)
    return [{"lines": lines, "message": message} for message, lines in groups.items()]


@router.post("/projects/{project_ref}/import")
async def import_page(project_ref: str, request: Request, principal: Admin, file: UploadFile,
                      format: str = Form("native"), gold: bool = Form(False)):  # fmt: skip
    from starlette.concurrency import run_in_threadpool

    from app.config import get_settings
    from app.db import session_scope

    max_bytes = get_settings().max_import_bytes
    source = file.file  # spooled to a temporary file by Starlette; read line by line, never whole

    def work():
        check_file_size(spooled_size(source), max_bytes, format)
        with session_scope(write=True) as db:
            project = get_project(db, project_ref)
            return project.id, import_stream(db, project, source, format, principal.user, gold=gold)

    try:
        project_id, result = await run_in_threadpool(work)
        context = {"result": result, "import_errors": None, "message": None}
        status_code = 200
    except ImportValidationError as error:
        source.seek(0)
        head = source.read(SNIFF_BYTES)
        context = {"result": None, "import_errors": grouped_errors(error.errors),
                   "message": f"The file has {error.total:,} problem{'' if error.total == 1 else 's'} as {format}.",
                   "suggested": detect_formats(head, format), "tried": format}  # fmt: skip
        status_code = 422
    finally:
        source.close()
    template = "projects/_import_result.html"
    if is_htmx(request):
        return render(request, template, context, status_code=status_code)
    return render(request, "projects/import_done.html", context | {"project_ref": project_ref}, status_code=status_code)
