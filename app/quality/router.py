"""JSON API of the quality domain: leaderboard, dashboard figures, review queue, queue control."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import Field

from app.api import PageAll, Paging, paging
from app.auth.deps import Admin, DbSession, Staff
from app.limits import Id, Input, Int4, varchar
from app.models import Comparison
from app.projects.service import get_project
from app.quality import figures, service
from app.quality.rigging import flag_rigging
from app.quality.schemas import (
    BatchOut,
    BatchPriorityChanged,
    Dashboard,
    FlaggedJudgment,
    GroupWeights,
    Leaderboard,
    ReviewResolved,
    RiggingReport,
    Stats,
)

router = APIRouter(prefix="/api/v1", tags=["quality"])


@router.get("/projects/{project_ref}/stats", response_model=Stats)
def project_stats(project_ref: str, db: DbSession, principal: Staff):
    """Queue counts, agreement, and per-rater figures (gold accuracy, agreement with the majority, reliability)."""
    return figures.figures(db, get_project(db, project_ref), "stats")


@router.get("/projects/{project_ref}/leaderboard", response_model=Leaderboard)
def leaderboard(project_ref: str, db: DbSession, principal: Staff,
                group: Annotated[str | None, Query(max_length=101, description="Only this rater group's votes "
                                                   "(key=value, app.groups).")] = None):  # fmt: skip
    """Bradley-Terry ratings of the models that wrote the completions, from human pairwise outcomes; `attributes`:
    each model's mean human score per attribute scale (all raters); `group`: the rankings from one rater group."""
    return figures.leaderboard(db, get_project(db, project_ref), group=group)


@router.put("/projects/{project_ref}/group-weights", response_model=GroupWeights)
def set_group_weights(project_ref: str, data: GroupWeights, db: DbSession, principal: Admin):
    """Target shares of rater groups for the post-stratified leaderboard (one label key; normalised to sum 1);
    empty or null switches it off."""
    return {"weights": service.set_group_weights(db, get_project(db, project_ref), data.weights, principal.user) or None}


@router.get("/projects/{project_ref}/dashboard", response_model=Dashboard)
def dashboard(project_ref: str, db: DbSession, principal: Staff):
    return figures.figures(db, get_project(db, project_ref), "dashboard")


@router.get("/projects/{project_ref}/reviews", response_model=list[FlaggedJudgment])
def review_queue(project_ref: str, db: DbSession, principal: Admin, response: Response,
                 page: Annotated[Paging, paging(100, 1000)], resolved: bool = False):  # fmt: skip
    """Flagged judgments waiting for a decision (`resolved`: the decided ones)."""
    flagged = service.review_queue(db, get_project(db, project_ref), resolved=resolved, limit=None)
    page.header(response, len(flagged))
    return page.slice(flagged)


class ReviewIn(Input):
    resolution: str = Field(description="confirmed | dismissed | excluded (drops the judgment from statistics and exports)")
    note: str = ""


@router.post("/projects/{project_ref}/rigging-check", response_model=RiggingReport)
def rigging_check(project_ref: str, db: DbSession, principal: Admin):
    """Run the vote-rigging checks (app.quality.rigging) on the leaderboard's votes; a flagged rater's votes for
    the model they favour go to the review queue (flag `rigging`)."""
    return flag_rigging(db, get_project(db, project_ref))


@router.post("/judgments/{judgment_id}/review", status_code=201, response_model=ReviewResolved)
def resolve(judgment_id: Id, data: ReviewIn, db: DbSession, principal: Admin):
    review = service.resolve_flag(db, judgment_id, data.resolution, data.note, principal.user)
    return {"judgment_id": review.judgment_id, "resolution": review.resolution, "note": review.note}


@router.get("/projects/{project_ref}/batches", response_model=list[BatchOut])
def batches(project_ref: str, db: DbSession, principal: Admin, response: Response, page: PageAll):
    batches = service.batch_priorities(db, get_project(db, project_ref))
    page.header(response, len(batches))
    return page.slice(batches)


class BatchPriorityIn(Input):
    batch: varchar(Comparison.batch) | None = Field(description="Batch name; null for the comparisons without one.")
    priority: Int4


@router.post("/projects/{project_ref}/batches/priority", response_model=BatchPriorityChanged)
def set_batch_priority(project_ref: str, data: BatchPriorityIn, db: DbSession, principal: Admin):
    changed = service.set_batch_priority(db, get_project(db, project_ref), data.batch, data.priority, principal.user)
    return {"batch": data.batch, "priority": data.priority, "comparisons": changed}
