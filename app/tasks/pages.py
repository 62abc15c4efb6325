"""The rating page. One URL serves the page or, for htmx, the task fragment; a submit answers with
the next task in place."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from app.auth.deps import AnyUser, DbSession
from app.errors import NotFound, RankforgeError
from app.judgments import service as judgments
from app.judgments.schemas import JudgmentIn
from app.limits import Id
from app.metrics import inc
from app.models import Assignment, Judgment, Project, User, utcnow
from app.projects.service import current_guidelines
from app.tasks import service
from app.tasks.views import clipped_markdown, full_text, task_html_context
from app.web import is_htmx, render

router = APIRouter(tags=["pages"])
GUIDELINES_CLIP_CHARS = 100_000


def _project_context(db, project: Project) -> dict:
    return {
        "id": project.id,
        "name": project.name,
        "mode": project.mode,
        "allow_ties": project.allow_ties,
        "attributes": project.attributes,
        "guidelines": clipped_markdown(current_guidelines(db, project).body, GUIDELINES_CLIP_CHARS),
        "guideline_version": project.guideline_version,
    }


def _guidelines_changed(db, project: Project, user: User) -> bool:
    last = db.scalar(
        select(Judgment.guideline_version)
        .where(Judgment.project_id == project.id, Judgment.rater_id == user.id)
        .order_by(Judgment.id.desc())
        .limit(1)
    )
    return last is not None and last < project.guideline_version


def _task_response(request: Request, db, project: Project, user: User, *, claim: bool = True, flash=None, error=None,
                   status_code=200):  # fmt: skip
    """The rating page or its task fragment. claim=False (GET): show the rater's current lease if any, else a
    placeholder that claims through a POST once a browser runs it; a GET never takes a lease (prefetchers and
    link previews follow GETs)."""
    now = utcnow()
    if claim:
        try:
            assignment = service.claim_next(db, project, user)
        except RankforgeError as refusal:  # e.g. the daily cap
            assignment, error = None, str(refusal.detail)
    else:
        assignment = service.current_assignment(db, project, user, now=now)
    claiming = assignment is None and not claim
    context = {
        "claiming": claiming,
        "project": _project_context(db, project),
        "task": task_html_context(db, assignment) if assignment else None,
        "progress": {
            "done_today": service.judgments_today(db, project.id, user.id, now),
            "left_in_queue": service.queue_left_for(db, project.id, user.id),
        },
        "guidelines_changed": _guidelines_changed(db, project, user),
        "flash": flash,
        "error": error,
    }
    fragment = "tasks/_task.html" if assignment else "tasks/_claim.html" if claiming else "tasks/_empty.html"
    name = fragment if is_htmx(request) else "tasks/annotate.html"
    return render(request, name, context, status_code=status_code)


@router.get("/projects/{project_ref}/annotate")
def annotate_page(project_ref: str, request: Request, db: DbSession, principal: AnyUser):
    project = service.project_for_rater(db, project_ref, principal.user)
    return _task_response(request, db, project, principal.user, claim=False)


@router.post("/projects/{project_ref}/annotate/next")
def claim_page(project_ref: str, request: Request, db: DbSession, principal: AnyUser):
    """Claim the next task (the rating page asks with htmx when it has none); a plain form post is redirected
    to the page, which then shows the lease."""
    project = service.project_for_rater(db, project_ref, principal.user)
    if not is_htmx(request):
        service.claim_next(db, project, principal.user)
        return RedirectResponse(f"/projects/{project.id}/annotate", status_code=303)
    return _task_response(request, db, project, principal.user)


def _judgment_from_form(form) -> JudgmentIn:
    try:
        ranking = json.loads(form.get("ranking") or "[]")
    except json.JSONDecodeError as error:
        raise ValueError("The ranking could not be read; rank the options again.") from error
    attributes: dict[str, dict[str, int]] = {}
    for key, value in form.multi_items():
        if key.startswith("attr__") and str(value).strip():
            _, name, option_id = key.split("__", 2)
            attributes.setdefault(name, {})[option_id] = int(value)
    time_spent = form.get("time_spent_ms")
    return JudgmentIn(
        ranking=ranking,
        attributes=attributes,
        rationale=(form.get("rationale") or "").strip() or None,
        flags=form.getlist("flags"),
        time_spent_ms=int(time_spent) if time_spent and str(time_spent).isdigit() else None,
    )


@router.post("/projects/{project_ref}/annotate/{assignment_id}")
async def submit_page(project_ref: str, assignment_id: Id, request: Request, principal: AnyUser):
    form = await request.form()
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_submit, project_ref, assignment_id, request, principal, form)


def _submit(project_ref, assignment_id, request, principal, form):
    from pydantic import ValidationError

    from app.db import session_scope

    with session_scope() as db:
        project = service.project_for_rater(db, project_ref, principal.user)
        try:
            data = _judgment_from_form(form)
            _, created = judgments.submit(db, assignment_id, principal.user, data)
        except (RankforgeError, ValidationError, ValueError) as error:
            db.rollback()
            message = error.detail if isinstance(error, RankforgeError) else str(error)
            return _task_response(request, db, project, principal.user, error=f"Not saved: {message}", status_code=422)
        if created:
            inc("judgments_submitted_total")
        db.commit()
        return _task_response(request, db, project, principal.user, flash="Saved." if created else "Already saved.")


@router.post("/projects/{project_ref}/annotate/{assignment_id}/skip")
async def skip_page(project_ref: str, assignment_id: Id, request: Request, principal: AnyUser):
    form = await request.form()
    from starlette.concurrency import run_in_threadpool

    def work():
        from app.db import session_scope

        with session_scope() as db:
            project = service.project_for_rater(db, project_ref, principal.user)
            judgments.skip(db, assignment_id, principal.user, str(form.get("reason") or ""))
            db.commit()
            return _task_response(request, db, project, principal.user, flash="Skipped.")

    return await run_in_threadpool(work)


@router.get("/projects/{project_ref}/annotate/{assignment_id}/full/{part}")
def full_text_fragment(project_ref: str, assignment_id: Id, part: str, request: Request, db: DbSession,
                       principal: AnyUser):  # fmt: skip
    """The whole of a clipped prompt or completion of the caller's own assignment, as plain text (htmx fragment)."""
    project = service.project_for_rater(db, project_ref, principal.user)
    assignment = db.get(Assignment, assignment_id)
    if assignment is None or assignment.rater_id != principal.user.id or assignment.project_id != project.id:
        raise NotFound(f"No assignment {assignment_id} of yours in this project.")
    text = full_text(db, assignment, part)
    if text is None:
        raise NotFound(f"No text {part!r} in this assignment.")
    return render(request, "tasks/_full_text.html", {"text": text})


@router.get("/projects/{project_ref}/guidelines/full")
def full_guidelines_fragment(project_ref: str, request: Request, db: DbSession, principal: AnyUser):
    """The project's whole current guidelines as plain text (htmx fragment), when the page shows only their start."""
    project = service.project_for_rater(db, project_ref, principal.user)
    return render(request, "tasks/_full_text.html", {"text": current_guidelines(db, project).body})
