"""The judges page of a project: its judges and how they agree with the humans, the AI policy, the template."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse
from sqlalchemy import select

from app import charts
from app.auth.deps import Admin, AnyUser, DbSession, Staff
from app.charts import Axis
from app.judges import service
from app.judges.endpoint_judge import judge_usage
from app.models import ModelVersion
from app.projects.service import get_project
from app.tasks.service import project_for_rater
from app.web import render

router = APIRouter(tags=["pages"])


def calibration_chart(figures: list[dict]):
    """Observed accuracy against the judge's confidence, one line per judge and template version, and the diagonal
    a calibrated judge follows."""
    x = [0.55, 0.65, 0.75, 0.85, 0.95]
    series: dict[str, list] = {"calibrated": list(x)}
    for f in figures:
        if f["compared"]:
            label = f"{f['judge']} t{f['template_version']}" if f["method"] == "generative" else f["judge"]
            series[label] = [b["accuracy"] for b in f["calibration"]]
    title = "Calibration: accuracy against the human majority per confidence bin"
    if len(series) == 1:  # the diagonal alone is no chart
        return charts.empty_chart(title, "No judge has verdicts on human-judged comparisons yet: run a judge job "
                                         "with scope 'judged' to measure it.")  # fmt: skip
    return charts.line_chart(title, x, series,
                             x_axis=Axis("Judge confidence (bin centre)", kind="number"),
                             y_axis=Axis("Accuracy vs human majority"), y_min=0.0, y_max=1.0,
                             empty="No judge has verdicts on human-judged comparisons yet: run a judge job with scope "
                                   "'judged' to measure it.")  # fmt: skip


@router.get("/projects/{project_ref}/judges")
def judges_page(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    data = service.judges_json(db, project)
    figures = [f for j in data["judges"] for f in j["agreement"]]
    versions = db.execute(select(ModelVersion.id, ModelVersion.name, ModelVersion.kind)
                          .where(ModelVersion.kind.in_(("reward", "policy", "prm"))).order_by(ModelVersion.id.desc()).limit(200)).all()
    return render(request, "judges/judges.html", {
        "project": project, "data": data, "figures": figures, "chart": calibration_chart(figures),
        "versions": versions, "templates": service.template_versions(db, project),
        "usage": judge_usage(db, project)})  # fmt: skip


@router.post("/projects/{project_ref}/judges/new")
def new_judge(project_ref: str, db: DbSession, principal: Staff, name: str = Form(...), method: str = Form(...),
              model: str = Form(""), rubric: bool = Form(False)):  # fmt: skip
    project = get_project(db, project_ref)
    service.create_judge(db, project, name[:100], method, model or None, {"rubric": True} if rubric else {},
                         principal.user)  # fmt: skip
    return RedirectResponse(f"/projects/{project.id}/judges", status_code=303)


@router.post("/projects/{project_ref}/judges/run")
def run_judge(project_ref: str, db: DbSession, principal: Staff, judge: str = Form(...), scope: str = Form("open")):
    project = get_project(db, project_ref)
    job = service.create_judge_job(db, project, judge=judge, params={"scope": scope}, actor=principal.user)
    return RedirectResponse(f"/jobs/{job.id}", status_code=303)


@router.post("/projects/{project_ref}/judges/policy")
def policy(project_ref: str, db: DbSession, principal: Admin, policy: str = Form(...), judge: str = Form(""),
           threshold: float = Form(0.9), max_flip_rate: float | None = Form(None, ge=0.0, le=1.0),
           min_accuracy: float | None = Form(None, ge=0.0, le=1.0), min_sample: int = Form(20, ge=1, le=1_000_000)):  # fmt: skip
    project = get_project(db, project_ref)
    gate = {"max_flip_rate": max_flip_rate, "min_accuracy": min_accuracy, "min_sample": min_sample}
    service.set_policy(db, project, policy=policy, judge=judge or None, threshold=threshold, gate=gate,
                       actor=principal.user)  # fmt: skip
    return RedirectResponse(f"/projects/{project.id}/judges", status_code=303)


@router.post("/projects/{project_ref}/judges/template")
def template(project_ref: str, db: DbSession, principal: Staff, body: str = Form(...)):
    project = get_project(db, project_ref)
    service.set_template(db, project, body, principal.user)
    return RedirectResponse(f"/projects/{project.id}/judges#template", status_code=303)


@router.get("/projects/{project_ref}/ai-review")
def review_page(project_ref: str, request: Request, db: DbSession, principal: AnyUser):
    """Review AI labels: the one page where a rater sees an AI verdict, to confirm or flip it."""
    project = project_for_rater(db, project_ref, principal.user)
    items = service.review_queue(db, project, principal.user, 20)
    return render(request, "judges/review.html", {"project": project, "items": items})


@router.post("/projects/{project_ref}/ai-review/{verdict_id}")
def review(project_ref: str, verdict_id: int, db: DbSession, principal: AnyUser, decision: str = Form(...)):
    project = project_for_rater(db, project_ref, principal.user)
    service.review_verdict(db, project, verdict_id, decision, principal.user)
    return RedirectResponse(f"/projects/{project.id}/ai-review", status_code=303)
