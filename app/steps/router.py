"""JSON API for step labels: the next trajectory, a trajectory, labelling it (once), branching from a rewritten
step, the project's labels and failure tags."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api import PageAll
from app.auth.deps import Admin, AnyUser, DbSession, Staff
from app.db import retry_conflicts
from app.errors import Forbidden
from app.limits import Id
from app.models import Role
from app.projects.service import get_project, get_visible_project, may_rate
from app.steps import service
from app.steps.labels import project_tags
from app.steps.schemas import (
    BranchIn,
    StepJudgmentOut,
    StepLabelsIn,
    StepLabelsPage,
    StepTagsIn,
    StepTagsOut,
    TrajectoryLabelsOut,
    TrajectoryOut,
)
from app.tasks.service import BUSY_RETRY_SECONDS

router = APIRouter(prefix="/api/v1", tags=["steps"])


def rater_project(db, project_ref: str, principal):
    project = get_visible_project(db, project_ref, principal.user)
    if not may_rate(db, project, principal.user):
        raise Forbidden("You are not a member of this project.")
    return project


@router.get("/projects/{project_ref}/steps/next", response_model=TrajectoryOut,
            responses={204: {"description": "No trajectory left for you."}})
def next_trajectory(project_ref: str, db: DbSession, principal: AnyUser):
    """The next trajectory to label, leased to you until `expires_at` (asking again before then returns the same one):
    its history, its steps and the project's failure tags; 204 when none is left (with Retry-After when the free
    slots are all leased to others for now)."""
    project = rater_project(db, project_ref, principal)
    claim = retry_conflicts(db, lambda: service.claim_trajectory(db, project, principal.user))
    if claim.trajectory is None:
        busy = {"Retry-After": str(BUSY_RETRY_SECONDS)} if claim.state == "busy" else None
        return Response(status_code=status.HTTP_204_NO_CONTENT, headers=busy)
    return service.trajectory_json(claim.trajectory) | {"tags": project_tags(project.step_tags),
                                                        "expires_at": claim.lease.expires_at}


@router.get("/projects/{project_ref}/trajectories/{completion_id}", response_model=TrajectoryLabelsOut)
def get_trajectory(project_ref: str, completion_id: Id, db: DbSession, principal: AnyUser):
    """A trajectory with the step labels you may see: staff see every rater's, a rater their own."""
    project = rater_project(db, project_ref, principal)
    trajectory = service.load_trajectory(db, project, completion_id)
    staff = principal.user.role in (Role.admin, Role.engineer)
    judgments = service.list_judgments(db, project, completion_id=completion_id,
                                       rater=None if staff else principal.user)  # fmt: skip
    return service.trajectory_json(trajectory) | {"tags": project_tags(project.step_tags), "step_labels": judgments}


@router.post("/projects/{project_ref}/trajectories/{completion_id}/step-labels", status_code=201,
             response_model=StepJudgmentOut, responses={200: {"description": "Already labelled: your first labels."}})
def label_steps(project_ref: str, completion_id: Id, body: StepLabelsIn, db: DbSession, principal: AnyUser,
                response: Response):  # fmt: skip
    """Label every step up to the first error. Submitting again returns the first labels (200), never a second set."""
    project = rater_project(db, project_ref, principal)
    judgment, created = retry_conflicts(db, lambda: service.submit_labels(
        db, project, principal.user, completion_id, [label.model_dump() for label in body.labels], body.first_error,
        body.time_spent_ms))  # fmt: skip
    if not created:
        response.status_code = status.HTTP_200_OK
    return service.judgment_json(judgment, principal.user.username)


@router.post("/projects/{project_ref}/trajectories/{completion_id}/branches", status_code=201,
             response_model=TrajectoryOut)
def branch(project_ref: str, completion_id: Id, body: BranchIn, db: DbSession, principal: AnyUser):
    """Rewrite one step: a new trajectory (a branch) with the steps before it, the rewritten step, nothing after."""
    project = rater_project(db, project_ref, principal)
    completion = service.branch(db, project, principal.user, completion_id, body.step, body.content.replace("\r\n", "\n"),
                                body.tool_calls)  # fmt: skip
    return service.trajectory_json(service.load_trajectory(db, project, completion.id)) | {
        "tags": project_tags(project.step_tags)}


@router.get("/projects/{project_ref}/step-labels", response_model=StepLabelsPage)
def list_step_labels(project_ref: str, db: DbSession, principal: Staff, page: PageAll, completion_id: Id | None = None):
    """Every step judgment of the project (or of one trajectory), oldest first, voided ones marked."""
    judgments, total = service.page_judgments(db, get_project(db, project_ref), page, completion_id=completion_id)
    return {"step_labels": judgments} | page.fields(total)


@router.post("/projects/{project_ref}/step-labels/{judgment_id}/void", response_model=StepJudgmentOut)
def void_step_labels(project_ref: str, judgment_id: Id, db: DbSession, principal: Admin):
    """Void one rater's step labels: kept for the record, counted nowhere."""
    judgment = service.void(db, get_project(db, project_ref), judgment_id, principal.user)
    return service.judgment_json(judgment)


@router.put("/projects/{project_ref}/step-tags", response_model=StepTagsOut)
def set_step_tags(project_ref: str, body: StepTagsIn, db: DbSession, principal: Admin):
    """The project's failure tags for step labels (an empty list: no tags)."""
    return {"tags": service.set_step_tags(db, get_project(db, project_ref), body.tags, principal.user)}
