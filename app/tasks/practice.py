"""Practice items and the qualification gate.

A practice item is a gold comparison with an explanation. It never enters the queue (its `required` is 0) and
answers to it are `PracticeAnswer` rows, not judgments, so practice never reaches exports, statistics or the
comparison counters. A project with `practice_required` N > 0 serves a rater its practice items first (after
each: the expected ranking and the explanation) and real work only once the rater answered N of them (or all
there are, when fewer) with a mean agreement with gold of at least `practice_pass_rate`. Never commits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from itertools import combinations
from types import SimpleNamespace

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.api import get_or_404
from app.audit import audit
from app.errors import Conflict, NotFound, Unprocessable
from app.judgments.service import validate_ranking
from app.models import Comparison, PracticeAnswer, Project, User, utcnow


@dataclass
class Qualification:
    required: int
    """Practice items this rater must answer: the project's N, or all there are when fewer."""
    answered: int
    score: float | None
    """Mean agreement with gold over the answers so far (None before the first)."""
    pass_rate: float

    @property
    def passed(self) -> bool:
        return self.required == 0 or (self.answered >= self.required and (self.score or 0.0) >= self.pass_rate)

    @property
    def failed(self) -> bool:
        """Every required item answered and the score below the pass rate: an admin must reset the practice."""
        return self.required > 0 and self.answered >= self.required and not self.passed


def agreement_with_gold(ranking: list[list[int]], gold: list[list[int]]) -> float:
    """The share of option pairs this ranking orders (better / equal / worse) as the gold ranking does."""
    position = {c: i for i, group in enumerate(ranking) for c in group}
    expected = {c: i for i, group in enumerate(gold) for c in group}
    pairs = list(combinations(sorted(expected), 2))
    if not pairs:
        return 1.0
    same = sum(((position[a] > position[b]) - (position[a] < position[b]))
               == ((expected[a] > expected[b]) - (expected[a] < expected[b])) for a, b in pairs)  # fmt: skip
    return same / len(pairs)


def practice_count(db: Session, project_id: int) -> int:
    return db.scalar(select(func.count()).select_from(Comparison)
                     .where(Comparison.project_id == project_id, Comparison.practice)) or 0  # fmt: skip


def qualification(db: Session, project: Project, rater: User) -> Qualification:
    if project.practice_required <= 0:
        return Qualification(0, 0, None, project.practice_pass_rate)
    required = min(project.practice_required, practice_count(db, project.id))
    answered, score = db.execute(
        select(func.count(), func.avg(PracticeAnswer.score))
        .where(PracticeAnswer.project_id == project.id, PracticeAnswer.rater_id == rater.id)
    ).one()  # fmt: skip
    return Qualification(required, answered, float(score) if score is not None else None, project.practice_pass_rate)


def next_item(db: Session, project: Project, rater: User) -> Comparison | None:
    """The practice item to serve this rater now, or None (qualified, or every required item answered)."""
    status = qualification(db, project, rater)
    if status.passed or status.answered >= status.required:
        return None
    answered = select(PracticeAnswer.comparison_id).where(PracticeAnswer.rater_id == rater.id)
    return db.scalar(select(Comparison).where(Comparison.project_id == project.id, Comparison.practice,
                                              Comparison.id.not_in(answered)).order_by(Comparison.id).limit(1))  # fmt: skip


def get_item(db: Session, project: Project, comparison_id: int) -> Comparison:
    comparison = db.get(Comparison, comparison_id)
    if comparison is None or comparison.project_id != project.id or not comparison.practice:
        raise NotFound(f"No practice item {comparison_id} in this project.")
    return comparison


def display_order(comparison: Comparison, rater: User) -> list[int]:
    """The options' order for this rater: shuffled, and the same every time they see the item."""
    order = list(comparison.completion_ids)
    random.Random(f"{comparison.id}:{rater.id}").shuffle(order)
    return order


