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
from app.judgments.edits import EditIn
from app.judgments.schemas import JudgmentIn
from app.limits import Id
from app.metrics import inc
from app.models import Assignment, Judgment, Project, User, utcnow
from app.projects.service import current_guidelines
from app.tasks import practice, service
from app.tasks.admin_pages import router as admin_router
from app.tasks.views import LABELS, clipped_markdown, full_text, task_html_context
from app.web import is_htmx, render, render_markdown

router = APIRouter(tags=["pages"])
router.include_router(admin_router)  # edits, practice and pay pages for admins (issue 14)
GUIDELINES_CLIP_CHARS = 100_000
IDLE_GAP_MS = 120_000
"""Active time: a gap between two of the rater's interactions longer than this counts nothing (static/keys.js)."""


QUEUE_LEFT_SHOWN = 1000
"""The rating page counts what is left up to this many and then says "1,000+" (an exact count of a huge queue
would cost a scan on every task)."""


def _project_context(db, project: Project) -> dict:
    return {
        "id": project.id,
        "slug": project.slug,
        "name": project.name,
        "mode": project.mode,
        "allow_ties": project.allow_ties,
        "allow_new_answers": project.allow_new_answers,
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
    if project.practice_required > 0 and service.current_assignment(db, project, user, now=now) is None:
        status = practice.qualification(db, project, user)
        if not status.passed:
            return _practice_response(request, db, project, user, status, flash=flash, error=error,
                                      status_code=status_code)  # fmt: skip
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
            "left_in_queue": (left := service.queue_left_for(db, project.id, user.id, cap=QUEUE_LEFT_SHOWN + 1)),
            "left_shown": f"{QUEUE_LEFT_SHOWN:,}+" if left > QUEUE_LEFT_SHOWN else f"{left:,}",
        },
        "guidelines_changed": _guidelines_changed(db, project, user),
        "flash": flash,
        "error": error,
        "idle_gap_ms": IDLE_GAP_MS,
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
    except (json.JSONDecodeError, RecursionError) as error:  # RecursionError: nested thousands deep
        raise ValueError("The ranking could not be read; rank the options again.") from error
    attributes: dict[str, dict[str, int]] = {}
    for key, value in form.multi_items():
        if key.startswith("attr__") and str(value).strip():
            _, name, option_id = key.split("__", 2)
            attributes.setdefault(name, {})[option_id] = int(value)
    edit_text = str(form.get("edit_text") or "")
    edit = None
    if edit_text.strip():
        parent = str(form.get("edit_parent_id") or "")
        edit = EditIn(text=edit_text, parent_id=int(parent) if parent.isascii() and parent.isdigit() else None)
    return JudgmentIn(
        ranking=ranking,
        attributes=attributes,
        rationale=(form.get("rationale") or "").strip() or None,
        flags=form.getlist("flags"),
        time_spent_ms=_milliseconds(form.get("time_spent_ms")),
        active_ms=_milliseconds(form.get("active_ms")),
        edit=edit,
    )


def _milliseconds(value) -> int | None:
    value = str(value or "")
    return min(int(value), 2**31 - 1) if value.isascii() and value.isdigit() and len(value) < 12 else None


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


# ---- practice items (app.tasks.practice) -----------------------------------------------------------------------


def _practice_response(request: Request, db, project: Project, user: User, status, *, flash=None, error=None,
                       status_code=200):  # fmt: skip
    """A practice item of the qualification, or word that the rater did not qualify."""
    item = practice.next_item(db, project, user)
    context = {
        "project": _project_context(db, project),
        "progress": {"done_today": 0, "left_in_queue": 0, "left_shown": "0"},
        "guidelines_changed": False,
        "flash": flash,
        "error": error,
        "idle_gap_ms": IDLE_GAP_MS,
        "qualification": status,
        "task": None,
    }
    if item is not None:
        context["task"] = task_html_context(db, practice.as_assignment(item, user)) | {
            "practice": True, "url": f"/projects/{project.id}/practice/{item.id}",
            "practice_done": status.answered, "practice_needed": status.required,
        }  # fmt: skip
    fragment = "tasks/_task.html" if item is not None else "tasks/_practice_failed.html"
    return render(request, fragment if is_htmx(request) else "tasks/annotate.html", context, status_code=status_code)


@router.post("/projects/{project_ref}/practice/{comparison_id}")
async def practice_submit(project_ref: str, comparison_id: Id, request: Request, principal: AnyUser):
    """Answer a practice item: the answer is scored against gold and the feedback (expected ranking and its
    explanation) replaces the item; "Continue" asks for the next thing to do."""
    form = await request.form()
    from starlette.concurrency import run_in_threadpool

    def work():
        from app.db import session_scope

        with session_scope(write=True) as db:
            project = service.project_for_rater(db, project_ref, principal.user)
            item = practice.get_item(db, project, comparison_id)
            try:
                data = _judgment_from_form(form)
                answer = practice.answer(db, project, principal.user, item.id, data.ranking,
                                         time_spent_ms=data.time_spent_ms, active_ms=data.active_ms)  # fmt: skip
            except (RankforgeError, ValueError) as error:
                db.rollback()
                message = error.detail if isinstance(error, RankforgeError) else str(error)
                status = practice.qualification(db, project, principal.user)
                return _practice_response(request, db, project, principal.user, status,
                                          error=f"Not saved: {message}", status_code=422)  # fmt: skip
            status = practice.qualification(db, project, principal.user)
            db.commit()
            if not is_htmx(request):
                return RedirectResponse(f"/projects/{project.id}/annotate", status_code=303)
            order = practice.display_order(item, principal.user)
            label = {c: LABELS[i] for i, c in enumerate(order)}

            def said(ranking):
                return " > ".join(" = ".join(sorted(label[c] for c in group)) for group in ranking)

            context = {
                "project": _project_context(db, project),
                "answer": {"score": answer.score, "yours": said(answer.ranking),
                           "expected": said(item.gold_ranking or [item.completion_ids]),
                           "explanation": render_markdown(item.explanation or "")},
                "qualification": status,
            }  # fmt: skip
            return render(request, "tasks/_practice_feedback.html", context)

    return await run_in_threadpool(work)


@router.get("/projects/{project_ref}/practice/{comparison_id}/full/{part}")
def practice_full_text(project_ref: str, comparison_id: Id, part: str, request: Request, db: DbSession,
                       principal: AnyUser):  # fmt: skip
    """The whole of a clipped text of a practice item, as plain text (htmx fragment)."""
    project = service.project_for_rater(db, project_ref, principal.user)
    item = practice.get_item(db, project, comparison_id)
    text = full_text(db, practice.as_assignment(item, principal.user), part)
    if text is None:
        raise NotFound(f"No text {part!r} in this practice item.")
    return render(request, "tasks/_full_text.html", {"text": text})
