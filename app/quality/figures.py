"""The statistics endpoint's and the dashboard's figures of large projects, from a cache the worker keeps.

Computing them reads every counted judgment (about 5 s at a million). So a request computes them itself only for a
project with at most `markers.SYNC_MAX_JUDGMENTS` judgments (always fresh, as before); for a larger one it answers from
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

import logging
import math
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import write_transaction
from app.errors import FiguresPending
from app.models import Project, utcnow
from app.models.tally import ProjectFigures
from app.quality import markers, service
from app.quality.attributes import attribute_leaderboard
from app.quality.markers import change_marker, is_large

"""Projects with at most this many judgments (every source) are computed per request (well under a second)."""
DASHBOARD_MAX_AGE = timedelta(minutes=5)
NAMES = ("stats", "dashboard", "leaderboard")
ROW_KEYS = ("style_controlled", "style_coefficients", "post_stratified")
"""The leaderboard's figures that read every battle (service.leaderboard's row path), cached with the attribute
leaderboard under `leaderboard`; its Bradley-Terry ratings come from the battle tallies on every request."""


def _leaderboard_inputs(db: Session, project: Project) -> dict:
    # the attribute leaderboard is a streamed read of the attribute scores (a sum per model as they arrive)
    return {"board": service.leaderboard_inputs(db, project), "attributes": attribute_leaderboard(db, project)}


def _leaderboard_from_inputs(inputs: dict) -> dict:
    board = service.leaderboard_from_inputs(inputs["board"], bootstrap=0)  # only the row figures are kept
    return {key: board[key] for key in ROW_KEYS} | {"attributes": inputs["attributes"]}


_READ = {"stats": service.stats_inputs, "dashboard": service.dashboard_inputs, "leaderboard": _leaderboard_inputs}
"""What each cached figure reads; `_FROM` computes it from that without the database (`refresh` runs the two
apart: the read in one short transaction, the computation with no transaction open)."""
_FROM = {"stats": service.stats_from_inputs, "dashboard": service.dashboard_from_inputs,
         "leaderboard": _leaderboard_from_inputs}  # fmt: skip


def _compute(name: str):
    return lambda db, project: _FROM[name](_READ[name](db, project))


_COMPUTE = {name: _compute(name) for name in NAMES}
"""The per-request computation of each figure (read and compute in the request's transaction)."""
log = logging.getLogger("rankforge.figures")


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
                             f"{markers.SYNC_MAX_JUDGMENTS:,} judgments); try again in a minute.")  # fmt: skip
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


def _read_transaction(db: Session) -> None:
    """Start the session's next transaction for the reads of one figure: REPEATABLE READ on PostgreSQL, so every
    read of it (and the change marker) sees one state; SQLite's read transaction is one snapshot already."""
    if db.get_bind().dialect.name == "postgresql" and not db.in_transaction():
        db.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def refresh(db: Session, project: Project, *, now=None, end_transaction=None) -> list[str]:
    """Recompute what is due of this project's figures; the names recomputed.

    Each figure is read, computed and stored in turn. With `end_transaction` (the caller's, which owns the
    session's transactions: the worker passes its session's commit), the reads of a figure run in a transaction of
    their own that ends before the computation (minutes at ten million judgments: no snapshot is held meanwhile,
    which would keep every claim walking the rating queue's dead index entries, and no transaction is open at all),
    and the stored row is written in a short transaction after it. Without it, everything runs in the caller's
    transaction. The stored marker is the one read with the figure's inputs: judgments that arrive meanwhile are
    not in the figures, and the next tick sees the marker changed."""
    now = now or utcnow()
    marker = change_marker(db, project.id)
    stored = {row.name: (row.marker, row.computed_at)
              for row in db.scalars(select(ProjectFigures).where(ProjectFigures.project_id == project.id))}  # fmt: skip
    due = [name for name in NAMES
           if not (name in stored and stored[name][0] == marker
                   and (name != "dashboard" or now - stored[name][1] < DASHBOARD_MAX_AGE))]  # fmt: skip
    project_id = project.id
    for name in due:
        if end_transaction is not None:
            end_transaction()
            _read_transaction(db)
        marker = change_marker(db, project_id)  # in the same transaction as the figure's reads
        inputs = _READ[name](db, project)
        if end_transaction is not None:
            end_transaction()
        value = _plain(_FROM[name](inputs))
        del inputs
        write_transaction(db)  # SQLite: the read above ran without the write lock; take it only to store
        row = db.get(ProjectFigures, (project_id, name))
        if row is None:
            db.add(ProjectFigures(project_id=project_id, name=name, figures=value, marker=marker, computed_at=now))
        else:
            row.figures, row.marker, row.computed_at = value, marker, now
        db.flush()
    if due and end_transaction is not None:
        end_transaction()
    return due


def refresh_due(db: Session, *, end_transaction=None) -> dict[int, list[str]]:
    """Recompute the due figures of every large project (the caller holds the right to run alone;
    `end_transaction`: as `refresh`)."""
    out = {}
    for project in db.scalars(select(Project).order_by(Project.id)).all():
        if is_large(db, project.id):
            done = refresh(db, project, end_transaction=end_transaction)
            if done:
                log.info("figures of %s recomputed: %s", project.slug, ", ".join(done))
                out[project.id] = done
    return out
