"""The verifier page of a project: pass rates per version, the audit queue, the verifier's error rates."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from app import charts
from app.auth.deps import AnyUser, DbSession, Staff
from app.charts import Axis
from app.limits import Id
from app.projects.service import get_project
from app.verifiers import service
from app.web import render

router = APIRouter(tags=["pages"])


def pass_rate_chart(versions: list[dict]):
    """pass@1 per verify job (model version), with its 95% interval, oldest first."""
    names = [f"#{v['job_id']} {v['model_name']}" for v in versions]
    values = [v["pass_at_1"] for v in versions]
    lows = [(v["pass_at_1_ci"] or [None, None])[0] for v in versions]
    highs = [(v["pass_at_1_ci"] or [None, None])[1] for v in versions]
    return charts.interval_chart(
        "pass@1 per model version, 95% intervals", names, values, lows, highs,
        x_axis=Axis("pass@1", "share of answers"), y_axis=Axis("Verify job and version"),
        empty="No pass rates yet: start a verify job for a policy version (Jobs, or POST /api/v1/jobs "
              "with kind verify).")  # fmt: skip


@router.get("/projects/{project_ref}/verifier")
def verifier_page(project_ref: str, request: Request, db: DbSession, principal: AnyUser):
    project = service.audit_project(db, project_ref, principal.user)
    figures = service.project_verifier(db, project)
    pending = service.list_verdicts(db, project, audit_status="pending", limit=20)
    return render(request, "verifiers/verifier.html", {"project": project, "figures": figures, "pending": pending,
                                                      "chart": pass_rate_chart(figures["versions"])})  # fmt: skip


@router.post("/projects/{project_ref}/verifier/sample")
def sample(project_ref: str, db: DbSession, principal: Staff, count: int = Form(20)):
    project = get_project(db, project_ref)
    service.sample_for_audit(db, project, max(1, min(count, 1000)), principal.user)
    return RedirectResponse(f"/projects/{project.id}/verifier", status_code=303)


@router.post("/projects/{project_ref}/verifier/audit/{verdict_id}")
def audit(project_ref: str, verdict_id: Id, db: DbSession, principal: AnyUser, correct: str = Form(...),
          note: str = Form("")):  # fmt: skip
    project = service.audit_project(db, project_ref, principal.user)
    service.audit_verdict(db, project, verdict_id, correct == "yes", note[:2000], principal.user)
    return RedirectResponse(f"/projects/{project.id}/verifier#audit", status_code=303)


@router.post("/projects/{project_ref}/verifier/prompts/{prompt_id}/exclude")
def exclude(project_ref: str, prompt_id: Id, db: DbSession, principal: Staff, excluded: str = Form("yes")):
    project = get_project(db, project_ref)
    service.update_prompt_verifier(db, project, prompt_id, excluded=excluded == "yes", actor=principal.user)
    return RedirectResponse(f"/projects/{project.id}/verifier#disputed", status_code=303)
