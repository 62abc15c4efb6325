"""JSON API of the quality domain: leaderboard, dashboard figures, review queue, queue control."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from app.auth.deps import Admin, DbSession, Staff
from app.limits import Id, Input, Int4, varchar
from app.models import Comparison
from app.projects.service import get_project
from app.quality import service
from app.quality.attributes import attribute_leaderboard

router = APIRouter(prefix="/api/v1", tags=["quality"])


@router.get("/projects/{project_ref}/stats")
def project_stats(project_ref: str, db: DbSession, principal: Staff):
    """Queue counts, agreement, and per-rater figures (gold accuracy, agreement with the majority, reliability)."""
    return service.project_stats(db, get_project(db, project_ref))


@router.get("/projects/{project_ref}/leaderboard")
def leaderboard(project_ref: str, db: DbSession, principal: Staff):
    """Bradley-Terry ratings of the models that wrote the completions, from human pairwise outcomes; `attributes`:
    each model's mean human score per attribute scale."""
    project = get_project(db, project_ref)
    return service.leaderboard(db, project) | {"attributes": attribute_leaderboard(db, project)}


@router.get("/projects/{project_ref}/dashboard")
def dashboard(project_ref: str, db: DbSession, principal: Staff):
    return service.dashboard(db, get_project(db, project_ref))


@router.get("/projects/{project_ref}/reviews")
def review_queue(project_ref: str, db: DbSession, principal: Admin, resolved: bool = False):
    return service.review_queue(db, get_project(db, project_ref), resolved=resolved)


class ReviewIn(Input):
    resolution: str = Field(description="confirmed | dismissed | excluded (drops the judgment from statistics and exports)")
    note: str = ""


@router.post("/judgments/{judgment_id}/review", status_code=201)
def resolve(judgment_id: Id, data: ReviewIn, db: DbSession, principal: Admin):
    review = service.resolve_flag(db, judgment_id, data.resolution, data.note, principal.user)
    return {"judgment_id": review.judgment_id, "resolution": review.resolution, "note": review.note}


@router.get("/projects/{project_ref}/batches")
def batches(project_ref: str, db: DbSession, principal: Admin):
    return service.batch_priorities(db, get_project(db, project_ref))


class BatchPriorityIn(Input):
    batch: varchar(Comparison.batch) | None = Field(description="Batch name; null for the comparisons without one.")
    priority: Int4


@router.post("/projects/{project_ref}/batches/priority")
def set_batch_priority(project_ref: str, data: BatchPriorityIn, db: DbSession, principal: Admin):
    changed = service.set_batch_priority(db, get_project(db, project_ref), data.batch, data.priority, principal.user)
    return {"batch": data.batch, "priority": data.priority, "comparisons": changed}
