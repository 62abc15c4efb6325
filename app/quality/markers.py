"""When a project's figures are cached, and when the cache is current: light enough for any process to import (no
numpy or scipy), so an export can read its rater weights from the cache without loading the statistics code.
app.quality.figures uses these; SYNC_MAX_JUDGMENTS is read here at each call (tests set it here)."""

from __future__ import annotations

import json
import zlib

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import FlagReview, Judgment, Project

SYNC_MAX_JUDGMENTS = 50_000
"""A project with more judgments has its statistics, dashboard and leaderboard parts computed by a worker and
cached (app.quality.figures); at most this many, a request computes them."""


def is_large(db: Session, project_id: int) -> bool:
    """More than SYNC_MAX_JUDGMENTS judgments (counts at most one past the threshold)."""
    first = select(Judgment.id).where(Judgment.project_id == project_id).limit(SYNC_MAX_JUDGMENTS + 1).subquery()
    return db.scalar(select(func.count()).select_from(first)) > SYNC_MAX_JUDGMENTS


def change_marker(db: Session, project_id: int) -> str:
    """Changes when a judgment is written, reviewed or voided (index reads: no scan of the judgments)."""
    newest = db.scalar(select(func.max(Judgment.created_at)).where(Judgment.project_id == project_id))
    review = db.scalar(select(func.max(FlagReview.id)).where(FlagReview.project_id == project_id))
    voided = db.scalar(select(func.max(Judgment.voided_at)).where(Judgment.project_id == project_id,
                                                                  Judgment.voided_at.is_not(None)))  # fmt: skip
    weights = db.scalar(select(Project.group_weights).where(Project.id == project_id))  # the post-stratified ranking's
    weights_crc = zlib.crc32(json.dumps(weights, sort_keys=True).encode())
    return (f"{newest.isoformat() if newest else '-'}|{review or 0}|{voided.isoformat() if voided else '-'}"
            f"|{weights_crc}")  # fmt: skip
