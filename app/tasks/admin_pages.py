"""Admin pages of the richer feedback (issue 14): raters' edits with diffs (reject / accept), practice items and
the qualification (mark gold items, results per rater, reset), and the time and pay report (HTML and CSV)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from app.auth.deps import Admin, DbSession, Staff
from app.errors import Unprocessable
from app.judgments import edits
from app.judgments.content import comparison_contents, ranking_in_letters
from app.limits import Id
from app.models import Comparison
from app.projects.schemas import ProjectUpdate
from app.projects.service import get_project, update_project
from app.tasks import pay, practice
from app.web import render

router = APIRouter(tags=["pages"])


@router.get("/projects/{project_ref}/edits")
def edits_page(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    context = {"project": project, "edits": edits.list_edits(db, project), "counts": edits.edit_counts(db, project),
               "saved": request.query_params.get("saved")}  # fmt: skip
    return render(request, "tasks/edits.html", context)


@router.post("/projects/{project_ref}/edits/{completion_id}")
def edit_review(project_ref: str, completion_id: Id, db: DbSession, principal: Admin, action: str = Form(...)):
    project = get_project(db, project_ref)
    if action not in ("reject", "accept"):
        raise Unprocessable("action must be reject or accept.")
    edits.set_rejected(db, project, completion_id, action == "reject", principal.user)
    return RedirectResponse(f"/projects/{project.id}/edits?saved={action}#edit-{completion_id}", status_code=303)


@router.get("/projects/{project_ref}/practice")
def practice_page(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    gold = db.scalars(select(Comparison).where(Comparison.project_id == project.id, Comparison.is_gold)
                      .order_by(Comparison.practice.desc(), Comparison.id).limit(500)).all()  # fmt: skip
    contents = comparison_contents(db, project, [c.id for c in gold])
    gold_rankings = {c.id: ranking_in_letters(c.gold_ranking, contents[c.id]["letters"]) for c in gold}
    context = {"project": project, "gold": gold, "contents": contents, "gold_rankings": gold_rankings,
               "results": practice.results(db, project),
               "available": practice.practice_count(db, project.id), "saved": request.query_params.get("saved")}  # fmt: skip
    return render(request, "tasks/practice_admin.html", context)


@router.post("/projects/{project_ref}/practice-items/{comparison_id}")
def practice_item(project_ref: str, comparison_id: Id, db: DbSession, principal: Admin,
                  explanation: str = Form("", max_length=20_000), action: str = Form("mark")):  # fmt: skip
    project = get_project(db, project_ref)
    practice.mark(db, project, comparison_id, explanation if action == "mark" else None, principal.user)
    return RedirectResponse(f"/projects/{project.id}/practice?saved=item#item-{comparison_id}", status_code=303)


@router.post("/projects/{project_ref}/qualification")
def qualification_settings(project_ref: str, db: DbSession, principal: Admin,
                           practice_required: int = Form(..., ge=0, le=1000),
                           practice_pass_rate: float = Form(..., ge=0.0, le=1.0),
                           allow_new_answers: bool = Form(False)):  # fmt: skip
    project = get_project(db, project_ref)
    update_project(db, project, ProjectUpdate(practice_required=practice_required,
                                              practice_pass_rate=practice_pass_rate,
                                              allow_new_answers=allow_new_answers), principal.user)  # fmt: skip
    return RedirectResponse(f"/projects/{project.id}/practice?saved=settings", status_code=303)


@router.post("/projects/{project_ref}/practice-results/{user_id}/reset")
def practice_reset(project_ref: str, user_id: Id, db: DbSession, principal: Admin):
    project = get_project(db, project_ref)
    practice.reset(db, project, user_id, principal.user)
    return RedirectResponse(f"/projects/{project.id}/practice?saved=reset#results", status_code=303)


@router.get("/projects/{project_ref}/pay")
def pay_page(project_ref: str, request: Request, db: DbSession, principal: Staff,
             date_from: datetime | None = None, date_to: datetime | None = None, format: str = "html"):  # fmt: skip
    """Per rater and day: judgments, active hours, gold accuracy and pay; `?format=csv` downloads it."""
    project = get_project(db, project_ref)
    report = pay.pay_report(db, project, date_from=date_from, date_to=date_to)
    if format == "csv":
        return Response(pay.report_csv(report), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="pay-{project.slug}.csv"'})  # fmt: skip
    context = {"project": project, "report": report, "totals": pay.totals(report),
               "saved": request.query_params.get("saved")}  # fmt: skip
    return render(request, "tasks/pay.html", context)


@router.post("/projects/{project_ref}/pay-rate")
def pay_rate(project_ref: str, db: DbSession, principal: Admin, pay_unit: str = Form(""),
             rate: str = Form("")):  # fmt: skip
    project = get_project(db, project_ref)
    try:
        value = float(rate) if rate.strip() else None
    except ValueError as error:
        raise Unprocessable("The rate must be a number.") from error
    unit = pay_unit or None
    try:
        data = ProjectUpdate(pay_unit=unit, pay_rate=value if unit else None)
    except ValidationError as error:
        raise Unprocessable("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())) from error
    update_project(db, project, data, principal.user)
    return RedirectResponse(f"/projects/{project.id}/pay?saved=rate", status_code=303)
