"""JSON API of the judges domain: a project's judges with their agreement with the humans, the AI policy, the
generative judges' template. Staff only: raters never see AI verdicts."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, status
from pydantic import Field

from app.api import Paging, paging
from app.auth.deps import Admin, AnyUser, DbSession, Staff
from app.judges import service
from app.judges.schemas import AILabelList, AILabelReviewed, JudgeOut, JudgesReport, PolicyOut, TemplateOut
from app.limits import Id, Input, varchar
from app.models import Judge, ModelVersion
from app.projects.service import get_project
from app.tasks.service import project_for_rater

router = APIRouter(prefix="/api/v1/projects/{project_ref}", tags=["judges"])


class JudgeIn(Input):
    name: varchar(Judge.name)
    method: Literal["reward", "generative", "rules", "prm"]
    model: Id | varchar(ModelVersion.name) | None = Field(default=None, description="Model version id or name.")
    params: dict = {}


class GateIn(Input):
    max_flip_rate: float | None = Field(default=None, ge=0.0, le=1.0,
                                        description="Highest order-swap flip rate allowed (None: not checked).")
    min_accuracy: float | None = Field(default=None, ge=0.0, le=1.0,
                                       description="Lowest tie-aware accuracy allowed (None: not checked).")
    min_sample: int = Field(default=20, ge=1, le=1_000_000, description="Verdicts checked against the humans needed.")


class PolicyIn(Input):
    policy: Literal["off", "shadow", "prelabel", "route"] | None = None
    judge: Id | varchar(Judge.name) | None = None
    threshold: float | None = Field(default=None, ge=0.5, le=1.0)
    gate: GateIn | None = Field(default=None, description="The judge gate (both limits None: no gate).")


class TemplateIn(Input):
    body: str = Field(max_length=100_000)


@router.get("/judges", response_model=JudgesReport)
def list_judges(project_ref: str, db: DbSession, principal: Staff):
    """The project's judges, the AI policy and template, and per judge and template version its agreement with
    the humans: accuracy vs the human majority, Cohen's kappa, Krippendorff's alpha with the humans, calibration
    (bins and ECE), position bias, and the share auto-labeled and its accuracy at each threshold."""
    return service.judges_json(db, get_project(db, project_ref))


@router.post("/judges", status_code=status.HTTP_201_CREATED, response_model=JudgeOut)
def create_judge(project_ref: str, data: JudgeIn, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    return service.create_judge(db, project, data.name, data.method, data.model, data.params, principal.user)


@router.put("/ai-policy", response_model=PolicyOut)
def put_policy(project_ref: str, data: PolicyIn, db: DbSession, principal: Admin):
    """off | shadow | prelabel | route, the judge it acts on, the confidence threshold and the judge gate
    (app.judges.gates: prelabel and route only while the judge's human-checked sample passes it)."""
    project = get_project(db, project_ref)
    service.set_policy(db, project, policy=data.policy, judge=data.judge, threshold=data.threshold,
                       gate=data.gate.model_dump() if data.gate else None, actor=principal.user)  # fmt: skip
    return service.policy_json(db, project)


@router.put("/judges/template", response_model=TemplateOut)
def put_template(project_ref: str, data: TemplateIn, db: DbSession, principal: Staff):
    """A new version of the generative judges' question ({guidelines}, {prompt}, {response_a}, {response_b})."""
    project = get_project(db, project_ref)
    service.set_template(db, project, data.body, principal.user)
    return service.policy_json(db, project)["template"]


class ReviewIn(Input):
    decision: Literal["confirm", "flip"]


@router.get("/ai-review", response_model=AILabelList)
def review_queue(project_ref: str, db: DbSession, principal: AnyUser, page: Annotated[Paging, paging(20, 200)]):
    """The "review AI labels" queue, the one place a rater sees AI verdicts: unreviewed AI labels, the ones the
    policy counted first, least confident first."""
    project = project_for_rater(db, project_ref, principal.user)
    rows, total = page.rows(db, service.unreviewed_query(project))
    return {"verdicts": service.review_queue(db, project, principal.user, rows=rows), **page.fields(total)}


@router.post("/ai-review/{verdict_id}", response_model=AILabelReviewed)
def review(project_ref: str, verdict_id: Id, data: ReviewIn, db: DbSession, principal: AnyUser):
    """Confirm or flip one AI label (recorded as a review, never as an independent human judgment)."""
    project = project_for_rater(db, project_ref, principal.user)
    row = service.review_verdict(db, project, verdict_id, data.decision, principal.user)
    return {"id": row.id, "reviewed": row.reviewed}
