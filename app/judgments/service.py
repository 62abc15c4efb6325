"""Submitting and skipping assignments. Idempotent per assignment; never over-fills. Never commits."""

from __future__ import annotations

from sqlalchemy import bindparam, exists, insert, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.db import is_sqlite, write_transaction
from app.errors import Conflict, Forbidden, NotFound, Unprocessable
from app.judgments import tallies
from app.judgments.edits import add_edit
from app.judgments.schemas import ALLOWED_FLAGS, JudgmentIn
from app.limits import parse_id
from app.models import Assignment, Comparison, Judgment, Project, User, WebhookEndpoint, utcnow
from app.projects.service import may_rate
from app.webhooks.service import emit_judgment


def validate_ranking(ranking: list[list[int]], completion_ids: list[int], *, allow_ties: bool,
                     all_bad: bool) -> list[list[int]]:  # fmt: skip
    flat = [c for group in ranking for c in group]
    if any(len(group) == 0 for group in ranking):
        raise Unprocessable("ranking has an empty group.")
    if sorted(flat) != sorted(completion_ids) or len(set(flat)) != len(flat):
        raise Unprocessable(
            f"ranking must place each option exactly once; options are {sorted(completion_ids)}, got {ranking}."
        )
    if not allow_ties and not all_bad and any(len(group) > 1 for group in ranking):
        raise Unprocessable("This project does not allow ties.")
    return [sorted(group) for group in ranking]


def _lock(db: Session, query):
    """The row, locked (PostgreSQL; SQLite holds the write lock already), as it is now."""
    query = query.execution_options(populate_existing=True)
    return db.scalar(query if is_sqlite(db) else query.with_for_update())


def _load_own_assignment(db: Session, assignment_id: int, rater: User) -> Assignment:
    assignment = _lock(db, select(Assignment).where(Assignment.id == assignment_id))
    if assignment is None:
        raise NotFound(f"No assignment {assignment_id}.")
    if assignment.rater_id != rater.id:
        raise Forbidden("This assignment belongs to another rater.")
    return assignment


def _release_or_check_slot(assignment: Assignment, comparison: Comparison, now) -> int:
    """The slots this lease still holds (1 while active, lapsed or not: given back by the submit), or Conflict
    when a lapsed lease's slot went to someone else (nothing is changed then)."""
    if assignment.state == "active" and assignment.expires_at > now:
        return 1
    held = 1 if assignment.state == "active" else 0  # active but lapsed: not yet reclaimed, its slot is still held
    if comparison.n_judgments + comparison.n_leases - held >= comparison.required:
        raise Conflict("Your lease on this comparison expired and its slot went to another rater.")
    return held


def _any_listener(project_id):
    """Whether an enabled webhook endpoint of this project or a global one exists (the endpoints
    `app.webhooks.service.listeners` reads): folded into the submit's locking read, so that `emit_judgment` (and
    its read) runs only when someone listens."""
    return exists().where(
        WebhookEndpoint.enabled, or_(WebhookEndpoint.project_id == project_id, WebhookEndpoint.project_id.is_(None))
    )


def _submit_rows_query(postgres: bool):
    query = (
        select(Assignment, Comparison, Project, _any_listener(Project.id).label("listening"))
        .join(Comparison, Comparison.id == Assignment.comparison_id)
        .join(Project, Project.id == Comparison.project_id)
        .where(Assignment.id == bindparam("assignment_id"))
        # The counters and the state as locked now, not as this session may have loaded them before.
        .execution_options(populate_existing=True)
    )
    return query.with_for_update(of=[Assignment, Comparison]) if postgres else query


_SUBMIT_ROWS = {postgres: _submit_rows_query(postgres) for postgres in (True, False)}
"""The assignment and its comparison, locked in that order (as skip and the lease sweep lock them), with the
project and whether any webhook endpoint listens: one statement, built once."""
_assignment, _comparison = Assignment.__table__, Comparison.__table__
# Plain Core on the tables: no ORM compile or bulk-update layer on the rating loop's path.
_FINISH_ASSIGNMENT = (
    _assignment.update().where(_assignment.c.id == bindparam("b_assignment_id"))
    .values(state=bindparam("b_state"), finished_at=bindparam("b_finished_at"))
)  # fmt: skip
_COUNT_JUDGMENT = (
    _comparison.update().where(_comparison.c.id == bindparam("b_comparison_id"))
    .values(n_judgments=_comparison.c.n_judgments + 1, n_leases=_comparison.c.n_leases - bindparam("b_released"))
)  # fmt: skip
_FINISH_AND_COUNT = _COUNT_JUDGMENT.add_cte(_FINISH_ASSIGNMENT.returning(_assignment.c.id).cte("finished"))
"""PostgreSQL: both UPDATEs in one statement (a data-modifying WITH), one round trip less per judgment."""
_INSERT_JUDGMENT = insert(Judgment).returning(Judgment)


