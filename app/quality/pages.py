"""Quality pages: model leaderboard, admin dashboard (inline SVG charts, rater table, review queue, queue control)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse

from app import charts
from app.auth.deps import Admin, DbSession, Staff
from app.charts import Axis
from app.groups import all_groups
from app.judgments.content import comparison_contents, comparison_page_data, rankings_in_letters
from app.limits import INT4_MAX, INT4_MIN, Id
from app.projects.service import get_project
from app.quality import figures as cached
from app.quality import service
from app.web import render

router = APIRouter(tags=["pages"])


@router.get("/projects/{project_ref}/leaderboard")
def leaderboard_page(project_ref: str, request: Request, db: DbSession, principal: Staff,
                     group: str | None = Query(None, max_length=101)):  # fmt: skip
    project = get_project(db, project_ref)
    board = cached.leaderboard(db, project, group=group or None)
    attribute_board = board.pop("attributes")
    names = sorted(board["win_rates"])
    return render(request, "quality/leaderboard.html",
                  {"project": project, "board": board, "names": names, "chart": _ratings_chart(board),
                   "attribute_board": attribute_board, "group": group or None,
                   "groups": all_groups(db), "saved": request.query_params.get("saved"),
                   "weights_text": "\n".join(f"{g}: {w:g}" for g, w in (project.group_weights or {}).items())})  # fmt: skip


@router.post("/projects/{project_ref}/group-weights")
def group_weights_page(project_ref: str, db: DbSession, principal: Admin,
                       weights: str = Form("", max_length=5000)):  # fmt: skip
    """The leaderboard's admin form: one `key=value: weight` a line; empty switches post-stratification off."""
    project = get_project(db, project_ref)
    service.set_group_weights(db, project, weights, principal.user)
    return RedirectResponse(f"/projects/{project.id}/leaderboard?saved=weights#post-stratified", status_code=303)


def _ratings_chart(board: dict):
    models = board["models"]
    return charts.interval_chart(
        "Model ratings with 95% intervals", [m["name"] for m in models], [m["rating"] for m in models],
        [m["ci_low"] for m in models], [m["ci_high"] for m in models],
        x_axis=Axis("Rating", "Elo scale"), y_axis=Axis("Model"),
        empty="No ratings yet: each model gets a rating and an interval once raters have judged comparisons "
              "between answers of different models (import completions with their model names).")  # fmt: skip


def _charts(figures: dict) -> dict:
    hours = [datetime.fromisoformat(h) for h in figures["hour_starts"]]
    days = [datetime.fromisoformat(d) for d in figures["days"]]
    agreement = figures["agreement_over_time"]
    histogram = figures["time_histogram"]
    how = "They appear as raters submit judgments on the rating page (or through the API)."
    return {
        "per_hour": charts.bar_chart(
            "Judgments per hour, last 48 hours", hours, figures["judgments_per_hour"],
            x_axis=Axis("Hour", "UTC"), y_axis=Axis("Judgments", "per hour"),
            empty=f"No judgments in the last 48 hours. {how}"),
        "per_rater": charts.line_chart(
            "Judgments per day by rater, last 14 days", days, figures["judgments_per_day_by_rater"],
            x_axis=Axis("Day", "UTC"), y_axis=Axis("Judgments", "per day"),
            empty=f"No judgments in the last 14 days: one line per rater will show their daily work. {how}"),
        "agreement": charts.line_chart(
            "Agreement over time (Krippendorff's alpha, cumulative)",
            [datetime.fromisoformat(a["date"]) for a in agreement], {"alpha": [a["alpha"] for a in agreement]},
            x_axis=Axis("Day", "UTC"), y_axis=Axis("Krippendorff's alpha", "-1 to 1"), y_min=-0.2, y_max=1.0,
            empty="No agreement yet: alpha needs comparisons judged by at least two raters (set the project's "
                  "overlap to 2 or more)."),
        "time": charts.histogram(
            "Time per judgment", histogram["counts"], histogram["edges_s"],
            x_axis=Axis("Time per judgment", "s"), y_axis=Axis("Judgments", "count"),
            empty=f"No timed judgments yet: the rating page records how long each judgment takes. {how}"),
    }  # fmt: skip


@router.get("/projects/{project_ref}/dashboard")
def dashboard_page(project_ref: str, request: Request, db: DbSession, principal: Staff):
    project = get_project(db, project_ref)
    figures = cached.figures(db, project, "dashboard")
    stats = cached.figures(db, project, "stats")
    stats["raters"].sort(key=lambda r: -1.0 if r["reliability"] is None else -r["reliability"])  # most reliable first
    reviews = service.review_queue(db, project)
    context = {
        "project": project,
        "figures": figures,
        "charts": _charts(figures),
        "stats": stats,
        "reviews": reviews,
        "contents": (contents := comparison_contents(db, project, [r["comparison_id"] for r in reviews])),
        "review_rankings": rankings_in_letters(db, reviews, contents),
        "resolved": service.review_queue(db, project, resolved=True, limit=20),
        "batches": service.batch_priorities(db, project),
        "saved": request.query_params.get("saved"),
    }
    return render(request, "quality/dashboard.html", context)


@router.get("/projects/{project_ref}/comparisons/{comparison_id}")
def comparison_page(project_ref: str, comparison_id: Id, request: Request, db: DbSession, principal: Staff):
    """One comparison with what it is about and every judgment on it (linked from the review queue, practice items)."""
    project = get_project(db, project_ref)
    return render(request, "quality/comparison.html", {"project": project} | comparison_page_data(db, project, comparison_id))


@router.post("/projects/{project_ref}/reviews/{judgment_id}")
def resolve_page(project_ref: str, judgment_id: Id, db: DbSession, principal: Admin,
                 resolution: str = Form(...), note: str = Form("")):  # fmt: skip
    project = get_project(db, project_ref)
    service.resolve_flag(db, judgment_id, resolution, note, principal.user)
    return RedirectResponse(f"/projects/{project.id}/dashboard?saved=review#reviews", status_code=303)


@router.post("/projects/{project_ref}/batch-priority")
def batch_priority_page(project_ref: str, db: DbSession, principal: Admin, batch: str = Form(""),
                        priority: int = Form(..., ge=INT4_MIN, le=INT4_MAX)):  # fmt: skip
    project = get_project(db, project_ref)
    service.set_batch_priority(db, project, batch or None, priority, principal.user)
    return RedirectResponse(f"/projects/{project.id}/dashboard?saved=priority#queue", status_code=303)


@router.post("/projects/{project_ref}/status")
def status_page(project_ref: str, db: DbSession, principal: Admin, status: str = Form(...)):
    project = get_project(db, project_ref)
    service.set_status(db, project, status, principal.user)
    return RedirectResponse(f"/projects/{project.id}/dashboard?saved=status#queue", status_code=303)
