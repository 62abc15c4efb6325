"""Quality pages: model leaderboard, admin dashboard (inline SVG charts, rater table, review queue, queue control)."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from app.auth.deps import Admin, DbSession, Staff
from app.projects.service import get_project
from app.quality import service, svg
from app.web import render

router = APIRouter(tags=["pages"])


@router.get("/projects/{project_ref}/leaderboard")
def leaderboard_page(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    board = service.leaderboard(db, project)
    names = sorted(board["win_rates"])
    return render(request, "quality/leaderboard.html", {"project": project, "board": board, "names": names})


def _charts(figures: dict) -> dict:
    hours = figures["hours"]
    agreement = figures["agreement_over_time"]
    histogram = figures["time_histogram"]
    return {
        "per_hour": svg.bar_chart(figures["judgments_per_hour"], hours, title="Judgments per hour"),
        "per_rater": svg.line_chart(figures["judgments_per_hour_by_rater"] or {"none": []}, hours,
                                    title="Judgments per hour by rater"),  # fmt: skip
        "agreement": svg.line_chart({"alpha": [a["alpha"] for a in agreement]}, [a["day"] for a in agreement],
                                    title="Krippendorff's alpha (cumulative) by day", y_min=-0.2, y_max=1.0),  # fmt: skip
        "time": svg.histogram(histogram["counts"], histogram["edges_s"], title="Seconds per judgment", unit="s"),
    }


@router.get("/projects/{project_ref}/dashboard")
def dashboard_page(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    figures = service.dashboard(db, project)
    stats = service.project_stats(db, project)
    stats["raters"].sort(key=lambda r: -1.0 if r["reliability"] is None else -r["reliability"])  # most reliable first
    context = {
        "project": project,
        "figures": figures,
        "charts": _charts(figures),
        "stats": stats,
        "reviews": service.review_queue(db, project),
        "resolved": service.review_queue(db, project, resolved=True, limit=20),
        "batches": service.batch_priorities(db, project),
        "saved": request.query_params.get("saved"),
    }
    return render(request, "quality/dashboard.html", context)


@router.post("/projects/{project_ref}/reviews/{judgment_id}")
def resolve_page(project_ref: str, judgment_id: int, db: DbSession, principal: Admin,
                 resolution: str = Form(...), note: str = Form("")):  # fmt: skip
    project = get_project(db, project_ref)
    service.resolve_flag(db, judgment_id, resolution, note, principal.user)
    return RedirectResponse(f"/projects/{project.id}/dashboard?saved=review#reviews", status_code=303)


@router.post("/projects/{project_ref}/batch-priority")
def batch_priority_page(project_ref: str, db: DbSession, principal: Admin, batch: str = Form(""),
                        priority: int = Form(...)):  # fmt: skip
    project = get_project(db, project_ref)
    service.set_batch_priority(db, project, batch or None, priority, principal.user)
    return RedirectResponse(f"/projects/{project.id}/dashboard?saved=priority#queue", status_code=303)


@router.post("/projects/{project_ref}/status")
def status_page(project_ref: str, db: DbSession, principal: Admin, status: str = Form(...)):
    project = get_project(db, project_ref)
    service.set_status(db, project, status, principal.user)
    return RedirectResponse(f"/projects/{project.id}/dashboard?saved=status#queue", status_code=303)
