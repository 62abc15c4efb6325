"""JSON API for the rating loop: next task, judgment, skip.

These run on every judgment, so each is one sync function: authentication, the work and the commit
happen in one threadpool hop and one transaction (`require_in_endpoint`), and the answer is built
before the hop ends. With `require(...)` and `DbSession` a request took four hops, each queueing
behind every other request under load. Locks are released by the commit at the end of the `with`
block, inside the hop, so no request holding row locks ever waits for a thread.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse

from app.auth.deps import authenticate, request_session, require_in_endpoint
from app.errors import Forbidden
from app.judgments import service as judgments
from app.judgments.schemas import JudgmentIn, JudgmentOut, SkipIn
from app.limits import Id
from app.metrics import inc
from app.models import Role
from app.tasks import practice, service
from app.tasks.schemas import SkipOut, TaskOut
from app.tasks.views import task_json

router = APIRouter(prefix="/api/v1", tags=["tasks"])

AnyRole = Annotated[frozenset[Role], Depends(require_in_endpoint())]


@router.get(
    "/projects/{project_ref}/tasks/next",
    response_model=None,  # answered as built (JSONResponse): this runs on every task
    responses={200: {"model": TaskOut, "description": "The task: an assignment of one comparison to you."},
               204: {"description": "Nothing for you in this project now. The `X-Queue-State` header says why: "
                                    "`done` (every comparison you could still rate has all its judgments, or the "
                                    "project is not active: stop asking) or `busy` (the comparisons still open are "
                                    "all leased to other raters; a slot comes back when a lease is skipped or "
                                    "lapses: ask again after `Retry-After` seconds).",
                     "headers": {"X-Queue-State": {"description": "`done` or `busy`", "schema": {"type": "string"}},
                                 "Retry-After": {"description": "Seconds to wait before asking again (busy only)",
                                                 "schema": {"type": "integer"}}}}},
)  # fmt: skip
def next_task(project_ref: str, request: Request, roles: AnyRole):
    with request_session() as db:
        principal = authenticate(request, db, roles)
        project = service.project_for_rater(db, project_ref, principal.user)
        if project.practice_required > 0 and not practice.qualification(db, project, principal.user).passed:
            raise Forbidden("This project requires a qualification: answer its practice items on the rating page "
                            f"(/projects/{project.id}/annotate) first.")
        claim = service.claim(db, project, principal.user)
        body = None if claim.assignment is None else task_json(db, claim.assignment)
    if body is None:
        headers = {"X-Queue-State": claim.state}
        if claim.state == "busy":
            headers["Retry-After"] = str(service.BUSY_RETRY_SECONDS)
        return Response(status_code=status.HTTP_204_NO_CONTENT, headers=headers)
    return JSONResponse(body)


@router.post("/assignments/{assignment_id}/judgment", response_model=None,
             responses={200: {"model": JudgmentOut}, 201: {"model": JudgmentOut}})  # fmt: skip
def submit_judgment(assignment_id: Id, data: JudgmentIn, request: Request, roles: AnyRole):
    with request_session() as db:
        principal = authenticate(request, db, roles)
        judgment, created = judgments.submit(db, assignment_id, principal.user, data)
        body = JudgmentOut.model_validate(judgment).model_dump(mode="json")
    if created:
        inc("judgments_submitted_total")
    return JSONResponse(body, status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@router.post("/assignments/{assignment_id}/skip", response_model=None, responses={200: {"model": SkipOut}})
def skip_assignment(assignment_id: Id, data: SkipIn, request: Request, roles: AnyRole):
    with request_session() as db:
        principal = authenticate(request, db, roles)
        assignment = judgments.skip(db, assignment_id, principal.user, data.reason)
        body = {"assignment_id": assignment.id, "state": assignment.state}
    return JSONResponse(body)
