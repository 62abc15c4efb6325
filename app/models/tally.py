"""Battle tallies (the model leaderboard's sufficient statistics, maintained as judgments are written or excluded)
and the worker's cached project figures: what keeps the figures fast at ten million judgments."""

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base


class BattleTally(Base):
    """How many counted battles one rater gave, in one project and source, between an ordered pair of models with
    one outcome (2: model a won, 1: tie, 0: model b won). Written in the same transaction as the judgment
    (app.judgments.tallies); a judgment excluded in review is taken out again. Deleting the rater deletes the
    rows (their judgments stop counting then: the leaderboard counts judgments that have a rater)."""

    __tablename__ = "battle_tally"

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), primary_key=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), primary_key=True, index=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    model_a: Mapped[str] = mapped_column(String(200), primary_key=True)
    model_b: Mapped[str] = mapped_column(String(200), primary_key=True)
    outcome: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)


class ProjectFigures(Base):
    """A project's figures as last computed by a worker (app.quality.figures): the statistics endpoint's and the
    dashboard's answers for projects too large to compute per request, with the judgments' change marker they
    were computed at."""

    __tablename__ = "project_figures"

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    """stats | dashboard"""
    figures: Mapped[dict] = mapped_column()
    marker: Mapped[str] = mapped_column(String(200))
    """What the judgments looked like when computed (app.quality.figures.change_marker)."""
    computed_at: Mapped[datetime]
