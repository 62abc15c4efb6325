"""Step-label agreement: the JSON figure and the dashboard's section (loaded into the dashboard by htmx)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.auth.deps import DbSession, Staff
from app.projects.service import get_project
from app.quality.step_agreement import step_agreement
from app.steps.schemas import StepAgreementOut
from app.web import render

router = APIRouter()


@router.get("/api/v1/projects/{project_ref}/step-agreement", tags=["quality"], response_model=StepAgreementOut)
def step_agreement_api(project_ref: str, db: DbSession, principal: Staff):
    """Nominal Krippendorff alpha over steps (counted human step labels up to each rater's first error), and per
    rater: labels, trajectories, agreement with the majority, reliability."""
    return step_agreement(db, get_project(db, project_ref))


@router.get("/projects/{project_ref}/dashboard/steps", tags=["pages"])
def step_agreement_section(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    return render(request, "quality/_step_agreement.html", {"project": project, "steps": step_agreement(db, project)})
