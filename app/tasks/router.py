"""JSON API for the rating loop: next task, judgment, skip."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.auth.deps import AnyUser, DbSession
from app.judgments import service as judgments
from app.judgments.schemas import JudgmentIn, JudgmentOut, SkipIn
from app.metrics import inc
from app.projects.service import get_visible_project
from app.tasks import service
from app.tasks.views import task_json

router = APIRouter(prefix="/api/v1", tags=["tasks"])


@router.get(
    "/projects/{project_ref}/tasks/next",
    responses={204: {"description": "Nothing left for you in this project."}},
)
def next_task(project_ref: str, db: DbSession, principal: AnyUser):
    project = get_visible_project(db, project_ref, principal.user)
    assignment = service.claim_next(db, project, principal.user)
    if assignment is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return task_json(db, assignment)


@router.post("/assignments/{assignment_id}/judgment", response_model=JudgmentOut)
def submit_judgment(assignment_id: int, data: JudgmentIn, response: Response, db: DbSession, principal: AnyUser):
    judgment, created = judgments.submit(db, assignment_id, principal.user, data)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    if created:
        inc("judgments_submitted_total")
    return judgment


@router.post("/assignments/{assignment_id}/skip")
def skip_assignment(assignment_id: int, data: SkipIn, db: DbSession, principal: AnyUser):
    assignment = judgments.skip(db, assignment_id, principal.user, data.reason)
    return {"assignment_id": assignment.id, "state": assignment.state}
