"""Counted judgments: the named selections of judgments every figure reads, in one place.

A judgment has a source: `human` (a rater in the queue), `ai` (a judge's verdict), `battle` (a rater's vote in a
live battle) or `imported` (brought in by an import, no rater here). Two things take a judgment out of every
figure, whatever its source:

- **excluded**: an admin resolved its flag as `excluded` in the review queue (a `flag_review` row);
- **voided**: `voided_at` is set (a battle whose side failed to answer).

Practice answers are not judgments at all (`practice_answer` rows): no selection here can reach them, and only
pay reads them, by name (`app/tasks/pay.py`).

Which figure reads which selection (change it here, or say why a figure differs, in its docstring):

| figure                                                                       | selection                  |
| ---------------------------------------------------------------------------- | -------------------------- |
| alpha ("agreement"), reliability, agreement with majority, gold accuracy,     | `HUMAN` counted            |
| pairwise agreement, flags, dashboard (app/quality/service.py)                 |                            |
| model leaderboard (Bradley-Terry, win rates)                                  | `LEADERBOARD` counted:     |
|                                                                               | human + battle             |
| attribute leaderboard and attribute alpha (app/quality/attributes.py)         | `HUMAN` counted            |
| round win rate (headline), reward accuracy, round pairwise agreement          | `HUMAN` counted            |
| round AI win rate (beside the headline, when a judge voted)                  | `AI` counted               |
| judges' agreement with the humans (app/judges/service.py)                     | `HUMAN` counted            |
| dataset exports, every format (app/datasets/service.py)                       | `filters.sources` counted, |
|                                                                               | default `EXPORT_DEFAULT`   |
| pay (app/tasks/pay.py): judgments and active time                              | `paid()`: human, excluded  |
|                                                                               | too (work done), + practice|
| pay: gold accuracy                                                            | `HUMAN` counted            |

Step judgments (`step_judgment` rows: one rater's labels on a trajectory's steps) follow the same rules through
`counted_steps`: these sources, not voided. They carry no flags, so no review can exclude them, and there are no
practice trajectories. Step alpha and step reliability (app/quality/service.py) read `counted_steps(HUMAN)`; the
`steps` export reads `counted_steps(*filters.sources)`.

Imported judgments count only in exports (they are someone else's labels: no rater to grade, no model battle of
ours). AI judgments count in exports only when asked for (`filters.sources`), and in a round's AI win rate.

Two forms of the same rule: `counted(...)` builds a where-clause on the ORM `Judgment` (readers stay in SQL and
stream), and `counted_sql(...)` the same condition as SQL text for the numpy readers of app/quality/service.py,
which send raw statements through the driver.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, select
from sqlalchemy.sql import Select

from app.models import FlagReview, Judgment, StepJudgment

HUMAN = "human"
AI = "ai"
BATTLE = "battle"
IMPORTED = "imported"
SOURCES = (HUMAN, AI, BATTLE, IMPORTED)
"""Every judgment source."""

LEADERBOARD = (HUMAN, BATTLE)
"""The model leaderboard ranks models by people's votes: rated comparisons and live battles."""
EXPORT_DEFAULT = (HUMAN, IMPORTED)
"""What a dataset snapshot exports when its filters name no sources (AI verdicts only on request)."""

EXCLUDED_RESOLUTION = "excluded"
"""The review resolution that takes a judgment out of every figure and export."""


def _check(sources: tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown or not sources:
        raise ValueError(f"Unknown judgment sources {unknown}; use some of {list(SOURCES)}.")
    return sources


def excluded() -> ColumnElement[bool]:
    """An admin excluded the judgment in review."""
    return exists().where(FlagReview.judgment_id == Judgment.id, FlagReview.resolution == EXCLUDED_RESOLUTION)


def counted(*sources: str, project_id: int | None = None) -> ColumnElement[bool]:
    """The where-clause of a counted selection: these sources, neither excluded nor voided (and, given, of this
    project). `counted(HUMAN)` is what the rater statistics read."""
    clause = and_(Judgment.source.in_(_check(sources)), ~excluded(), Judgment.voided_at.is_(None))
    return clause if project_id is None else and_(Judgment.project_id == project_id, clause)


def counted_ids(*sources: str, project_id: int | None = None) -> Select:
    """SELECT of the counted judgments' ids (for an IN or a join)."""
    return select(Judgment.id).where(counted(*sources, project_id=project_id))


def counted_steps(*sources: str, project_id: int | None = None) -> ColumnElement[bool]:
    """The where-clause of counted step judgments: these sources, not voided (and, given, of this project)."""
    clause = and_(StepJudgment.source.in_(_check(sources)), StepJudgment.voided_at.is_(None))
    return clause if project_id is None else and_(StepJudgment.project_id == project_id, clause)


def paid(project_id: int) -> ColumnElement[bool]:
    """Pay's judgments: a rater's human judgments, excluded ones too (an exclusion is about the data, the work was
    done); voided ones are not (nothing usable was delivered). Practice answers are added by pay itself."""
    return and_(Judgment.project_id == project_id, Judgment.source == HUMAN, Judgment.rater_id.is_not(None),
                Judgment.voided_at.is_(None))  # fmt: skip


def counted_sql(*sources: str, alias: str = "j") -> str:
    """`counted` as SQL text on the judgment table aliased `alias`, with the project bound as `:project`.
    Sources are checked against SOURCES before they are written into the statement."""
    quoted = ", ".join(f"'{source}'" for source in _check(sources))
    return (f"{alias}.project_id = :project AND {alias}.source IN ({quoted}) AND {alias}.voided_at IS NULL "
            f"AND NOT EXISTS (SELECT 1 FROM flag_review f WHERE f.judgment_id = {alias}.id "
            f"AND f.resolution = '{EXCLUDED_RESOLUTION}')")  # fmt: skip

