"""The step-labelling page: one trajectory at a time, labelled by keyboard (static/steps.js) or by clicking.

The form posts one ``label-<i>`` (good / bad / neutral) per step, ``tag-<i>`` values (failure tags), ``first_error``
(a step index or empty) and ``time_spent_ms``; a rewrite of one step posts to ``.../branch``."""

from __future__ import annotations

import json

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from app.auth.deps import Admin, AnyUser, DbSession
from app.conversation_view import message_views
from app.conversation_view import steps as conversation_steps
from app.errors import RankforgeError
from app.limits import Id, parse_id
from app.models import Role
from app.projects.service import get_visible_project, may_rate
from app.steps import service
from app.steps.labels import STEP_LABELS, project_tags, step_messages
from app.web import render

router = APIRouter(tags=["pages"])


def _project(db, project_ref: str, user):
    from app.errors import Forbidden

    project = get_visible_project(db, project_ref, user)
    if not may_rate(db, project, user):
        raise Forbidden("You are not a member of this project.")
    return project


def _step_view(step) -> dict:
    """What the rewrite box starts from: the step's tool calls as editable JSON."""
    return {"edit_calls": json.dumps([{"function": c["function"]} for c in step.tool_calls], indent=2,
                                     ensure_ascii=False) if step.tool_calls else ""}


def _page(request, db, project, user, trajectory=None, *, error=None, flash=None, status_code=200, form=None):
    context = {"project": project, "request": request, "error": error, "flash": flash, "trajectory": None,
               "labels": STEP_LABELS, "tags": project_tags(project.step_tags), "done": None, "form": form or {},
               "staff": user.role in (Role.admin, Role.engineer)}  # fmt: skip
    if trajectory is None:
        trajectory = service.next_trajectory(db, project, user)
    if trajectory is not None:
        existing = service.rater_judgment(db, trajectory.completion.id, user)
        flat = [message for step in trajectory.steps for message in step_messages(step)]
        step_views = conversation_steps(message_views(flat, f"option-{trajectory.completion.id}"))
        context |= {"trajectory": trajectory, "steps": [_step_view(s) for s in trajectory.steps], "step_views": step_views,
                    "history_views": message_views(trajectory.history, "prompt"),
                    "done": existing and service.judgment_json(existing)}  # fmt: skip
    return render(request, "steps/label.html", context, status_code=status_code)


@router.get("/projects/{project_ref}/steps")
def steps_page(project_ref: str, request: Request, principal: AnyUser, trajectory: str | None = None,
               saved: str | None = None):  # fmt: skip
    from app.db import session_scope

    with session_scope() as db:
        project = _project(db, project_ref, principal.user)
        chosen = None
        if trajectory is not None:
            completion_id = parse_id(trajectory)
            if completion_id is None:
                return _page(request, db, project, principal.user, error="No such trajectory.", status_code=404)
            try:
                chosen = service.load_trajectory(db, project, completion_id)
            except RankforgeError as error:
                return _page(request, db, project, principal.user, error=error.detail, status_code=error.status_code)
        flash = {"labels": "Saved.", "again": "Already saved: your first labels stand.", "tags": "Failure tags saved.",
                 "branch": "Branch started: label the rewritten trajectory."}.get(saved or "")  # fmt: skip
        return _page(request, db, project, principal.user, chosen, flash=flash)


def _labels_from_form(form, n_steps: int, tags: list[str]) -> tuple[list[dict], int | None, int | None]:
    labels = []
    for i in range(n_steps):
        label = str(form.get(f"label-{i}", "")).strip() or None
        labels.append({"label": label, "tags": [str(t) for t in form.getlist(f"tag-{i}")][:len(tags) + 1]})
    raw = str(form.get("first_error", "")).strip()
    first_error = None if raw in ("", "none") else (int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 6 else -1)
    spent = str(form.get("time_spent_ms", ""))
    time_spent = min(int(spent), 2**31 - 1) if spent.isascii() and spent.isdigit() and len(spent) < 12 else None
    return labels, first_error, time_spent


@router.post("/projects/{project_ref}/steps/{completion_id}")
async def submit_steps_page(project_ref: str, completion_id: Id, request: Request, principal: AnyUser):
    form = await request.form()
    return await run_in_threadpool(_submit, project_ref, completion_id, request, principal, form)


def _submit(project_ref, completion_id, request, principal, form):
    from app.db import session_scope

    with session_scope() as db:
        project = _project(db, project_ref, principal.user)
        trajectory = service.load_trajectory(db, project, completion_id)
        labels, first_error, spent = _labels_from_form(form, len(trajectory.steps), project_tags(project.step_tags))
        try:
            if first_error == -1:
                from app.errors import Unprocessable

                raise Unprocessable("first_error must be a step number.")
            _, created = service.submit_labels(db, project, principal.user, completion_id, labels, first_error, spent)
        except RankforgeError as error:
            db.rollback()
            return _page(request, db, project, principal.user, trajectory, error=f"Not saved: {error.detail}",
                         status_code=error.status_code, form=dict(form.multi_items()))  # fmt: skip
        db.commit()
        return RedirectResponse(f"/projects/{project.slug}/steps?saved={'labels' if created else 'again'}",
                                status_code=303)  # fmt: skip


@router.post("/projects/{project_ref}/steps/{completion_id}/branch")
async def branch_page(project_ref: str, completion_id: Id, request: Request, principal: AnyUser):
    form = await request.form()
    return await run_in_threadpool(_branch, project_ref, completion_id, request, principal, form)


def _branch(project_ref, completion_id, request, principal, form):
    from app.db import session_scope
    from app.errors import Unprocessable

    with session_scope() as db:
        project = _project(db, project_ref, principal.user)
        trajectory = service.load_trajectory(db, project, completion_id)
        try:
            step = parse_id(str(form.get("step", "")) or "x")
            step = None if step is None and str(form.get("step")) != "0" else (step or 0)
            if step is None:
                raise Unprocessable("Which step is rewritten? (step missing)")
            content = str(form.get("content", ""))[:100_000].replace("\r\n", "\n")
            raw_calls = str(form.get("tool_calls", "")).strip()
            try:
                calls = json.loads(raw_calls) if raw_calls else None
            except json.JSONDecodeError as error:
                raise Unprocessable(f"The tool calls are not valid JSON: {error.msg} (line {error.lineno})") from error
            if calls is not None and not isinstance(calls, list):
                raise Unprocessable("The tool calls must be a JSON list of calls.")
            completion = service.branch(db, project, principal.user, completion_id, step, content, calls)
        except RankforgeError as error:
            db.rollback()
            return _page(request, db, project, principal.user, trajectory, error=f"Not branched: {error.detail}",
                         status_code=error.status_code)  # fmt: skip
        db.commit()
        return RedirectResponse(f"/projects/{project.slug}/steps?trajectory={completion.id}&saved=branch",
                                status_code=303)  # fmt: skip


@router.post("/projects/{project_ref}/step-tags")
def step_tags_page(project_ref: str, db: DbSession, principal: Admin, tags: str = Form("", max_length=5_000)):
    """The project's failure tags, one a line (admins)."""
    from app.projects.service import get_project

    project = get_project(db, project_ref)
    service.set_step_tags(db, project, tags.splitlines(), principal.user)
    return RedirectResponse(f"/projects/{project.slug}/steps?saved=tags", status_code=303)