def as_assignment(comparison: Comparison, rater: User):
    """What `app.tasks.views` reads of an assignment, for showing a practice item the same way."""
    return SimpleNamespace(id=None, comparison_id=comparison.id, display_order=display_order(comparison, rater),
                           expires_at=utcnow() + timedelta(days=1))  # fmt: skip


def answer(db: Session, project: Project, rater: User, comparison_id: int, ranking: list[list[int]], *,
           time_spent_ms: int | None = None, active_ms: int | None = None) -> PracticeAnswer:  # fmt: skip
    """Score and store the rater's answer (a repeat returns the first one)."""
    comparison = get_item(db, project, comparison_id)
    existing = db.scalar(select(PracticeAnswer).where(PracticeAnswer.comparison_id == comparison.id,
                                                      PracticeAnswer.rater_id == rater.id))  # fmt: skip
    if existing is not None:
        return existing
    ranking = validate_ranking(ranking, comparison.completion_ids, allow_ties=True, all_bad=False)
    row = PracticeAnswer(project_id=project.id, comparison_id=comparison.id, rater_id=rater.id, ranking=ranking,
                         score=agreement_with_gold(ranking, comparison.gold_ranking or [comparison.completion_ids]),
                         time_spent_ms=time_spent_ms, active_ms=active_ms)  # fmt: skip
    db.add(row)
    db.flush()
    return row


def mark(db: Session, project: Project, comparison_id: int, explanation: str | None, actor: User | None) -> Comparison:
    """Make a gold comparison a practice item (explanation given) or a regular one again (None)."""
    comparison = get_or_404(db, Comparison, comparison_id, "comparison", project=project)
    if explanation is not None:
        if not comparison.is_gold or not comparison.gold_ranking:
            raise Unprocessable("Only a gold comparison (one with a known ranking) can be a practice item.")
        if not explanation.strip():
            raise Unprocessable("A practice item needs an explanation of its expected ranking.")
        if comparison.n_leases:
            raise Conflict("A rater holds this comparison now; try again when the lease ends.")
        comparison.practice, comparison.explanation, comparison.required = True, explanation.strip(), 0
    else:
        comparison.practice, comparison.explanation = False, None
        comparison.required = max(comparison.n_judgments, project.overlap)
    audit(db, actor, "comparison.practice" if explanation is not None else "comparison.unpractice", "comparison",
          comparison.id)  # fmt: skip
    return comparison


def reset(db: Session, project: Project, rater_id: int, actor: User | None) -> int:
    """Forget a rater's practice answers in this project (they practise again); returns how many went."""
    rows = db.scalars(select(PracticeAnswer).where(PracticeAnswer.project_id == project.id,
                                                   PracticeAnswer.rater_id == rater_id)).all()  # fmt: skip
    for row in rows:
        db.delete(row)
    audit(db, actor, "practice.reset", "user", rater_id, project_id=project.id)
    return len(rows)


def results(db: Session, project: Project) -> list[dict]:
    """Each rater's practice results in this project, for admins."""
    rows = db.execute(
        select(User.id, User.username, func.count(PracticeAnswer.id), func.avg(PracticeAnswer.score),
               func.max(PracticeAnswer.created_at))
        .join(PracticeAnswer, PracticeAnswer.rater_id == User.id)
        .where(PracticeAnswer.project_id == project.id)
        .group_by(User.id, User.username).order_by(User.username)
    ).all()  # fmt: skip
    required = min(project.practice_required, practice_count(db, project.id)) if project.practice_required > 0 else 0
    out = []
    for user_id, username, answered, score, last in rows:
        status = Qualification(required, answered, float(score) if score is not None else None,
                               project.practice_pass_rate)  # fmt: skip
        out.append({"user_id": user_id, "username": username, "answered": answered, "score": status.score,
                    "passed": status.passed, "failed": status.failed, "last_at": last})  # fmt: skip
    return out
