"""The statistics endpoint's and the dashboard's figures of large projects, from a cache the worker keeps.

Computing them reads every counted judgment (about 5 s at a million). So a request computes them itself only for a
project with at most `SYNC_MAX_JUDGMENTS` judgments (always fresh, as before); for a larger one it answers from
the `project_figures` row an idle worker wrote (`refresh_due`, run by exactly one worker at a time: the worker's
idle task in app.worker), with the time they were computed (`as_of`), and before the first computation it says
they are being computed (FiguresPending, 503). A request never reads every judgment of a large project: the size
check stops counting at the threshold.

The leaderboard (`leaderboard`) fits its ratings on the battle tallies per request; what still reads every battle
(the style-controlled and post-stratified rankings) and the attribute leaderboard come from the cache for a large
project.

The worker recomputes a project's figures when its judgments changed since (`change_marker`: the newest
judgment's time, the newest review, the newest void, the group weights) and the dashboard also when it is older than
`DASHBOARD_MAX_AGE` (its hourly series move with the clock).
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import write_transaction
from app.errors import FiguresPending
from app.models import FlagReview, Judgment, Project, utcnow
from app.models.tally import ProjectFigures
from app.quality import service
from app.quality.attributes import attribute_leaderboard

SYNC_MAX_JUDGMENTS = 50_000
"""Projects with at most this many judgments (every source) are computed per request (well under a second)."""
DASHBOARD_MAX_AGE = timedelta(minutes=5)
NAMES = ("stats", "dashboard", "leaderboard")
ROW_KEYS = ("style_controlled", "style_coefficients", "post_stratified")
"""The leaderboard's figures that read every battle (service.leaderboard's row path), cached with the attribute
leaderboard under `leaderboard`; its Bradley-Terry ratings come from the battle tallies on every request."""


def _leaderboard_rows(db: Session, project: Project) -> dict:
    board = service.leaderboard(db, project, bootstrap=0)  # only the row figures are kept; no bootstrap needed
    return {key: board[key] for key in ROW_KEYS} | {"attributes": attribute_leaderboard(db, project)}


_COMPUTE = {"stats": service.project_stats, "dashboard": service.dashboard, "leaderboard": _leaderboard_rows}
log = logging.getLogger("rankforge.figures")


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


def _plain(value):
    """JSON-safe: NaN and infinities become null (as the API would refuse them)."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def figures(db: Session, project: Project, name: str) -> dict:
    """The figures a request shows (`stats` or `dashboard`), with `as_of`; FiguresPending before a large
    project's first computation."""
    if not is_large(db, project.id):
        return _COMPUTE[name](db, project) | {"as_of": utcnow()}
    row = db.get(ProjectFigures, (project.id, name))
    if row is None:
        raise FiguresPending(f"The {name} of project {project.slug} are being computed by a worker (more than "
                             f"{SYNC_MAX_JUDGMENTS:,} judgments); try again in a minute.")  # fmt: skip
    return dict(row.figures) | {"as_of": row.computed_at}


def leaderboard(db: Session, project: Project, *, group: str | None = None) -> dict:
    """The leaderboard the API and its page show, with `attributes` and `as_of` (when its row figures were
    computed). Ratings, intervals, battles and win rates: from the battle tallies, always current. A large
    project's style-controlled and post-stratified rankings and attribute leaderboard: the worker's (empty before
    its first computation, and with a `group` filter, which the cache does not hold)."""
    if not is_large(db, project.id):
        return (service.leaderboard(db, project, group=group)
                | {"attributes": attribute_leaderboard(db, project), "as_of": utcnow()})  # fmt: skip
    board = service.leaderboard(db, project, group=group, style_control=False)
    row = db.get(ProjectFigures, (project.id, "leaderboard"))
    if row is None:
        return board | {"attributes": {}, "as_of": None}
    cached = dict(row.figures)
    if group is not None:
        cached = {"attributes": cached["attributes"]}  # the row figures were computed over every rater
    return board | cached | {"as_of": row.computed_at}


def refresh(db: Session, project: Project, *, now=None) -> list[str]:
    """Recompute what is due of this project's figures; the names recomputed."""
    now = now or utcnow()
    marker = change_marker(db, project.id)
    stored = {row.name: (row.marker, row.computed_at)
              for row in db.scalars(select(ProjectFigures).where(ProjectFigures.project_id == project.id))}  # fmt: skip
    computed = {}
    for name in NAMES:
        if name in stored and stored[name][0] == marker and (name != "dashboard"
                                                            or now - stored[name][1] < DASHBOARD_MAX_AGE):  # fmt: skip
            continue
        computed[name] = _plain(_COMPUTE[name](db, project))
    if not computed:
        return []
    write_transaction(db)  # SQLite: the read above ran without the write lock; take it only to store
    for name, value in computed.items():
        row = db.get(ProjectFigures, (project.id, name))
        if row is None:
            db.add(ProjectFigures(project_id=project.id, name=name, figures=value, marker=marker, computed_at=now))
        else:
            row.figures, row.marker, row.computed_at = value, marker, now
    db.flush()
    return list(computed)


def refresh_due(db: Session) -> dict[int, list[str]]:
    """Recompute the due figures of every large project (the caller holds the right to run alone)."""
    out = {}
    for project in db.scalars(select(Project).order_by(Project.id)).all():
        if is_large(db, project.id):
            done = refresh(db, project)
            if done:
                log.info("figures of %s recomputed: %s", project.slug, ", ".join(done))
                out[project.id] = done
    return out