def submit(db: Session, assignment_id: int, rater: User, data: JudgmentIn) -> tuple[Judgment, bool]:
    """Returns (judgment, created). A repeat submit of the same assignment returns the first judgment."""
    now = utcnow()
    write_transaction(db)
    row = db.execute(_SUBMIT_ROWS[not is_sqlite(db)], {"assignment_id": assignment_id}).first()
    if row is None:
        raise NotFound(f"No assignment {assignment_id}.")
    assignment, comparison, project, listening = row
    if assignment.rater_id != rater.id:
        raise Forbidden("This assignment belongs to another rater.")
    # A repeat waited for the first submit's row lock and now reads its committed state, so the lookup
    # runs only for a submitted assignment: one statement less on every first submit.
    if assignment.state == "submitted":
        existing = db.scalar(select(Judgment).where(Judgment.assignment_id == assignment.id))
        if existing is not None:
            return existing, False
    if assignment.state == "skipped":
        raise Conflict("This assignment was skipped.")
    if assignment.state == "revoked":
        raise Forbidden("This assignment was revoked: you are no longer a member of this project.")
    if not may_rate(db, project, rater):
        raise Forbidden("You are not a member of this project.")
    unknown = sorted(set(data.flags) - set(ALLOWED_FLAGS))
    if unknown:
        raise Unprocessable(f"Unknown flags {unknown}; allowed: {list(ALLOWED_FLAGS)}.")
    ranking = validate_ranking(data.ranking, comparison.completion_ids, allow_ties=project.allow_ties,
                               all_bad="all_bad" in data.flags)  # fmt: skip
    attributes = _validate_attributes(data.attributes, project, comparison)
    released = _release_or_check_slot(assignment, comparison, now)
    # Written with two plain UPDATEs (no unit-of-work flush on this path); the loaded objects are told the new
    # values as committed ones, so they stay current and nothing is written twice.
    values = {"b_assignment_id": assignment.id, "b_state": "submitted", "b_finished_at": now,
              "b_comparison_id": comparison.id, "b_released": released}  # fmt: skip
    if is_sqlite(db):
        db.execute(_FINISH_ASSIGNMENT, values)
        db.execute(_COUNT_JUDGMENT, values)
    else:
        db.execute(_FINISH_AND_COUNT, values)
    set_committed_value(assignment, "state", "submitted")
    set_committed_value(assignment, "finished_at", now)
    set_committed_value(comparison, "n_judgments", comparison.n_judgments + 1)
    set_committed_value(comparison, "n_leases", comparison.n_leases - released)
    top = ranking[0]
    judgment = db.scalars(_INSERT_JUDGMENT, [{
        "comparison_id": comparison.id,
        "project_id": project.id,
        "assignment_id": assignment.id,
        "rater_id": rater.id,
        "ranking": ranking,
        "attributes": attributes,
        "rationale": data.rationale or None,
        "flags": sorted(set(data.flags)),
        "time_spent_ms": data.time_spent_ms,
        "active_ms": data.active_ms,
        "guideline_version": project.guideline_version,
        "source": "human",
        "top_completion_id": top[0] if len(top) == 1 else None,
        "chosen_position": assignment.display_order.index(top[0]) if len(top) == 1 else None,
        "created_at": now,
    }]).one()  # fmt: skip
    tallies.add_judgment(db, project_id=project.id, rater_id=rater.id, source="human",
                         completion_ids=comparison.completion_ids, ranking=ranking)  # fmt: skip
    if data.edit is not None:
        add_edit(db, judgment, comparison, project, rater, data.edit)
    _maybe_extend_overlap(db, project, comparison)
    if listening:
        emit_judgment(db, judgment, comparison)
    return judgment, True


def _validate_attributes(attributes: dict, project: Project, comparison: Comparison) -> dict:
    scales = {a["name"]: a for a in project.attributes}
    clean: dict[str, dict[str, int]] = {}
    for name, scores in attributes.items():
        scale = scales.get(name)
        if scale is None:
            raise Unprocessable(f"Unknown attribute {name!r}; this project has {sorted(scales)}.")
        for option_id, score in scores.items():
            if parse_id(option_id) not in comparison.completion_ids:
                raise Unprocessable(f"Attribute {name!r} scores option {option_id!r}, which is not in this comparison.")
            if not scale["min"] <= score <= scale["max"]:
                raise Unprocessable(f"{name} must be between {scale['min']} and {scale['max']}, got {score}.")
            clean.setdefault(name, {})[str(parse_id(option_id))] = score
    return clean


def _maybe_extend_overlap(db: Session, project: Project, comparison: Comparison) -> None:
    """Adaptive overlap: one more rater (up to max_overlap) when the raters so far disagree on the top."""
    if comparison.is_gold or comparison.n_judgments < comparison.required:
        return
    if comparison.required >= project.max_overlap:
        return
    rankings = db.scalars(
        select(Judgment.ranking).where(Judgment.comparison_id == comparison.id, Judgment.source == "human")
    ).all()
    tops = {tuple(ranking[0]) for ranking in rankings}
    if len(tops) > 1:
        comparison.required += 1


def skip(db: Session, assignment_id: int, rater: User, reason: str) -> Assignment:
    """Give the slot back; this rater will not be offered the comparison again."""
    now = utcnow()
    write_transaction(db)
    assignment = _load_own_assignment(db, assignment_id, rater)
    if assignment.state == "skipped":
        return assignment
    if assignment.state == "submitted":
        raise Conflict("This assignment was already judged.")
    if assignment.state == "revoked":
        return assignment  # its slot was given back when it was revoked
    if assignment.state == "active":
        db.execute(update(Comparison).where(Comparison.id == assignment.comparison_id)
                   .values(n_leases=Comparison.n_leases - 1))  # fmt: skip
    assignment.state = "skipped"
    assignment.skip_reason = reason[:200] or None
    assignment.finished_at = now
    return assignment
